"""The artefact store: immutable, versioned model folders under one directory.

Layout of ``root``::

    root/
      LATEST                      the name of the version to serve (replaced atomically)
      20261126T170102123Z-3fa9c1/ one published version (never modified after publishing)
        manifest.json             sha256 and size of every other file in the folder
        ...
      .promotions/<version>.json  the promotion decision about each version (not hashed:
                                  it can change, the version cannot)
      .store.lock                 flock'ed by every change of the store
      .staging-<version>/         a version being written; readers never look here
      .staging-<version>.lock     flock'ed by its writer from staging until its promotion
                                  decision is recorded

Publishing writes into a staging folder, flushes every file, renames the folder into place
(atomic on one filesystem) and only then may ``LATEST`` move. A crash at any point leaves the
old state or the new one. Every change of the store (the rename, ``LATEST``, a promotion
record, pruning) happens under one exclusive ``flock`` on ``.store.lock``; reading takes no
lock and relies on the renames being atomic. Moving ``LATEST`` for a trainer is a
compare-and-swap (:meth:`ArtefactStore.promote`): it happens only if ``LATEST`` still names
what the trainer's gate compared against. Leftover staging folders of dead writers are
removed by the next writer; a live writer holds the ``flock`` on its staging lock file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LATEST_FILE = "LATEST"
MANIFEST_FILE = "manifest.json"
STAGING_PREFIX = ".staging-"
STORE_LOCK_FILE = ".store.lock"
PROMOTIONS_DIR = ".promotions"
_LOCK_SUFFIX = ".lock"
_LATEST_MAX_BYTES = 256  # a version name is 26 characters; anything longer is not one
VERSION_PATTERN = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{6}$")
# Names what exists wherever it is read: the `tagger` command in a checkout, the trainer image's
# module in containers (neither image has the `tagger` command; the API image has no trainer).
MEND_LATEST = (
    "mend it with `tagger versions use VERSION` (`tagger versions list` shows them; in "
    "containers, the trainer image's `python -m trainer.versions use VERSION`)"
)

# What the store knows about a version's promotion (see ArtefactStore.status).
PROMOTED = "promoted"  # LATEST was moved to it (by the gate, --force or `versions use`)
REJECTED = "rejected"  # published, LATEST deliberately not moved to it; the reason says why
PENDING = "pending"  # published, no decision recorded (its trainer is gating it, or died)
UNKNOWN = "unknown"  # published by a version of this code that recorded nothing


class ArtefactError(RuntimeError):
    """An artefact is missing, malformed or fails verification."""


def new_version_name(now: dt.datetime | None = None) -> str:
    """A version name that sorts by creation time: UTC timestamp (ms) plus a random suffix."""
    now = now or dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    return f"{stamp}-{secrets.token_hex(3)}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_readable(folder: Path) -> None:
    """Published files are read by other users (the API container): 0644 files, 0755 dirs."""
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    folder.chmod(0o755)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(folder)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new content only."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _try_flock(path: Path, create: bool) -> int | None:
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


@dataclass(frozen=True)
class VersionInfo:
    """One published version as listed by :meth:`ArtefactStore.versions`."""

    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def created(self) -> str:
        return str(self.manifest.get("created", ""))

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics", {}))


@dataclass(frozen=True)
class Promotion:
    """The recorded promotion decision about one version."""

    status: str  # PROMOTED, REJECTED, PENDING or UNKNOWN
    reason: str
    previous: str | None = None  # what LATEST named when the decision was taken
    at: str = ""

    @property
    def promoted(self) -> bool:
        return self.status == PROMOTED


class ArtefactStore:
    """Reads and writes versioned artefacts under ``root``.

    Writers serialise on :meth:`lock`; readers (the API) never lock and can run on a
    read-only mount. ``lock_timeout_s`` bounds how long a writer waits for another one.
    """

    def __init__(self, root: str | Path, lock_timeout_s: float = 120.0) -> None:
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s
        self._held = threading.local()  # re-entrancy of lock() within one thread
        self._claims: dict[str, int] = {}  # version -> fd of its staging lock, still held

    # ---- reading -------------------------------------------------------------------------
    def version_path(self, name: str) -> Path:
        if not VERSION_PATTERN.match(name):
            raise ArtefactError(f"{name!r} is not a version name (like 20261126T170102123Z-3fa9c1)")
        return self.root / name

    def latest(self) -> str | None:
        """The version ``LATEST`` names, or None when nothing has been promoted yet.

        Every way ``LATEST`` can be unreadable (garbage, not UTF-8, a folder, no permission,
        an I/O error) is one :class:`ArtefactError` that says how to mend it. Whether the
        named version exists is not checked here: loading it does that.
        """
        path = self.root / LATEST_FILE
        try:
            with path.open("rb") as handle:
                raw = handle.read(_LATEST_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        except IsADirectoryError as exc:
            raise ArtefactError(
                f"{path} is a folder, not a file naming a version; {MEND_LATEST}"
            ) from exc
        except OSError as exc:
            raise ArtefactError(
                f"{path} cannot be read ({exc.strerror or exc}); {MEND_LATEST}"
            ) from exc
        try:
            name = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ArtefactError(
                f"{path} is not UTF-8 text ({raw[:16]!r}...), not a version name; {MEND_LATEST}"
            ) from exc
        if len(raw) > _LATEST_MAX_BYTES or not VERSION_PATTERN.match(name):
            raise ArtefactError(f"{path} holds {name[:80]!r}, not a version name; {MEND_LATEST}")
        return name

    def versions(self) -> list[VersionInfo]:
        """Published versions, oldest first; staging folders and strays are ignored."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.iterdir()):
            if not (path.is_dir() and VERSION_PATTERN.match(path.name)):
                continue
            try:
                manifest = read_manifest(path)
            except ArtefactError as exc:
                log.warning("ignoring %s: %s", path, exc)
                continue
            found.append(VersionInfo(path.name, path, manifest))
        return found

    def promotion(self, version: str) -> Promotion:
        """What is recorded about ``version``'s promotion.

        The store's record (``.promotions/<version>.json``) decides; a version published
        before the store kept records falls back on the gate's verdict its trainer wrote into
        ``metrics.json``; with neither, the status is UNKNOWN.
        """
        record_path = self.root / PROMOTIONS_DIR / f"{self.version_path(version).name}.json"
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            return Promotion(
                status=str(record["status"]),
                reason=str(record.get("reason", "")),
                previous=record.get("previous"),
                at=str(record.get("at", "")),
            )
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable promotion record %s: %s", record_path, exc)
        try:
            gate = json.loads((self.root / version / "metrics.json").read_text())["promotion"]
            status = PROMOTED if gate["promoted"] is True else REJECTED
            return Promotion(status, f"gate at publish time: {gate.get('reason', '')}")
        except (OSError, ValueError, KeyError, TypeError):
            return Promotion(UNKNOWN, "no promotion recorded")

    def fallback_candidates(self, before: str | None) -> list[str]:
        """Versions a server may serve when the one ``LATEST`` names cannot be loaded, best
        first: those older than ``before`` that were promoted, newest first, then those with
        no record at all (published before records were kept). A version the gate rejected,
        or whose decision was never recorded, is never a candidate."""
        older = [v.name for v in reversed(self.versions()) if before is None or v.name < before]
        status = {name: self.promotion(name).status for name in older}
        return [n for n in older if status[n] == PROMOTED] + [
            n for n in older if status[n] == UNKNOWN
        ]

    def in_flight(self, version: str) -> bool:
        """Whether a live writer still holds ``version``'s staging lock (it is deciding)."""
        if version in self._claims:
            return True
        fd = _try_flock(self._staging_lock_path(version), create=False)
        if fd is None:
            return (self._staging_lock_path(version)).exists()
        os.close(fd)
        return False

    # ---- locking -------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store-wide exclusive lock (re-entrant within one thread).

        Waits at most ``lock_timeout_s`` for another writer, then raises ArtefactError.
        """
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / STORE_LOCK_FILE
        deadline = time.monotonic() + self.lock_timeout_s
        while (fd := _try_flock(path, create=True)) is None:
            if time.monotonic() >= deadline:
                raise ArtefactError(
                    f"{path}: another writer has held the store lock for over "
                    f"{self.lock_timeout_s:.0f} s; try again"
                )
            time.sleep(0.02)
        self._held.depth = 1
        try:
            yield
        finally:
            self._held.depth = 0
            os.close(fd)

    # ---- writing -------------------------------------------------------------------------
    def check_writable(self) -> str | None:
        """Fail fast, before a long job, if a new version could not be published here:
        the folder cannot be created or written, the lock cannot be taken, or ``LATEST``
        cannot be read (one ArtefactError saying so). Removes dead writers' staging folders.
        Returns what ``LATEST`` names."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{secrets.token_hex(4)}"
            probe.write_bytes(b"")
            probe.unlink(missing_ok=True)
            with self.lock():
                pass
        except OSError as exc:
            raise ArtefactError(
                f"cannot write to the artefacts directory {self.root} "
                f"({exc.strerror or exc}); nothing was trained"
            ) from exc
        self.clean_staging()
        return self.latest()

    @contextlib.contextmanager
    def staging(
        self, version: str | None = None, keep_claim: bool = False
    ) -> Iterator[tuple[str, Path]]:
        """Yield ``(version, folder)`` to write a new version into; publish it on clean exit.

        On an exception the staging folder is removed and nothing is published. The version
        is published unpromoted (status PENDING); the caller decides about ``LATEST`` with
        :meth:`promote` or :meth:`reject`. With ``keep_claim`` the staging lock stays held
        after publishing until that decision (or :meth:`release_claim`), so that no pruning
        deletes the version while its writer is still gating it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.clean_staging()
        version = version or new_version_name()
        folder = self.root / f"{STAGING_PREFIX}{version}"
        lock_path = self._staging_lock_path(version)
        fd = _try_flock(lock_path, create=True)
        if fd is None:
            raise ArtefactError(f"{folder}: another writer is staging this version")
        published = False
        try:
            folder.mkdir()
            log.info("publishing version %s: staging in %s", version, folder)
            yield version, folder
            write_manifest(folder, version)
            _make_readable(folder)
            _fsync_tree(folder)
            with self.lock():
                # The record first: a version never exists without one.
                self._record(version, PENDING, "published; no promotion decision yet", None)
                os.rename(folder, self.root / version)
                _fsync_dir(self.root)
            published = True
            log.info("published version %s in %s", version, self.root, extra={"version": version})
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            if published and keep_claim:
                self._claims[version] = fd
            else:
                lock_path.unlink(missing_ok=True)  # still ours: unlinked before unlocking
                os.close(fd)

    def release_claim(self, version: str) -> None:
        """Drop the staging lock kept by ``staging(keep_claim=True)`` (idempotent)."""
        fd = self._claims.pop(version, None)
        if fd is not None:
            self._staging_lock_path(version).unlink(missing_ok=True)
            os.close(fd)

    def clean_staging(self) -> list[str]:
        """Remove staging folders (and staging locks) whose writer is gone."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        entries = sorted(self.root.glob(f"{STAGING_PREFIX}*"))
        for path in entries:
            if path.name.endswith(_LOCK_SUFFIX) or not path.is_dir():
                continue
            lock_path = path.with_name(path.name + _LOCK_SUFFIX)
            fd = _try_flock(lock_path, create=True)
            if fd is None:
                continue  # a live writer is still working in it
            try:
                log.info("removing leftover staging folder %s", path)
                shutil.rmtree(path, ignore_errors=True)
                lock_path.unlink(missing_ok=True)
                removed.append(path.name)
            finally:
                os.close(fd)
        for lock_path in entries:
            if not lock_path.name.endswith(_LOCK_SUFFIX):
                continue
            if lock_path.with_name(lock_path.name[: -len(_LOCK_SUFFIX)]).exists():
                continue
            fd = _try_flock(lock_path, create=False)
            if fd is None:
                continue  # held: a writer between its rename and its promotion decision
            try:
                lock_path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        with self.lock():
            # Temporary files of write_atomic (always called under this lock) and write
            # probes: under the lock, any left is a dead writer's.
            for pattern in (
                f".{LATEST_FILE}.tmp-*",
                f"{PROMOTIONS_DIR}/.*.tmp-*",
                ".write-probe-*",
            ):
                for stray in self.root.glob(pattern):
                    stray.unlink(missing_ok=True)
        return removed

    def promote(self, version: str, expected: str | None, reason: str, force: bool = False) -> bool:
        """Move ``LATEST`` to ``version`` if it still names ``expected`` (compare-and-swap,
        under the store lock); ``force`` moves it whatever it names, mending an unreadable
        one. Records the version as promoted; returns False, changing nothing, when
        ``LATEST`` has moved (or cannot be read) since the caller compared against it."""
        with self.lock():
            try:
                current = self.latest()
            except ArtefactError:
                if not force:
                    return False
                current = None
            if current != expected and not force:
                return False
            verify(self.version_path(version))
            latest_path = self.root / LATEST_FILE
            if force and latest_path.is_dir() and not latest_path.is_symlink():
                try:
                    latest_path.rmdir()  # a folder where the pointer belongs: mend it
                except OSError as exc:
                    raise ArtefactError(
                        f"{latest_path} is a folder that is not empty; remove it by hand"
                    ) from exc
            # The record before the pointer: LATEST never names a version not recorded as
            # promoted, whatever moment a crash picks.
            self._record(version, PROMOTED, reason, current)
            write_atomic(latest_path, version + "\n")
        self.release_claim(version)
        log.info("LATEST -> %s (was %s)", version, current)
        return True

    def set_latest(self, version: str, reason: str = "set by hand") -> None:
        """Point ``LATEST`` at ``version`` whatever it names now (verified first): a rollback
        or a promotion on purpose, recorded as promoted."""
        self.promote(version, None, reason, force=True)

    def reject(self, version: str, reason: str, previous: str | None) -> None:
        """Record that ``version`` stays published without ``LATEST`` moving to it, and why."""
        with self.lock():
            self.version_path(version)
            self._record(version, REJECTED, reason, previous)
        self.release_claim(version)

    def prune(self, keep: int) -> list[str]:
        """Delete versions until ``keep`` remain: the one ``LATEST`` names and those a live
        trainer is still deciding about always stay; then the newest promoted versions (the
        fallback candidates), then the newest others. Refuses while ``LATEST`` is unreadable,
        since the version it meant could not be told apart."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        with self.lock():
            try:
                latest = self.latest()
            except ArtefactError as exc:
                raise ArtefactError(f"not pruning: {exc}") from exc
            names = [v.name for v in reversed(self.versions())]  # newest first
            status = {n: self.promotion(n).status for n in names}
            protected = [
                n for n in names if n == latest or (status[n] == PENDING and self.in_flight(n))
            ]
            rank = {PROMOTED: 0, UNKNOWN: 1, REJECTED: 2, PENDING: 3}
            others = sorted((n for n in names if n not in protected), key=lambda n: rank[status[n]])
            kept = set(protected) | set(others[: max(0, keep - len(protected))])
            doomed = [n for n in reversed(names) if n not in kept]  # oldest first
            for name in doomed:
                # Rename first so a half-deleted folder never looks like a version.
                trash = self.root / f"{STAGING_PREFIX}deleting-{name}"
                os.rename(self.root / name, trash)
                shutil.rmtree(trash, ignore_errors=True)
                (self.root / PROMOTIONS_DIR / f"{name}.json").unlink(missing_ok=True)
                log.info("pruned version %s (%s)", name, status[name])
        return doomed

    # ---- internals -----------------------------------------------------------------------
    def _staging_lock_path(self, version: str) -> Path:
        return self.root / f"{STAGING_PREFIX}{self.version_path(version).name}{_LOCK_SUFFIX}"

    def _record(self, version: str, status: str, reason: str, previous: str | None) -> None:
        folder = self.root / PROMOTIONS_DIR
        folder.mkdir(mode=0o755, exist_ok=True)
        record = {
            "version": version,
            "status": status,
            "reason": reason,
            "previous": previous,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        }
        write_atomic(folder / f"{version}.json", json.dumps(record, indent=2) + "\n")


def write_manifest(folder: Path, version: str, **extra: Any) -> dict[str, Any]:
    """Write ``manifest.json`` listing sha256 and size of every file in ``folder``.

    Fields already in ``folder/manifest.json`` (written by the caller) are kept.
    """
    path = folder / MANIFEST_FILE
    manifest: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    manifest.update(extra)
    manifest["version"] = version
    manifest.setdefault("created", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    manifest["files"] = {
        str(p.relative_to(folder)): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except FileNotFoundError as exc:
        raise ArtefactError(f"{folder}: no {MANIFEST_FILE}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{folder / MANIFEST_FILE}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtefactError(f"{folder / MANIFEST_FILE}: has no 'files' table")
    return manifest


def verify(folder: Path) -> dict[str, Any]:
    """Check every file listed in the manifest (size and sha256); return the manifest."""
    if not folder.is_dir():
        raise ArtefactError(f"{folder}: no such version folder")
    manifest = read_manifest(folder)
    for rel, expected in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise ArtefactError(f"{folder.name}: {rel} is missing")
        if path.stat().st_size != expected.get("size"):
            raise ArtefactError(f"{folder.name}: {rel} has the wrong size")
        if sha256_file(path) != expected.get("sha256"):
            raise ArtefactError(f"{folder.name}: {rel} fails its sha256 check")
    return manifest
