"""The promotion state machine. A version is published PENDING; then either

- :func:`promote` makes it PROMOTED and moves ``LATEST`` to it, as a compare-and-swap: only if
  ``LATEST`` still names what the trainer's gate compared against (:func:`set_latest`, a
  rollback or a promotion by hand, moves it whatever it names), or
- :func:`reject` makes it REJECTED: it stays published and ``LATEST`` does not move.

Every decision is taken under the store lock, and recorded before ``LATEST`` moves, so that
``LATEST`` never names a version not recorded as promoted, whatever moment a crash picks.
The candidate beside ``LATEST`` has its own decisions (:mod:`shared.store.rollout`); moving
``LATEST`` to the candidate's version here clears the candidate.
"""

from __future__ import annotations

import logging

from shared.store.durability import write_atomic
from shared.store.errors import ArtefactError
from shared.store.locks import StagingClaims, StoreLock
from shared.store.manifest import verify
from shared.store.names import LATEST_FILE
from shared.store.reader import StoreReader
from shared.store.records import PROMOTED, REJECTED, write_record
from shared.store.rollout import drop_stale

log = logging.getLogger(__name__)


def promote(
    reader: StoreReader,
    lock: StoreLock,
    claims: StagingClaims,
    version: str,
    expected: str | None,
    reason: str,
    force: bool = False,
) -> bool:
    """Move ``LATEST`` to ``version`` if it still names ``expected``; ``force`` moves it
    whatever it names, mending an unreadable one. Records the version as promoted and drops
    its writer's claim; returns False, changing nothing, when ``LATEST`` has moved (or cannot
    be read) since the caller compared against it."""
    with lock.hold():
        try:
            current = reader.latest()
        except ArtefactError:
            if not force:
                return False
            current = None
        if current != expected and not force:
            return False
        verify(reader.version_path(version))
        latest_path = reader.root / LATEST_FILE
        if force and latest_path.is_dir() and not latest_path.is_symlink():
            try:
                latest_path.rmdir()  # a folder where the pointer belongs: mend it
            except OSError as exc:
                raise ArtefactError(
                    f"{latest_path} is a folder that is not empty; remove it by hand"
                ) from exc
        write_record(reader.root, version, PROMOTED, reason, current)
        write_atomic(latest_path, version + "\n")
        drop_stale(reader)  # LATEST moved to the candidate: it is one no more
    claims.release(version)
    log.info("LATEST -> %s (was %s)", version, current)
    return True


def set_latest(
    reader: StoreReader, lock: StoreLock, claims: StagingClaims, version: str, reason: str
) -> None:
    """Point ``LATEST`` at ``version`` whatever it names now (verified first), recorded as
    promoted; a candidate of that version is cleared."""
    promote(reader, lock, claims, version, None, reason, force=True)


def reject(
    reader: StoreReader,
    lock: StoreLock,
    claims: StagingClaims,
    version: str,
    reason: str,
    previous: str | None,
) -> None:
    """Record that ``version`` stays published without ``LATEST`` moving to it, and why."""
    with lock.hold():
        reader.version_path(version)  # a version name, or ArtefactError
        write_record(reader.root, version, REJECTED, reason, previous)
        drop_stale(reader)
    claims.release(version)
