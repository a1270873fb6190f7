"""The candidate: one version served beside the one ``LATEST`` names, in shadow (it scores a
sampled share of the answered requests off the response path) or canary (it answers a share of
the requests), and the decisions on it: set, promote (``LATEST`` moves to it), abort.

``CANDIDATE`` is a JSON file beside ``LATEST`` holding a :class:`Candidate`'s fields. Like
``LATEST`` it changes only under the store lock, by an atomic replacement, and only after the
version's promotion record says what is happening: a crash leaves the record one step ahead of
the pointer, never a pointer at a version whose record does not say so. ``LATEST`` is written
before ``CANDIDATE`` is removed, so a crash in between leaves a candidate equal to ``LATEST``:
readers treat that as no candidate, and the next change of the store removes it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from shared.store.durability import fsync_dir, write_atomic
from shared.store.errors import ArtefactError
from shared.store.locks import StagingClaims, StoreLock
from shared.store.manifest import verify
from shared.store.names import CANDIDATE_FILE, LATEST_FILE, checked_version_name
from shared.store.records import ABORTED, CANARY, PROMOTED, SHADOW, write_record

log = logging.getLogger(__name__)

MODES = (SHADOW, CANARY)
DEFAULT_SAMPLE = 0.2  # share of answered requests also scored by the other loaded version
MEND_CANDIDATE = (
    "mend it with `tagger versions abort` (in containers, the trainer image's "
    "`python -m trainer.versions abort`)"
)
_CANDIDATE_MAX_BYTES = 64 * 1024


class _Store(Protocol):
    """What the decisions need of the read side (:class:`~shared.store.reader.StoreReader`)."""

    root: Path

    def latest(self) -> str | None: ...


@dataclass(frozen=True)
class Candidate:
    """What ``CANDIDATE`` says: which version, how it is served, since when and beside what.

    Construction checks every field (ArtefactError naming the one that is wrong)."""

    version: str
    mode: str  # SHADOW | CANARY
    sample: float  # 0..1: share of answered requests also scored by the other loaded version
    fraction: float  # canary: share of requests the candidate answers (0.0 in shadow)
    since: str  # ISO 8601 UTC, when this mode was set
    stable: str | None  # what LATEST named when it was set
    reason: str

    def __post_init__(self) -> None:
        checked_version_name(self.version)
        if self.mode not in MODES:
            raise ArtefactError(f"candidate mode {self.mode!r} is not one of {', '.join(MODES)}")
        for name in ("sample", "fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ArtefactError(f"candidate {name} {value!r} is not a number")
        if not 0.0 <= self.sample <= 1.0:
            raise ArtefactError(f"sample {self.sample} is not between 0 and 1")
        if self.mode == CANARY and not 0.0 < self.fraction < 1.0:
            raise ArtefactError(
                f"a canary needs a fraction between 0 and 1 (exclusive), not {self.fraction}"
            )
        if self.mode == SHADOW and self.fraction != 0.0:
            raise ArtefactError(
                f"a shadow candidate answers no request: fraction must be 0, not {self.fraction}"
            )
        if not isinstance(self.since, str) or not isinstance(self.reason, str):
            raise ArtefactError("candidate since and reason must be text")
        if self.stable is not None:
            checked_version_name(self.stable)

    def to_json(self) -> str:
        """The file's content."""
        return json.dumps(asdict(self), indent=2) + "\n"


def read_candidate(root: Path) -> Candidate | None:
    """What ``root/CANDIDATE`` says, or None when there is no such file. Every way it can be
    unreadable or invalid is one ArtefactError that says how to mend it."""
    path = root / CANDIDATE_FILE
    try:
        with path.open("rb") as handle:
            raw = handle.read(_CANDIDATE_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError as exc:
        raise ArtefactError(
            f"{path} is a folder, not the candidate's file; {MEND_CANDIDATE}"
        ) from exc
    except OSError as exc:
        raise ArtefactError(
            f"{path} cannot be read ({exc.strerror or exc}); {MEND_CANDIDATE}"
        ) from exc
    try:
        if len(raw) > _CANDIDATE_MAX_BYTES:
            raise ValueError(f"over {_CANDIDATE_MAX_BYTES} bytes")
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        fields = {name: data[name] for name in Candidate.__dataclass_fields__}
        return Candidate(**fields)
    except KeyError as exc:
        problem = f"no {exc.args[0]!r} field"
    except (ValueError, TypeError, ArtefactError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise ArtefactError(f"{path} is not a valid candidate ({problem}); {MEND_CANDIDATE}")


def set_candidate(
    store: _Store,
    lock: StoreLock,
    claims: StagingClaims,
    version: str,
    mode: str,
    sample: float = DEFAULT_SAMPLE,
    fraction: float = 0.0,
    reason: str = "",
    replace: bool = False,
) -> Candidate:
    """Make the verified ``version`` the candidate in ``mode`` beside ``LATEST``'s version.

    Refused when ``version`` is what ``LATEST`` names, when nothing is served yet, or when
    another version is the candidate and not ``replace`` (with it, that one is recorded
    ABORTED, superseded). The same version again changes its mode, sample and fraction
    (``since`` is kept while the mode stays). Recorded SHADOW or CANARY before the pointer
    moves; drops the version's writer's claim."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    with lock.hold():
        latest = store.latest()
        if latest is None:
            raise ArtefactError(
                f"nothing is served yet (no LATEST) for {version} to stand beside; serve it "
                f"with `tagger versions use {version}`"
            )
        if version == latest:
            raise ArtefactError(
                f"{version} is what LATEST names already; it cannot be the candidate"
            )
        try:
            current = read_candidate(store.root)
        except ArtefactError:
            if not replace:
                raise
            current = None
        if current is not None and current.version == latest:
            current = None  # stale: left by a promotion cut short
        if current is not None and current.version != version and not replace:
            raise ArtefactError(
                f"{current.version} is the {current.mode} candidate; abort it first "
                "(`tagger versions abort`) or pass --replace"
            )
        if current is not None and current.version == version and current.mode == mode:
            since = current.since
        else:
            since = now
        candidate = Candidate(
            version=version,
            mode=mode,
            sample=float(sample),
            fraction=float(fraction),
            since=since,
            stable=latest,
            reason=reason or f"{mode} candidate beside {latest}",
        )
        verify(store.root / version)
        if current is not None and current.version != version:
            write_record(store.root, current.version, ABORTED, f"superseded by {version}", latest)
        write_record(store.root, version, mode, candidate.reason, latest)
        write_atomic(store.root / CANDIDATE_FILE, candidate.to_json())
    claims.release(version)
    log.info("CANDIDATE -> %s (%s beside %s)", version, mode, latest)
    return candidate


def promote_candidate(
    store: _Store, lock: StoreLock, claims: StagingClaims, version: str, reason: str
) -> str | None:
    """Move ``LATEST`` to the candidate, which must be ``version``, and clear the candidate;
    returns what ``LATEST`` named before. Recorded PROMOTED first, then ``LATEST`` is written,
    then ``CANDIDATE`` removed."""
    checked_version_name(version)
    with lock.hold():
        candidate = read_candidate(store.root)
        if candidate is None:
            raise ArtefactError(
                f"there is no candidate to promote; `tagger versions use {version}` moves LATEST "
                "by hand"
            )
        if candidate.version != version:
            raise ArtefactError(
                f"the candidate is {candidate.version} ({candidate.mode}), not {version}"
            )
        previous = store.latest()
        verify(store.root / version)
        if previous != version:
            write_record(store.root, version, PROMOTED, reason, previous)
            write_atomic(store.root / LATEST_FILE, version + "\n")
        remove_candidate(store.root)
    claims.release(version)
    log.info("LATEST -> %s (was %s), the candidate promoted", version, previous)
    return previous


def abort_candidate(
    store: _Store, lock: StoreLock, reason: str, expected: str | None = None
) -> str:
    """Take the candidate off without moving ``LATEST``: recorded ABORTED, then ``CANDIDATE``
    removed; returns its version. With ``expected``, only if the candidate is that version (a
    compare-and-swap). An unreadable ``CANDIDATE`` is removed too (when no ``expected`` is
    given), returning "" since no version can be recorded."""
    with lock.hold():
        try:
            candidate = read_candidate(store.root)
        except ArtefactError:
            if expected is not None:
                raise
            remove_candidate(store.root)
            log.warning("removed an unreadable CANDIDATE: %s", reason)
            return ""
        if candidate is None:
            raise ArtefactError("there is no candidate to abort")
        if expected is not None and candidate.version != expected:
            raise ArtefactError(
                f"the candidate is {candidate.version} ({candidate.mode}), not {expected}; "
                "nothing aborted"
            )
        try:
            latest = store.latest()
        except ArtefactError:
            latest = candidate.stable
        if candidate.version != latest:  # else stale: LATEST moved to it, nothing to abort
            write_record(store.root, candidate.version, ABORTED, reason, latest)
        remove_candidate(store.root)
    log.info("CANDIDATE %s aborted: %s", candidate.version, reason)
    return candidate.version


def remove_candidate(root: Path) -> None:
    """Remove ``CANDIDATE`` durably (the caller holds the store lock)."""
    path = root / CANDIDATE_FILE
    if path.is_dir() and not path.is_symlink():
        try:
            path.rmdir()
        except OSError as exc:
            raise ArtefactError(f"{path} is a folder that is not empty; remove it by hand") from exc
    else:
        path.unlink(missing_ok=True)
    fsync_dir(root)


def drop_stale(store: _Store) -> None:
    """Remove a ``CANDIDATE`` naming what ``LATEST`` names (a promotion cut short, or ``LATEST``
    moved to the candidate by hand); the caller holds the store lock. Leaves an unreadable
    one alone: only :func:`abort_candidate` removes that."""
    try:
        candidate = read_candidate(store.root)
        latest = store.latest()
    except ArtefactError:
        return
    if candidate is not None and candidate.version == latest:
        remove_candidate(store.root)
        log.info("removed CANDIDATE %s: LATEST names it", candidate.version)
