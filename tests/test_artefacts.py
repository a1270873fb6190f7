"""The artefact store: atomic publish, crashes at every step, verification, the pointer."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from shared.artefacts import (
    LATEST_FILE,
    STAGING_PREFIX,
    ArtefactError,
    ArtefactStore,
    new_version_name,
    verify,
)
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
