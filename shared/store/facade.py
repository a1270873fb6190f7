""":class:`ArtefactStore`, the one class callers use: the read side, plus every change of the
store, each handed to the module that owns the job."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.store import promotions, retention, rollout, writer
from shared.store.locks import StagingClaims, StoreLock
from shared.store.reader import StoreReader
from shared.store.rollout import DEFAULT_SAMPLE, Candidate


class ArtefactStore(StoreReader):
    """Reads and writes versioned artefacts under ``root``.

    Writers serialise on :meth:`lock`; readers (the API) never lock and can run on a
    read-only mount. ``lock_timeout_s`` bounds how long a writer waits for another one.
    """

    def __init__(self, root: str | Path, lock_timeout_s: float = 120.0) -> None:
        super().__init__(root)
        self._lock = StoreLock(self.root, lock_timeout_s)
        self._claims = StagingClaims(self.root)

    # ---- locking (shared.store.locks) ------------------------------------------------------
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the store-wide exclusive lock (re-entrant within one thread); waits at most
        ``lock_timeout_s`` for another writer, then raises ArtefactError."""
        return self._lock.hold()

    def in_flight(self, version: str) -> bool:
        """Whether a live writer still holds ``version``'s staging lock (it is deciding)."""
        return self._claims.in_flight(version)

    def release_claim(self, version: str) -> None:
        """Drop the staging lock kept by ``staging(keep_claim=True)`` (idempotent)."""
        self._claims.release(version)

    # ---- writing (shared.store.writer) -----------------------------------------------------
    def check_writable(self) -> str | None:
        """Fail fast if a new version could not be published here; what ``LATEST`` names."""
        return writer.check_writable(self, self._lock)

    def staging(
        self,
        version: str | None = None,
        keep_claim: bool = False,
        manifest_extra: Mapping[str, Any] | None = None,
    ) -> contextlib.AbstractContextManager[tuple[str, Path]]:
        """Yield ``(version, folder)`` to write a new version into; publish it, PENDING, with
        ``manifest_extra`` in its manifest, on clean exit (see :func:`writer.staging`)."""
        return writer.staging(
            self.root, self._lock, self._claims, version, keep_claim, manifest_extra
        )

    def clean_staging(self) -> list[str]:
        """Remove staging folders (and staging locks) whose writer is gone."""
        return writer.clean_staging(self.root, self._lock)

    # ---- promotion decisions (shared.store.promotions) -------------------------------------
    def promote(self, version: str, expected: str | None, reason: str, force: bool = False) -> bool:
        """Move ``LATEST`` to ``version`` if it still names ``expected`` (compare-and-swap);
        False, changing nothing, if it moved (see :func:`promotions.promote`)."""
        return promotions.promote(self, self._lock, self._claims, version, expected, reason, force)

    def set_latest(self, version: str, reason: str = "set by hand") -> None:
        """Point ``LATEST`` at ``version`` whatever it names now (verified first): a rollback
        or a promotion on purpose, recorded as promoted (a candidate of that version is
        cleared)."""
        promotions.set_latest(self, self._lock, self._claims, version, reason)

    def reject(self, version: str, reason: str, previous: str | None) -> None:
        """Record that ``version`` stays published without ``LATEST`` moving to it, and why."""
        promotions.reject(self, self._lock, self._claims, version, reason, previous)

    # ---- the candidate beside LATEST (shared.store.rollout) ---------------------------------
    def set_candidate(
        self,
        version: str,
        mode: str,
        sample: float = DEFAULT_SAMPLE,
        fraction: float = 0.0,
        reason: str = "",
        replace: bool = False,
    ) -> Candidate:
        """Serve the verified ``version`` beside ``LATEST``'s in ``mode`` (shadow or canary);
        refused when another version is the candidate unless ``replace`` (see
        :func:`rollout.set_candidate`)."""
        return rollout.set_candidate(
            self, self._lock, self._claims, version, mode, sample, fraction, reason, replace
        )

    def promote_candidate(self, version: str, reason: str) -> str | None:
        """Move ``LATEST`` to the candidate, which must be ``version``, and clear it; returns
        what ``LATEST`` named before (see :func:`rollout.promote_candidate`)."""
        return rollout.promote_candidate(self, self._lock, self._claims, version, reason)

    def abort_candidate(self, reason: str, expected: str | None = None) -> str:
        """Clear the candidate without moving ``LATEST`` (only if it is ``expected``, when
        given); returns its version (see :func:`rollout.abort_candidate`)."""
        return rollout.abort_candidate(self, self._lock, reason, expected)

    # ---- retention (shared.store.retention) ------------------------------------------------
    def prune(self, keep: int) -> list[str]:
        """Delete versions until ``keep`` remain, sparing ``LATEST``'s, the candidate and those
        being decided (see :func:`retention.prune`)."""
        return retention.prune(self, self._lock, self._claims, keep)
