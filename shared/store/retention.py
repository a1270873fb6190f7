"""Retention: deleting old versions until a given number remain, never the one ``LATEST``
names, the candidate beside it, nor one a live writer is still deciding about, and the
fallback candidates last."""

from __future__ import annotations

import logging
import os
import shutil

from shared.store.errors import ArtefactError
from shared.store.locks import StagingClaims, StoreLock
from shared.store.names import STAGING_PREFIX
from shared.store.reader import StoreReader
from shared.store.records import (
    ABORTED,
    CANARY,
    PENDING,
    PROMOTED,
    REJECTED,
    SHADOW,
    UNKNOWN,
    remove_record,
)
from shared.store.rollout import drop_stale, read_candidate

log = logging.getLogger(__name__)

# Which versions go last: the promoted ones are what a server falls back on.
_KEEP_FIRST = {
    PROMOTED: 0,
    UNKNOWN: 1,
    REJECTED: 2,
    ABORTED: 2,
    SHADOW: 2,  # recorded, but not the candidate (the pointer never moved)
    CANARY: 2,
    PENDING: 3,
}


def prune(reader: StoreReader, lock: StoreLock, claims: StagingClaims, keep: int) -> list[str]:
    """Delete versions until ``keep`` remain: the one ``LATEST`` names, the candidate and
    those a live trainer is still deciding about always stay; then the newest promoted
    versions (the fallback candidates), then the newest others. Refuses while ``LATEST`` or
    ``CANDIDATE`` is unreadable, since the version it meant could not be told apart. Returns
    the deleted, oldest first."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    root = reader.root
    with lock.hold():
        try:
            latest = reader.latest()
            candidate = read_candidate(root)
        except ArtefactError as exc:
            raise ArtefactError(f"not pruning: {exc}") from exc
        drop_stale(reader)
        spared = {latest, candidate.version if candidate is not None else None}
        names = [v.name for v in reversed(reader.versions())]  # newest first
        status = {n: reader.promotion(n).status for n in names}
        protected = [
            n for n in names if n in spared or (status[n] == PENDING and claims.in_flight(n))
        ]
        others = sorted(
            (n for n in names if n not in protected), key=lambda n: _KEEP_FIRST.get(status[n], 3)
        )
        kept = set(protected) | set(others[: max(0, keep - len(protected))])
        doomed = [n for n in reversed(names) if n not in kept]  # oldest first
        for name in doomed:
            # Rename first so a half-deleted folder never looks like a version.
            trash = root / f"{STAGING_PREFIX}deleting-{name}"
            os.rename(root / name, trash)
            shutil.rmtree(trash, ignore_errors=True)
            remove_record(root, name)
            log.info("pruned version %s (%s)", name, status[name])
    return doomed
