"""What things in the store are called: version names, and the store's own files and folders.

Everything the store keeps beside its versions starts with a dot or is ``LATEST`` or
``CANDIDATE``, so a version name (``20261126T170102123Z-3fa9c1``) can never collide with one
of them.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from pathlib import Path

from shared.store.errors import ArtefactError

LATEST_FILE = "LATEST"
CANDIDATE_FILE = "CANDIDATE"
STAGING_PREFIX = ".staging-"
STORE_LOCK_FILE = ".store.lock"
PROMOTIONS_DIR = ".promotions"
LOCK_SUFFIX = ".lock"
VERSION_PATTERN = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{6}$")


def new_version_name(now: dt.datetime | None = None) -> str:
    """A version name that sorts by creation time: UTC timestamp (ms) plus a random suffix."""
    now = now or dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    return f"{stamp}-{secrets.token_hex(3)}"


def checked_version_name(name: str) -> str:
    """``name`` itself if it is a version name; else one ArtefactError saying what one is like.
    Every path built from a caller's name goes through here, so none can leave the store."""
    if not VERSION_PATTERN.match(name):
        raise ArtefactError(f"{name!r} is not a version name (like 20261126T170102123Z-3fa9c1)")
    return name


def staging_folder(root: Path, version: str) -> Path:
    """The folder a version is written into before it is renamed into place."""
    return root / f"{STAGING_PREFIX}{version}"


def staging_lock_path(root: Path, version: str) -> Path:
    """The file whose flock a version's writer holds while staging and deciding about it."""
    return root / f"{STAGING_PREFIX}{checked_version_name(version)}{LOCK_SUFFIX}"


def promotion_record_path(root: Path, version: str) -> Path:
    """Where the promotion decision about ``version`` is recorded."""
    return root / PROMOTIONS_DIR / f"{version}.json"
