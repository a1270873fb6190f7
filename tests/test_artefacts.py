"""The artefact store: atomic publish, crashes at every step, strict verification, the
pointer."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.store import (
    LATEST_FILE,
    MANIFEST_FILE,
    STAGING_PREFIX,
    ArtefactError,
    ArtefactStore,
    new_version_name,
    read_manifest,
    verify,
)
from shared.store.manifest import _inside
from tests.conftest import publish as publish_version


def publish(store: ArtefactStore, payload: str = "weights") -> str:
    """conftest's stand-in version, with a file in a sub-folder for the manifest to cover."""
    return publish_version(store, payload, files={"sub/x.json": "{}"})


def test_publish_writes_manifest_and_moves_folder_into_place(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    version = publish(store)
    manifest = verify(tmp_path / version)
    assert set(manifest["files"]) == {"model.safetensors", "sub/x.json"}
    assert manifest["version"] == version
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))
    assert store.latest() is None  # publishing does not move LATEST by itself
    store.set_latest(version)
    assert store.latest() == version
    assert (tmp_path / LATEST_FILE).read_text() == version + "\n"


def test_failure_inside_staging_publishes_nothing(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    with pytest.raises(RuntimeError), store.staging() as (_, folder):
        (folder / "half").write_text("x")
        raise RuntimeError("crash while writing")
    assert [p.name for p in tmp_path.iterdir()] == [".store.lock"]  # the lock file stays
    assert store.versions() == []


def test_crash_leftovers_are_ignored_by_readers_and_cleaned_by_next_writer(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    old = publish(store)
    store.set_latest(old)
    # A writer killed mid-way leaves a staging folder and its lock file (the lock died) ...
    dead = tmp_path / f"{STAGING_PREFIX}{new_version_name()}"
    dead.mkdir()
    (dead / "model.safetensors").write_text("half")
    dead.with_name(dead.name + ".lock").write_text("")
    # ... one killed between its rename and its decision leaves a stray lock file ...
    stray_lock = tmp_path / f"{STAGING_PREFIX}{new_version_name()}.lock"
    stray_lock.write_text("")
    # ... and one killed between the rename and LATEST leaves an unpointed version.
    orphan = publish(store, "new")
    # A live writer holds its lock.
    live = tmp_path / f"{STAGING_PREFIX}{new_version_name()}"
    live.mkdir()
    lock = live.with_name(live.name + ".lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    assert [v.name for v in store.versions()] == sorted([old, orphan])
    assert store.latest() == old  # readers still see the old state
    publish(store, "next")
    assert not dead.exists() and not dead.with_name(dead.name + ".lock").exists()
    assert not stray_lock.exists()
    assert live.exists()
    lock.close()


def test_corrupted_or_missing_file_fails_verification(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    version = publish(store)
    weights = tmp_path / version / "model.safetensors"
    weights.chmod(0o644)
    weights.write_text("weightz")  # same size, other bytes
    with pytest.raises(ArtefactError, match="sha256"):
        verify(tmp_path / version)
    with pytest.raises(ArtefactError):
        store.set_latest(version)  # LATEST never points at a bad version
    weights.write_text("w")
    with pytest.raises(ArtefactError, match="wrong size"):
        verify(tmp_path / version)
    weights.unlink()
    with pytest.raises(ArtefactError, match="missing"):
        verify(tmp_path / version)


def test_latest_pointer_validation(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    with pytest.raises(ArtefactError, match="no such version"):
        store.set_latest(new_version_name())
    with pytest.raises(ArtefactError, match="not a version name"):
        store.set_latest("../etc")
    (tmp_path / LATEST_FILE).write_text("garbage\n")
    with pytest.raises(ArtefactError, match="not a version name"):
        store.latest()


def test_prune_keeps_newest_and_latest(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    versions = [publish(store, str(i)) for i in range(4)]
    for version in versions[1:]:
        store.reject(version, "worse", None)
    store.set_latest(versions[0])  # a rollback to the oldest
    removed = store.prune(keep=2)
    assert removed == [versions[1], versions[2]]
    assert [v.name for v in store.versions()] == [versions[0], versions[3]]


def test_version_names_sort_by_creation_time() -> None:
    import datetime as dt

    early = new_version_name(dt.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC))
    late = new_version_name(dt.datetime(2026, 1, 2, 3, 4, 5, 7000, tzinfo=dt.UTC))
    assert early < late
    assert early.startswith("20260102T030405006Z-")


def test_published_files_are_readable_by_others(tmp_path: Path) -> None:
    version = publish(ArtefactStore(tmp_path))
    mode = os.stat(tmp_path / version / "model.safetensors").st_mode & 0o777
    assert mode == 0o644


# ---- the manifest is strict ---------------------------------------------------------------
def edit_manifest(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    edit(manifest["files"])
    path.write_text(json.dumps(manifest))


def test_manifest_carries_the_writers_fields_and_lists_every_file(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    extra = {"base_model": "tiny", "metrics": {"micro_f1": 0.5}, "version": "overridden"}
    with store.staging(manifest_extra=extra) as (version, folder):
        (folder / "model.safetensors").write_text("weights")
        # A manifest left in the folder is replaced, never merged: fields come in by argument.
        (folder / MANIFEST_FILE).write_text(json.dumps({"stale": True}))
    manifest = verify(tmp_path / version)
    assert manifest["base_model"] == "tiny" and manifest["metrics"] == {"micro_f1": 0.5}
    assert manifest["version"] == version and manifest["created"] and "stale" not in manifest
    assert set(manifest["files"]) == {"model.safetensors"}
    assert read_manifest(tmp_path / version) == manifest


def test_an_unlisted_file_fails_verification(tmp_path: Path) -> None:
    folder = tmp_path / publish(ArtefactStore(tmp_path))
    (folder / "sub" / "extra.bin").write_text("smuggled")
    with pytest.raises(ArtefactError, match=r"sub/extra\.bin not listed in its manifest"):
        verify(folder)


def test_a_listed_file_that_is_gone_fails_verification(tmp_path: Path) -> None:
    folder = tmp_path / publish(ArtefactStore(tmp_path))
    (folder / "sub" / "x.json").unlink()
    with pytest.raises(ArtefactError, match=r"sub/x\.json is missing"):
        verify(folder)


@pytest.mark.parametrize("what", ["a listed file", "an extra file", "a folder"])
def test_a_symlink_anywhere_fails_verification(tmp_path: Path, what: str) -> None:
    folder = tmp_path / publish(ArtefactStore(tmp_path))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.json").write_text("{}")  # the same bytes: only the link gives it away
    if what == "a listed file":
        (folder / "sub" / "x.json").unlink()
        (folder / "sub" / "x.json").symlink_to(outside / "x.json")
        name = "sub/x.json"
    elif what == "an extra file":
        (folder / "link").symlink_to(folder / "model.safetensors")
        name = "link"
    else:
        shutil.rmtree(folder / "sub")
        (folder / "sub").symlink_to(outside)
        name = "sub"
    with pytest.raises(ArtefactError, match=rf"{name} is a symlink"):
        verify(folder)


@pytest.mark.parametrize(
    ("listed", "message"),
    [
        ("/etc/hostname", "an absolute path"),
        ("../LATEST", r"a path with '\.\.'"),
        ("sub/../model.safetensors", r"a path with '\.\.'"),
        ("./model.safetensors", "not a plain file path"),
        (MANIFEST_FILE, "not a plain file path"),
        ("sub\\x.json", "a path with a backslash"),
        ("..\\LATEST", "a path with a backslash"),
        ("sub//x.json", "a path with an empty part"),
        ("sub/", "a path with an empty part"),
        ("", "a path with an empty part"),
        ("model\n.safetensors", "not a plain file path"),
    ],
)
def test_a_manifest_listing_a_path_outside_plain_files_fails(
    tmp_path: Path, listed: str, message: str
) -> None:
    folder = tmp_path / publish(ArtefactStore(tmp_path))
    edit_manifest(folder, lambda files: files.update({listed: files["model.safetensors"]}))
    with pytest.raises(ArtefactError, match=message):
        verify(folder)


def test_a_listed_path_that_resolves_outside_the_version_is_refused(tmp_path: Path) -> None:
    """Checked again just before the file is read (a link swapped in after the listing)."""
    folder = tmp_path / publish(ArtefactStore(tmp_path))
    (tmp_path / "outside.json").write_text("{}")
    (folder / "sub" / "x.json").unlink()
    (folder / "sub" / "x.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(ArtefactError, match=r"sub/x\.json resolves outside the version folder"):
        _inside(folder, "sub/x.json")
    assert _inside(folder, "model.safetensors") == folder / "model.safetensors"


def test_a_symlink_in_staging_publishes_nothing(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    with pytest.raises(ArtefactError, match="link is a symlink"), store.staging() as (_, folder):
        (folder / "model.safetensors").write_text("weights")
        (folder / "link").symlink_to(folder / "model.safetensors")
    assert store.versions() == [] and not list(tmp_path.glob(f"{STAGING_PREFIX}*"))
