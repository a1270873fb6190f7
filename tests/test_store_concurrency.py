"""The store owns concurrency: one lock around every change, LATEST as a compare-and-swap,
promotion records, fallback and retention that never pick a rejected version, and every
broken LATEST as one clear error. No timed assertions: threads meet at barriers and events."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import shared.store.locks as locks
import shared.store.writer as writer
from shared.store import (
    LATEST_FILE,
    PENDING,
    PROMOTED,
    PROMOTIONS_DIR,
    REJECTED,
    STAGING_PREFIX,
    STORE_LOCK_FILE,
    UNKNOWN,
    ArtefactError,
    ArtefactStore,
    new_version_name,
    verify,
)
from tests.conftest import publish, tiny_config
from trainer.promotion import settle_promotion


def lock_is_held(path: Path) -> bool:
    fd = locks.try_flock(path, create=False)
    if fd is None:
        return path.exists()
    locks.os.close(fd)
    return False


# ---- locking during publish -------------------------------------------------------------
def test_staging_lock_is_held_until_the_rename_and_the_rename_holds_the_store_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtefactStore(tmp_path)
    other = ArtefactStore(tmp_path)  # another writer: its own file descriptors
    seen: dict[str, Any] = {}
    real_fsync_tree, real_rename = writer.fsync_tree, writer.os.rename

    def fsync_tree_then_clean(folder: Path) -> None:
        real_fsync_tree(folder)
        # Between hashing and renaming, another writer's clean-up must leave it alone.
        seen["cleaned"] = other.clean_staging()
        seen["folder_survived"] = folder.is_dir()

    def rename_checking_lock(src: Any, dst: Any) -> None:
        if Path(src).name.startswith(STAGING_PREFIX):
            seen["store_locked"] = lock_is_held(tmp_path / STORE_LOCK_FILE)
            seen["staging_locked"] = lock_is_held(Path(f"{src}.lock"))
        real_rename(src, dst)

    monkeypatch.setattr(writer, "fsync_tree", fsync_tree_then_clean)
    monkeypatch.setattr(writer.os, "rename", rename_checking_lock)
    version = publish(store)
    assert seen == {
        "cleaned": [],
        "folder_survived": True,
        "store_locked": True,
        "staging_locked": True,
    }
    verify(tmp_path / version)
    assert store.promotion(version).status == PENDING
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))  # lock file gone too


def test_a_lock_file_unlinked_between_open_and_flock_is_locked_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.lock"
    path.write_text("")
    real_flock = locks.fcntl.flock
    raced: list[bool] = []

    def flock_after_someone_unlinks(fd: int, operation: int) -> None:
        if not raced:  # another process's clean-up, between our open and our flock
            raced.append(True)
            path.unlink()
        real_flock(fd, operation)

    monkeypatch.setattr(locks.fcntl, "flock", flock_after_someone_unlinks)
    fd = locks.try_flock(path, create=True)
    assert fd is not None and raced
    assert locks.os.fstat(fd).st_ino == path.stat().st_ino  # the file the path names
    locks.os.close(fd)


def test_every_change_waits_for_the_store_lock(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    version = publish(store)
    holder = ArtefactStore(tmp_path, lock_timeout_s=0)
    impatient = ArtefactStore(tmp_path, lock_timeout_s=0)
    with holder.lock():
        for change in (
            lambda: impatient.set_latest(version),
            lambda: impatient.promote(version, None, "test"),
            lambda: impatient.reject(version, "test", None),
            lambda: impatient.prune(keep=1),
        ):
            with pytest.raises(ArtefactError, match="store lock"):
                change()
    impatient.set_latest(version)  # free again
    assert impatient.latest() == version


# ---- compare-and-swap and records -------------------------------------------------------
def test_promote_is_a_compare_and_swap(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    a, b, c = (publish(store, p) for p in "abc")
    assert store.promote(a, None, "first model")
    assert store.promote(b, a, "better than a")
    assert not store.promote(c, a, "better than a")  # LATEST is b now: nothing changes
    assert store.latest() == b
    assert store.promotion(c).status == PENDING
    record = store.promotion(b)
    assert record.promoted and record.previous == a and record.reason == "better than a"
    (tmp_path / LATEST_FILE).write_bytes(b"\xff\xfe")
    assert not store.promote(c, b, "x")  # an unreadable LATEST fails the swap ...
    store.promote(c, None, "forced", force=True)  # ... unless forced, which mends it
    assert store.latest() == c


def gate_by_score(store: ArtefactStore, scores: dict[str, float], version: str) -> dict[str, Any]:
    """A stand-in for the trainer's gate: not worse than what LATEST names."""
    previous = store.latest()
    promoted = previous is None or scores[version] >= scores[previous]
    return {"previous": previous, "promoted": promoted, "reason": f"{version} vs {previous}"}


@pytest.mark.parametrize("first", ["better", "worse"])
def test_two_concurrent_trainers_both_publish_and_latest_ends_on_the_better(
    tmp_path: Path, first: str
) -> None:
    seed = ArtefactStore(tmp_path)
    incumbent = publish(seed, "old")
    seed.set_latest(incumbent)
    scores = {incumbent: 0.5}
    both_gated = threading.Barrier(2)
    first_settled = threading.Event()
    results: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def trainer(name: str, score: float) -> None:
        try:
            store = ArtefactStore(tmp_path)  # each trainer its own process, in effect
            version = publish(store, name, keep_claim=True)
            scores[version] = score
            decision = gate_by_score(store, scores, version)  # both against the incumbent
            both_gated.wait(timeout=60)
            if name != first:
                first_settled.wait(timeout=60)
            results[name] = settle_promotion(
                store, version, decision, lambda: gate_by_score(store, scores, version)
            )
            results[name]["version"] = version
            first_settled.set()
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            first_settled.set()

    threads = [
        threading.Thread(target=trainer, args=("better", 0.9)),
        threading.Thread(target=trainer, args=("worse", 0.8)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    store = ArtefactStore(tmp_path)
    better, worse = results["better"]["version"], results["worse"]["version"]
    assert {v.name for v in store.versions()} == {incumbent, better, worse}  # both published
    assert store.latest() == better
    assert store.promotion(better).status == PROMOTED
    if first == "better":
        # The worse one found LATEST moved, re-ran its gate against the better one, lost.
        assert store.promotion(worse).status == REJECTED
        assert results["worse"]["previous"] == better
    else:
        # The worse one was promoted first; the better one re-gated against it and won.
        assert store.promotion(better).previous == worse
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))  # claims released


def test_settle_gives_up_promoting_when_latest_keeps_moving(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    versions = [publish(store, str(i)) for i in range(5)]
    store.set_latest(versions[0])
    mine = versions[-1]
    movers = iter(versions[1:4])

    def regate() -> dict[str, Any]:
        return {"previous": store.latest(), "promoted": True, "reason": "better"}

    def decision_then_someone_moves_latest() -> dict[str, Any]:
        decision = regate()
        store.set_latest(next(movers))  # another writer wins the race every time
        return decision

    decision = decision_then_someone_moves_latest()
    final = settle_promotion(store, mine, decision, decision_then_someone_moves_latest)
    assert not final["promoted"] and "moved under this run" in final["reason"]
    assert store.promotion(mine).status == REJECTED
    assert store.latest() == versions[3]


# ---- a broken LATEST ----------------------------------------------------------------------
def break_latest(root: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    latest = root / LATEST_FILE
    if how == "garbage":
        latest.write_text("../../etc/passwd\n")
    elif how == "not-utf8":
        latest.write_bytes(b"\xff\xfe\x00garbage")
    elif how == "empty":
        latest.write_bytes(b"")
    elif how == "huge":
        latest.write_bytes(b"2" * 100_000)
    elif how == "folder":
        latest.unlink()
        latest.mkdir()
    elif how == "unreadable":  # chmod 000 does not stop root, so fail the read itself
        real_open = Path.open

        def open_denied(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == latest:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", open_denied)


BROKEN = ["garbage", "not-utf8", "empty", "huge", "folder", "unreadable"]


@pytest.mark.parametrize("how", BROKEN)
def test_every_broken_latest_is_one_clear_error_and_list_still_works(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.versions import main as versions_main

    store = ArtefactStore(tmp_path)
    good = publish(store)
    store.set_latest(good)
    break_latest(tmp_path, how, monkeypatch)
    with pytest.raises(ArtefactError, match=r"LATEST.*tagger versions use VERSION"):
        store.latest()
    with pytest.raises(ArtefactError, match="LATEST"):
        store.check_writable()  # a trainer stops before training
    with pytest.raises(ArtefactError, match="not pruning"):
        store.prune(keep=1)
    assert versions_main(["--artefacts-dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert good in out and "promoted" in out
    assert "LATEST is broken" in out and "tagger versions use VERSION" in out
    assert f"the newest promoted version is {good}" in out
    monkeypatch.undo()
    assert versions_main(["--artefacts-dir", str(tmp_path), "use", good]) == 0  # mended
    assert store.latest() == good


def test_list_says_when_latest_names_a_missing_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.versions import main as versions_main

    store = ArtefactStore(tmp_path)
    store.set_latest(publish(store))
    missing = new_version_name()
    (tmp_path / LATEST_FILE).write_text(missing + "\n")
    assert versions_main(["--artefacts-dir", str(tmp_path), "list"]) == 0
    assert f"LATEST names {missing}, which is not a published version" in capsys.readouterr().out


# ---- fallback and retention ---------------------------------------------------------------
def test_fallback_candidates_are_promoted_versions_never_rejected_ones(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    legacy_unknown, legacy_rejected, promoted, rejected, pending, latest = (
        publish(store, str(i)) for i in range(6)
    )
    for legacy in (legacy_unknown, legacy_rejected):  # published before records were kept
        (tmp_path / PROMOTIONS_DIR / f"{legacy}.json").unlink()
    metrics = tmp_path / legacy_rejected / "metrics.json"
    metrics.write_text(json.dumps({"promotion": {"promoted": False, "reason": "worse"}}))
    store.set_latest(promoted)
    store.reject(rejected, "micro-F1 lower", promoted)
    store.set_latest(latest)
    assert store.promotion(legacy_unknown).status == UNKNOWN
    assert store.promotion(legacy_rejected).status == REJECTED
    assert store.promotion(pending).status == PENDING
    assert store.fallback_candidates(before=latest) == [promoted, legacy_unknown]
    assert store.fallback_candidates(before=promoted) == [legacy_unknown]


def test_api_start_up_fallback_skips_a_rejected_version(store_copy: ArtefactStore) -> None:
    from api.model_manager import ModelManager

    good = store_copy.latest()
    assert good is not None

    def clone() -> str:
        name = new_version_name()
        shutil.copytree(store_copy.root / good, store_copy.root / name)
        return name

    rejected, broken = clone(), clone()
    store_copy.reject(rejected, "micro-F1 lower than the incumbent", good)
    (store_copy.root / broken / "tagger.json").chmod(0o644)
    (store_copy.root / broken / "tagger.json").write_text("{}")  # fails verification
    (store_copy.root / LATEST_FILE).write_text(broken + "\n")
    manager = ModelManager(store_copy)
    asyncio.run(manager.start())
    assert manager.current is not None and manager.current.version == good
    assert set(manager.failed) == {broken}  # the rejected one was never even tried


def test_prune_prefers_promoted_and_spares_a_version_being_decided(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    old_promoted = publish(store, "a")
    store.set_latest(old_promoted)
    rejected = [publish(store, f"r{i}") for i in range(2)]
    for version in rejected:
        store.reject(version, "worse", old_promoted)
    latest = publish(store, "l")
    store.set_latest(latest)
    writer = ArtefactStore(tmp_path)  # another trainer, still gating its version
    in_flight = publish(writer, "f", keep_claim=True)
    other = ArtefactStore(tmp_path)
    assert other.in_flight(in_flight)
    removed = other.prune(keep=3)
    assert removed == rejected  # the rejected go first; the old promoted one stays
    assert {v.name for v in store.versions()} == {old_promoted, latest, in_flight}
    writer.release_claim(in_flight)  # its writer decided nothing and went away
    assert other.prune(keep=1) == [old_promoted, in_flight]
    assert [v.name for v in store.versions()] == [latest]
    assert not (tmp_path / PROMOTIONS_DIR / f"{old_promoted}.json").exists()


def run_together(*jobs: Callable[[], None], timeout: float = 120) -> None:
    """Run each job in its own thread; re-raise the first job's exception, in job order
    (an exception left in a plain thread would only be a warning, and the test would pass)."""
    pool = ThreadPoolExecutor(max_workers=len(jobs))
    try:
        futures = [pool.submit(job) for job in jobs]
        for future in futures:
            future.result(timeout=timeout)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def test_prune_racing_use_never_leaves_latest_naming_a_deleted_version(tmp_path: Path) -> None:
    seed = ArtefactStore(tmp_path)
    versions = [publish(seed, str(i)) for i in range(6)]
    for version in versions:
        seed.set_latest(version)
    start = threading.Barrier(2)

    def use_loop() -> None:
        store = ArtefactStore(tmp_path)
        start.wait(timeout=60)
        for i in range(40):
            try:
                store.set_latest(versions[i % len(versions)])
            except ArtefactError as exc:  # pruned before we got to it: refused cleanly
                if "no such version folder" not in str(exc):
                    raise
            verify(tmp_path / str(store.latest()))  # what LATEST names is never pruned

    def prune_loop() -> None:
        store = ArtefactStore(tmp_path)
        start.wait(timeout=60)
        for _ in range(40):
            store.prune(keep=1)

    run_together(use_loop, prune_loop)
    store = ArtefactStore(tmp_path)
    latest = store.latest()
    assert latest is not None
    verify(tmp_path / latest)
    assert latest in {v.name for v in store.versions()}


# ---- the trainer ------------------------------------------------------------------------------
def test_trainer_checks_the_store_before_training(
    tmp_path: Path,
    tiny_model_dir: Path,
    fixture_data: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trainer.train as train_module

    (tmp_path / LATEST_FILE).write_bytes(b"\xffnot utf-8")

    def no_fit(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("trained although the store could not take the result")

    monkeypatch.setattr(train_module, "fit", no_fit)
    with pytest.raises(ArtefactError, match="not UTF-8"):
        train_module.train(
            tiny_config(tiny_model_dir, epochs=1), fixture_data["train"], None, tmp_path
        )


def test_trainer_publishes_and_says_why_when_latest_breaks_during_training(
    store_copy: ArtefactStore,
    tiny_model_dir: Path,
    fixture_data: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trainer.train as train_module

    root = store_copy.root
    first = store_copy.latest()  # the fixture version, promoted by its own run
    assert first is not None
    real_fit = train_module.fit

    def fit_then_break_latest(*args: Any, **kwargs: Any) -> Any:
        fitted = real_fit(*args, **kwargs)
        (root / LATEST_FILE).write_text("garbage\n")  # someone breaks it meanwhile
        return fitted

    monkeypatch.setattr(train_module, "fit", fit_then_break_latest)
    config = tiny_config(tiny_model_dir, epochs=1)
    result = train_module.train(config, fixture_data["train"], None, root)
    assert not result.promoted and "LATEST cannot be read" in result.reason
    verify(result.path)  # the finished model is published, not thrown away
    store = ArtefactStore(root)
    assert store.promotion(result.version).status == REJECTED
    assert store.promotion(first).status == PROMOTED
    assert not list(root.glob(f"{STAGING_PREFIX}*"))
