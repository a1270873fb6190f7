"""The artefact store: immutable, versioned model folders under one directory.

Layout of ``root``::

    root/
      LATEST                      the name of the version to serve (replaced atomically)
      20261126T170102123Z-3fa9c1/ one published version (never modified after publishing)
        manifest.json             sha256 and size of every other file in the folder
        ...
      .staging-<version>/         a version being written; readers never look here

Publishing writes into a staging folder, flushes every file, renames the folder into place
(atomic on one filesystem) and only then replaces ``LATEST``. A crash at any point leaves the
old state or the new one. Leftover staging folders of dead writers are removed by the next
writer; a live writer holds an ``flock`` on its staging folder's lock file.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LATEST_FILE = "LATEST"
MANIFEST_FILE = "manifest.json"
STAGING_PREFIX = ".staging-"
_LOCK_FILE = ".lock"
VERSION_PATTERN = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{6}$")


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
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


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


class ArtefactStore:
    """Reads and writes versioned artefacts under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ---- reading -------------------------------------------------------------------------
    def version_path(self, name: str) -> Path:
        if not VERSION_PATTERN.match(name):
            raise ArtefactError(f"{name!r} is not a version name (like 20261126T170102123Z-3fa9c1)")
        return self.root / name

    def latest(self) -> str | None:
        """The version ``LATEST`` names, or None when nothing has been published."""
        try:
            name = (self.root / LATEST_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not VERSION_PATTERN.match(name):
            raise ArtefactError(
                f"{self.root / LATEST_FILE} holds {name[:80]!r}, not a version name"
            )
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

    # ---- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self, version: str | None = None) -> Iterator[tuple[str, Path]]:
        """Yield ``(version, folder)`` to write a new version into; publish it on clean exit.

        On an exception the staging folder is removed and nothing is published. The caller
        moves ``LATEST`` separately (:meth:`set_latest`), so a trainer can decide whether to.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.clean_staging()
        version = version or new_version_name()
        folder = self.root / f"{STAGING_PREFIX}{version}"
        folder.mkdir()
        lock = (folder / _LOCK_FILE).open("w")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield version, folder
            (folder / _LOCK_FILE).unlink()
            write_manifest(folder, version)
            _make_readable(folder)
            _fsync_tree(folder)
            os.rename(folder, self.root / version)
            _fsync_dir(self.root)
            log.info("published version %s in %s", version, self.root, extra={"version": version})
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            lock.close()

    def clean_staging(self) -> None:
        """Remove staging folders whose writer is gone (no lock held on them)."""
        for folder in self.root.glob(f"{STAGING_PREFIX}*"):
            lock_path = folder / _LOCK_FILE
            try:
                with lock_path.open("a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer is still working in it
            except OSError:
                pass  # no lock file: the writer died before creating it or after removing it
            log.info("removing leftover staging folder %s", folder)
            shutil.rmtree(folder, ignore_errors=True)

    def set_latest(self, version: str) -> None:
        """Point ``LATEST`` at ``version`` (verified first), atomically."""
        verify(self.version_path(version))
        write_atomic(self.root / LATEST_FILE, version + "\n")
        log.info("LATEST -> %s", version)

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` versions, never the one ``LATEST`` names."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        latest = self.latest()
        names = [v.name for v in self.versions()]
        doomed = [n for n in names[:-keep] if n != latest]
        for name in doomed:
            # Rename first so a half-deleted folder never looks like a version.
            trash = self.root / f"{STAGING_PREFIX}deleting-{name}"
            os.rename(self.root / name, trash)
            shutil.rmtree(trash)
            log.info("pruned version %s", name)
        return doomed


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
