""":class:`ArtefactStore`, the one class callers use: the read side, plus every change of the
store, each handed to the module that owns the job."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.store import promotions, retention, writer
from shared.store.locks import StagingClaims, StoreLock
from shared.store.reader import StoreReader


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
        or a promotion on purpose, recorded as promoted."""
        promotions.set_latest(self, self._lock, self._claims, version, reason)

    def reject(self, version: str, reason: str, previous: str | None) -> None:
        """Record that ``version`` stays published without ``LATEST`` moving to it, and why."""
        promotions.reject(self, self._lock, self._claims, version, reason, previous)

    # ---- retention (shared.store.retention) ------------------------------------------------
    def prune(self, keep: int) -> list[str]:
        """Delete versions until ``keep`` remain, sparing ``LATEST``'s and those being decided
        (see :func:`retention.prune`)."""
        return retention.prune(self, self._lock, self._claims, keep)
