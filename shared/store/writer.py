"""Publishing a new version: a staging folder to write it into, then its manifest, a flush and
an atomic rename into place; and removing what dead writers left behind.

A crash at any point leaves the old state or the new one: readers never look into staging
folders, and the rename is atomic on one filesystem. The version comes out PENDING; whether
``LATEST`` moves to it is decided afterwards (:mod:`shared.store.promotions`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from shared.store.durability import fsync_dir, fsync_tree, make_readable
from shared.store.errors import ArtefactError
from shared.store.locks import StagingClaims, StoreLock, try_flock
from shared.store.manifest import write_manifest
from shared.store.names import (
    CANDIDATE_FILE,
    LATEST_FILE,
    LOCK_SUFFIX,
    PROMOTIONS_DIR,
    STAGING_PREFIX,
    new_version_name,
    staging_folder,
)
from shared.store.reader import StoreReader
from shared.store.records import PENDING, write_record
from shared.store.rollout import drop_stale

log = logging.getLogger(__name__)


def check_writable(reader: StoreReader, lock: StoreLock) -> str | None:
    """Fail fast, before a long job, if a new version could not be published here: the folder
    cannot be created or written, the lock cannot be taken, or ``LATEST`` cannot be read (one
    ArtefactError saying so). Removes dead writers' staging folders. Returns what ``LATEST``
    names."""
    root = reader.root
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)
        with lock.hold():
            pass
    except OSError as exc:
        raise ArtefactError(
            f"cannot write to the artefacts directory {root} "
            f"({exc.strerror or exc}); nothing was trained"
        ) from exc
    clean_staging(root, lock)
    return reader.latest()


@contextlib.contextmanager
def staging(
    root: Path,
    lock: StoreLock,
    claims: StagingClaims,
    version: str | None = None,
    keep_claim: bool = False,
    manifest_extra: Mapping[str, Any] | None = None,
) -> Iterator[tuple[str, Path]]:
    """Yield ``(version, folder)`` to write a new version into; publish it on clean exit, its
    manifest carrying ``manifest_extra``'s fields (read when the block ends).

    On an exception the staging folder is removed and nothing is published. With
    ``keep_claim`` the staging lock stays held after publishing until the promotion decision
    (or :meth:`StagingClaims.release`), so that no pruning deletes the version meanwhile.
    """
    root.mkdir(parents=True, exist_ok=True)
    clean_staging(root, lock)
    version = version or new_version_name()
    folder = staging_folder(root, version)
    fd = claims.take(version)
    if fd is None:
        raise ArtefactError(f"{folder}: another writer is staging this version")
    published = False
    try:
        folder.mkdir()
        log.info("publishing version %s: staging in %s", version, folder)
        yield version, folder
        write_manifest(folder, version, manifest_extra)
        make_readable(folder)
        fsync_tree(folder)
        with lock.hold():
            # The record first: a version never exists without one.
            write_record(root, version, PENDING, "published; no promotion decision yet", None)
            os.rename(folder, root / version)
            fsync_dir(root)
        published = True
        log.info("published version %s in %s", version, root, extra={"version": version})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        if published and keep_claim:
            claims.keep(version, fd)
        else:
            claims.drop(version, fd)


def clean_staging(root: Path, lock: StoreLock) -> list[str]:
    """Remove staging folders (and staging locks) whose writer is gone, temporary files of
    dead writers, and a stale ``CANDIDATE`` (naming what ``LATEST`` names); return the staging
    folders' names."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    entries = sorted(root.glob(f"{STAGING_PREFIX}*"))
    for path in entries:
        if path.name.endswith(LOCK_SUFFIX) or not path.is_dir():
            continue
        lock_path = path.with_name(path.name + LOCK_SUFFIX)
        fd = try_flock(lock_path, create=True)
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
        if not lock_path.name.endswith(LOCK_SUFFIX):
            continue
        if lock_path.with_name(lock_path.name[: -len(LOCK_SUFFIX)]).exists():
            continue
        fd = try_flock(lock_path, create=False)
        if fd is None:
            continue  # held: a writer between its rename and its promotion decision
        try:
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    with lock.hold():
        # Temporary files of write_atomic (always called under this lock) and write probes:
        # under the lock, any left is a dead writer's.
        for pattern in (
            f".{LATEST_FILE}.tmp-*",
            f".{CANDIDATE_FILE}.tmp-*",
            f"{PROMOTIONS_DIR}/.*.tmp-*",
            ".write-probe-*",
        ):
            for stray in root.glob(pattern):
                stray.unlink(missing_ok=True)
        drop_stale(StoreReader(root))
    return removed
