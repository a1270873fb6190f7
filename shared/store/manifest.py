"""A version's ``manifest.json``: what it holds (sha256 and size of every other file) plus the
publisher's own fields; and verification, which is strict.

A version verifies only when its folder holds regular files and folders, nothing else (no
symlink anywhere), and its manifest lists exactly those files, each by a plain relative path
(not absolute, no ``..``, no backslash, no empty part, nothing that resolves outside the
folder) with the right size and sha256.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from shared.store.durability import sha256_file
from shared.store.errors import ArtefactError

MANIFEST_FILE = "manifest.json"


def write_manifest(
    folder: Path, version: str, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``folder/manifest.json`` listing sha256 and size of every file in ``folder``, with
    the publisher's ``extra`` fields beside them (``created`` defaults to now); return it."""
    manifest: dict[str, Any] = dict(extra or {})
    manifest["version"] = version
    manifest.setdefault("created", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    manifest["files"] = {
        rel: {"sha256": sha256_file(folder / rel), "size": (folder / rel).stat().st_size}
        for rel in sorted(_files_in(folder))
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the version in ``folder``, unchecked; ArtefactError if it is missing,
    not JSON, or has no ``files`` table."""
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
    """Check the version in ``folder`` against its manifest (the rules above); return the
    manifest, or raise one ArtefactError naming the first file that breaks a rule."""
    if not folder.is_dir():
        raise ArtefactError(f"{folder}: no such version folder")
    manifest = read_manifest(folder)
    listed: dict[str, Any] = manifest["files"]
    for rel in listed:
        _check_listed_path(folder, rel)
    present = _files_in(folder)
    unlisted = sorted(present - listed.keys())
    if unlisted:
        raise ArtefactError(
            f"{folder.name}: {', '.join(unlisted)} not listed in its {MANIFEST_FILE}"
        )
    absent = sorted(listed.keys() - present)
    if absent:
        what = "is not a regular file" if os.path.lexists(folder / absent[0]) else "is missing"
        raise ArtefactError(f"{folder.name}: {absent[0]} {what}")
    for rel, expected in listed.items():
        path = _inside(folder, rel)
        if not isinstance(expected, dict):
            raise ArtefactError(f"{folder.name}: {rel} has no size and sha256 in its manifest")
        if path.stat().st_size != expected.get("size"):
            raise ArtefactError(f"{folder.name}: {rel} has the wrong size")
        if sha256_file(path) != expected.get("sha256"):
            raise ArtefactError(f"{folder.name}: {rel} fails its sha256 check")
    return manifest


def _check_listed_path(folder: Path, rel: str) -> None:
    """A manifest names files by plain relative paths inside the folder, nothing else."""
    path = PurePosixPath(rel)
    if path.is_absolute():
        raise ArtefactError(f"{folder.name}: its manifest lists an absolute path, {rel!r}")
    if ".." in path.parts:
        raise ArtefactError(f"{folder.name}: its manifest lists {rel!r}, a path with '..'")
    if "\\" in rel:
        raise ArtefactError(f"{folder.name}: its manifest lists {rel!r}, a path with a backslash")
    if "" in rel.split("/"):
        raise ArtefactError(f"{folder.name}: its manifest lists {rel!r}, a path with an empty part")
    if str(path) != rel or rel == MANIFEST_FILE or not rel.isprintable():
        raise ArtefactError(f"{folder.name}: its manifest lists {rel!r}, not a plain file path")


def _inside(folder: Path, rel: str) -> Path:
    """``folder / rel``, checked again just before it is read: it must resolve (links
    followed) inside the folder."""
    path = folder / rel
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ArtefactError(f"{folder.name}: {rel} resolves outside the version folder")
    return path


def _files_in(folder: Path) -> set[str]:
    """The relative paths of the files under ``folder``, its manifest left out; ArtefactError
    for a symlink or anything else that is neither a regular file nor a folder."""
    found: set[str] = set()

    def unreadable(exc: OSError) -> None:
        raise ArtefactError(f"{folder.name}: cannot list {exc.filename} ({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise ArtefactError(f"{folder.name}: {rel} is a symlink; versions hold files only")
            if stat.S_ISREG(mode):
                found.add(rel)
            elif not stat.S_ISDIR(mode):
                raise ArtefactError(f"{folder.name}: {rel} is not a regular file")
    found.discard(MANIFEST_FILE)
    return found
