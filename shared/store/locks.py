"""The store's flocks: the store-wide lock every change holds, and the staging locks (claims)
by which a live writer keeps its version from clean-up and pruning.

A lock is an exclusive ``flock`` on a file; it dies with its process, so a crashed writer never
leaves the store locked. Readers take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from shared.store.errors import ArtefactError
from shared.store.names import STORE_LOCK_FILE, staging_lock_path


def try_flock(path: Path, create: bool) -> int | None:
    """Open ``path`` and take its exclusive flock without waiting: the fd, or None when another
    open file holds it (or, without ``create``, the file is gone). Closing the fd unlocks.

    A lock file can be unlinked by whoever holds its lock (clean-up does); if that happened
    between our open and our flock, we locked an orphan, so we try again on the new file.
    """
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    for _ in range(100):
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except BlockingIOError:
            os.close(fd)
            return None
        except FileNotFoundError:
            if not create:
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # an orphan: the path now names another file, or none
    raise ArtefactError(f"{path}: could not lock it (it keeps being replaced)")


class StoreLock:
    """The store-wide exclusive lock on ``root/.store.lock``, re-entrant within one thread.

    :meth:`hold` waits at most ``timeout_s`` for another writer, then raises ArtefactError.
    """

    def __init__(self, root: Path, timeout_s: float) -> None:
        self.root = root
        self.timeout_s = timeout_s
        self._held = threading.local()  # how deep this thread is in hold()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block."""
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / STORE_LOCK_FILE
        deadline = time.monotonic() + self.timeout_s
        while (fd := try_flock(path, create=True)) is None:
            if time.monotonic() >= deadline:
                raise ArtefactError(
                    f"{path}: another writer has held the store lock for over "
                    f"{self.timeout_s:.0f} s; try again"
                )
            time.sleep(0.02)
        self._held.depth = 1
        try:
            yield
        finally:
            self._held.depth = 0
            os.close(fd)


class StagingClaims:
    """The staging locks this process holds: a writer takes its version's lock before staging
    and may keep it after publishing, until its promotion decision is recorded."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._kept: dict[str, int] = {}  # version -> fd of its staging lock, still held

    def take(self, version: str) -> int | None:
        """Lock ``version``'s staging lock: the fd, or None when another writer holds it."""
        return try_flock(staging_lock_path(self.root, version), create=True)

    def keep(self, version: str, fd: int) -> None:
        """Go on holding the lock ``take`` returned, past the end of staging."""
        self._kept[version] = fd

    def drop(self, version: str, fd: int) -> None:
        """Unlink the lock file, still ours, then unlock it (in that order: whoever locks the
        path next locks a new file)."""
        staging_lock_path(self.root, version).unlink(missing_ok=True)
        os.close(fd)

    def release(self, version: str) -> None:
        """Drop the lock kept for ``version``, if one is (idempotent)."""
        fd = self._kept.pop(version, None)
        if fd is not None:
            self.drop(version, fd)

    def in_flight(self, version: str) -> bool:
        """Whether a live writer, in this process or another, holds ``version``'s lock."""
        if version in self._kept:
            return True
        path = staging_lock_path(self.root, version)
        fd = try_flock(path, create=False)
        if fd is None:
            return path.exists()
        os.close(fd)
        return False
