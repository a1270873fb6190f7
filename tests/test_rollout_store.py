"""The candidate beside LATEST: its pointer moves (shadow, canary, promote, abort) under the
store lock with the record written first, every refusal is one readable error, an unreadable
CANDIDATE is one error that says how to mend it, retention spares the candidate, two operators
in two processes never leave a pointer half-written, and the trainer's rollout setting."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import yaml

import shared.store.records as records
import shared.store.rollout as rollout
from shared.store import (
    ABORTED,
    CANARY,
    CANDIDATE_FILE,
    LATEST_FILE,
    PENDING,
    PROMOTED,
    REJECTED,
    SHADOW,
    ArtefactError,
    ArtefactStore,
    Candidate,
    new_version_name,
)
from tests.conftest import corrupt, publish, tiny_config, trainer_args


def store_with(tmp_path: Path, n: int) -> tuple[ArtefactStore, list[str]]:
    """A store with ``n`` stand-in versions, LATEST on the first."""
    store = ArtefactStore(tmp_path)
    versions = [publish(store, f"weights of version {i}") for i in range(n)]
    store.set_latest(versions[0])
    return store, versions


def on_disk(root: Path) -> dict[str, Any]:
    return dict(json.loads((root / CANDIDATE_FILE).read_text()))


# ---- the moves -------------------------------------------------------------------------------
def test_shadow_then_canary_then_promote(tmp_path: Path) -> None:
    store, (stable, new) = store_with(tmp_path, 2)
    assert store.candidate() is None
    shadow = store.set_candidate(new, SHADOW, reason="gate passed")
    assert store.candidate() == shadow
    assert on_disk(tmp_path) == {
        "version": new,
        "mode": "shadow",
        "sample": 0.2,
        "fraction": 0.0,
        "since": shadow.since,
        "stable": stable,
        "reason": "gate passed",
    }
    assert store.promotion(new).status == SHADOW and store.latest() == stable

    resampled = store.set_candidate(new, SHADOW, sample=0.5)
    assert resampled.sample == 0.5 and resampled.since == shadow.since  # same mode: same since
    canary = store.set_candidate(new, CANARY, fraction=0.1)
    assert (canary.mode, canary.fraction, canary.sample) == (CANARY, 0.1, 0.2)
    assert canary.since > shadow.since
    assert store.promotion(new).status == CANARY

    assert store.promote_candidate(new, "live figures fine") == stable
    assert store.latest() == new and store.candidate() is None
    record = store.promotion(new)
    assert (record.status, record.reason, record.previous) == (
        PROMOTED,
        "live figures fine",
        stable,
    )
    assert [h["status"] for h in record.history] == [PENDING, SHADOW, SHADOW, CANARY]
    assert record.history[1]["reason"] == "gate passed"
    assert store.promotion(stable).status == PROMOTED  # untouched


def test_abort_clears_the_candidate_and_is_a_compare_and_swap(tmp_path: Path) -> None:
    store, (stable, new) = store_with(tmp_path, 2)
    store.set_candidate(new, CANARY, fraction=0.25)
    with pytest.raises(ArtefactError, match=f"the candidate is {new} \\(canary\\), not {stable}"):
        store.abort_candidate("policy", expected=stable)
    assert store.candidate() is not None
    assert store.abort_candidate("agreement 0.41 < 0.8", expected=new) == new
    assert store.candidate() is None and store.latest() == stable
    record = store.promotion(new)
    assert (record.status, record.reason, record.previous) == (
        ABORTED,
        "agreement 0.41 < 0.8",
        stable,
    )
    with pytest.raises(ArtefactError, match="no candidate to abort"):
        store.abort_candidate("again")


def test_replace_supersedes_and_set_latest_to_the_candidate_clears_it(tmp_path: Path) -> None:
    store, (_stable, first, second) = store_with(tmp_path, 3)
    store.set_candidate(first, SHADOW)
    with pytest.raises(ArtefactError, match=f"{first} is the shadow candidate; abort it first"):
        store.set_candidate(second, SHADOW)
    store.set_candidate(second, CANARY, fraction=0.1, replace=True)
    assert store.promotion(first).status == ABORTED
    assert store.promotion(first).reason == f"superseded by {second}"
    store.set_latest(first)  # by hand, elsewhere: the candidate stays
    assert store.candidate() is not None and store.candidate().version == second  # type: ignore[union-attr]
    store.set_latest(second)  # by hand, to the candidate: it is one no more
    assert store.candidate() is None and store.latest() == second


REFUSALS = [
    (lambda s, v: s.set_candidate(v[0], SHADOW), "is what LATEST names already"),
    (lambda s, v: s.set_candidate(v[1], "blue"), "mode 'blue' is not one of shadow, canary"),
    (lambda s, v: s.set_candidate(v[1], CANARY), "a canary needs a fraction between 0 and 1"),
    (lambda s, v: s.set_candidate(v[1], CANARY, fraction=1.0), "a canary needs a fraction"),
    (lambda s, v: s.set_candidate(v[1], SHADOW, fraction=0.1), "answers no request"),
    (lambda s, v: s.set_candidate(v[1], SHADOW, sample=1.5), "sample 1.5 is not between 0 and 1"),
    (lambda s, v: s.set_candidate("../etc", SHADOW), "not a version name"),
    (lambda s, v: s.set_candidate(new_version_name(), SHADOW), "no such version folder"),
    (lambda s, v: s.promote_candidate(v[1], "x"), "no candidate to promote; `tagger versions use"),
    (lambda s, v: s.abort_candidate("x"), "no candidate to abort"),
]


@pytest.mark.parametrize(("change", "message"), REFUSALS, ids=[m for _, m in REFUSALS])
def test_refusals_are_one_line_and_change_nothing(
    tmp_path: Path, change: Any, message: str
) -> None:
    store, versions = store_with(tmp_path, 2)
    before = store.promotion(versions[1])
    with pytest.raises(ArtefactError, match=message) as caught:
        change(store, versions)
    assert "\n" not in str(caught.value)
    assert store.candidate() is None and store.latest() == versions[0]
    assert store.promotion(versions[1]) == before


def test_a_corrupted_version_is_never_made_the_candidate_nor_promoted(tmp_path: Path) -> None:
    store, (stable, good, bad) = store_with(tmp_path, 3)
    corrupt(store, bad)
    with pytest.raises(ArtefactError, match=r"model\.safetensors"):
        store.set_candidate(bad, SHADOW)
    assert store.candidate() is None and store.promotion(bad).status == PENDING
    store.set_candidate(good, SHADOW)
    with pytest.raises(ArtefactError, match=f"the candidate is {good} \\(shadow\\), not {bad}"):
        store.promote_candidate(bad, "x")
    corrupt(store, good)  # broken after it was set: promoting it is refused
    with pytest.raises(ArtefactError, match=r"model\.safetensors"):
        store.promote_candidate(good, "x")
    assert store.latest() == stable and store.promotion(good).status == SHADOW


def test_nothing_to_stand_beside_without_latest(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    version = publish(store)
    with pytest.raises(ArtefactError, match=f"no LATEST.*tagger versions use {version}"):
        store.set_candidate(version, SHADOW)


def test_every_move_waits_for_the_store_lock(tmp_path: Path) -> None:
    store, (_stable, new) = store_with(tmp_path, 2)
    holder = ArtefactStore(tmp_path, lock_timeout_s=0)
    impatient = ArtefactStore(tmp_path, lock_timeout_s=0)
    store.set_candidate(new, SHADOW)
    with holder.lock():
        for move in (
            lambda: impatient.set_candidate(new, CANARY, fraction=0.1),
            lambda: impatient.promote_candidate(new, "test"),
            lambda: impatient.abort_candidate("test"),
        ):
            with pytest.raises(ArtefactError, match="store lock"):
                move()
    assert impatient.abort_candidate("free again") == new


# ---- crash points ----------------------------------------------------------------------------
def test_records_are_written_before_the_pointer_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, (_stable, new) = store_with(tmp_path, 2)
    written: list[str] = []
    real = rollout.write_atomic

    def recording(path: Path, text: str) -> None:
        written.append(path.parent.name + "/" + path.name)
        real(path, text)

    monkeypatch.setattr(rollout, "write_atomic", recording)
    monkeypatch.setattr(records, "write_atomic", recording)
    store.set_candidate(new, SHADOW)
    store.promote_candidate(new, "ok")
    root = tmp_path.name
    assert written == [
        f".promotions/{new}.json",
        f"{root}/{CANDIDATE_FILE}",
        f".promotions/{new}.json",
        f"{root}/{LATEST_FILE}",
    ]


def test_a_promotion_cut_short_leaves_a_stale_candidate_the_next_change_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.versions import main as versions_main

    store, (_stable, new, other) = store_with(tmp_path, 3)
    store.set_candidate(new, CANARY, fraction=0.1)

    def crash(root: Path) -> None:
        raise OSError("killed")

    monkeypatch.setattr(rollout, "remove_candidate", crash)
    with pytest.raises(OSError, match="killed"):
        store.promote_candidate(new, "ok")
    monkeypatch.undo()
    assert store.latest() == new and store.promotion(new).status == PROMOTED
    stale = store.candidate()
    assert stale is not None and stale.version == new  # readers treat it as no candidate
    assert versions_main(["--artefacts-dir", str(tmp_path), "list"]) == 0
    publish(store)  # the next change of the store
    assert store.candidate() is None
    store.set_candidate(other, SHADOW)  # and a new candidate can be set
    assert store.promotion(new).status == PROMOTED


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not json", "Expecting value"),
        (b"\xff\xfe", "codec"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b'{"version": "20261126T170102123Z-3fa9c1"}', "no 'mode' field"),
        (None, "a folder"),
        (b"x" * 70_000, "over 65536 bytes"),
    ],
    ids=["garbage", "not-utf8", "list", "missing-field", "folder", "huge"],
)
def test_an_unreadable_candidate_is_one_error_that_abort_mends(
    tmp_path: Path, content: bytes | None, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.versions import main as versions_main

    store, (stable, new) = store_with(tmp_path, 2)
    path = tmp_path / CANDIDATE_FILE
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ArtefactError, match="tagger versions abort") as caught:
        store.candidate()
    assert problem in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ArtefactError, match="not pruning"):
        store.prune(keep=1)  # the version it meant cannot be told apart
    with pytest.raises(ArtefactError, match="tagger versions abort"):
        store.set_candidate(new, SHADOW)  # nor replaced without saying so
    assert versions_main(["--artefacts-dir", str(tmp_path), "list"]) == 0
    assert "CANDIDATE is broken" in capsys.readouterr().out
    with pytest.raises(ArtefactError, match="tagger versions abort"):
        store.abort_candidate("policy", expected=new)  # a compare-and-swap cannot match
    assert store.abort_candidate("mended") == ""
    assert not path.exists() and store.candidate() is None
    assert store.latest() == stable


def test_invalid_fields_on_disk_are_refused(tmp_path: Path) -> None:
    store, (_stable, new) = store_with(tmp_path, 2)
    store.set_candidate(new, CANARY, fraction=0.1)
    for field, value, problem in [
        ("fraction", 0.0, "a canary needs a fraction"),
        ("sample", True, "sample True is not a number"),
        ("mode", "red", "mode 'red'"),
        ("stable", "../x", "not a version name"),
    ]:
        data = on_disk(tmp_path)
        (tmp_path / CANDIDATE_FILE).write_text(json.dumps({**data, field: value}))
        with pytest.raises(ArtefactError, match=problem):
            store.candidate()
        (tmp_path / CANDIDATE_FILE).write_text(json.dumps(data))
    assert store.candidate() == Candidate(**on_disk(tmp_path))


def test_stray_temp_files_of_a_dead_writer_are_removed(tmp_path: Path) -> None:
    store, _ = store_with(tmp_path, 1)
    stray = tmp_path / f".{CANDIDATE_FILE}.tmp-deadbeef"
    stray.write_text("{")
    store.clean_staging()
    assert not stray.exists()


# ---- records and retention -------------------------------------------------------------------
def test_record_history_is_kept_and_bounded(tmp_path: Path) -> None:
    store, (_stable, new) = store_with(tmp_path, 2)
    for i in range(records.HISTORY_LIMIT + 5):
        store.set_candidate(new, SHADOW, sample=round(0.01 * i, 2), reason=f"step {i}")
    record = store.promotion(new)
    assert record.reason == f"step {records.HISTORY_LIMIT + 4}"
    assert len(record.history) == records.HISTORY_LIMIT
    assert record.history[-1]["reason"] == f"step {records.HISTORY_LIMIT + 3}"
    assert set(record.history[0]) == {"status", "reason", "previous", "at"}


def test_retention_spares_the_candidate(tmp_path: Path) -> None:
    store, versions = store_with(tmp_path, 5)
    oldest_pending = versions[1]
    store.set_candidate(oldest_pending, SHADOW)
    store.reject(versions[2], "worse", versions[0])
    assert store.prune(keep=3) == versions[3:]  # the rejected one ranks above the pending
    assert store.prune(keep=1) == [versions[2]]
    assert {v.name for v in store.versions()} == {versions[0], oldest_pending}
    assert store.fallback_candidates(None) == [versions[0]]  # never the candidate


# ---- two operators at once ---------------------------------------------------------------
def operator(root: str, mine: str, rounds: int, start: Any) -> None:
    """One operator's process: make ``mine`` the candidate, canary it, abort it, over and
    over, while another does the same with its own version; each error must be a refusal."""
    store = ArtefactStore(root)
    start.wait(timeout=60)
    for _ in range(rounds):
        for move in (
            lambda: store.set_candidate(mine, SHADOW, replace=True),
            lambda: store.set_candidate(mine, CANARY, fraction=0.1),
            lambda: store.abort_candidate("operator", expected=mine),
        ):
            try:
                move()
            except ArtefactError as exc:
                if "candidate" not in str(exc):
                    raise
            candidate = store.candidate()  # always readable: never half-written
            assert candidate is None or candidate.version != store.latest()


def test_two_operators_in_two_processes_never_break_a_pointer(tmp_path: Path) -> None:
    store, (stable, a, b) = store_with(tmp_path, 3)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    procs = [context.Process(target=operator, args=(str(tmp_path), v, 25, start)) for v in (a, b)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert store.latest() == stable
    candidate = store.candidate()
    for version in (a, b):
        status = store.promotion(version).status
        if candidate is not None and candidate.version == version:
            assert status in (SHADOW, CANARY)
        else:
            assert status == ABORTED  # aborted, or superseded by the other
    assert not list(tmp_path.glob(".*.tmp-*")) and not list(tmp_path.glob(".promotions/.*"))


# ---- the trainer's rollout setting ---------------------------------------------------------
# (trainer modules imported in the tests: the operators' processes above import this module)
def passing_gate(store: ArtefactStore) -> dict[str, Any]:
    return {"previous": store.latest(), "promoted": True, "reason": "micro-F1 0.9 >= 0.8"}


@pytest.mark.parametrize("mode", [SHADOW, CANARY])
def test_settle_publishes_a_passing_version_as_the_candidate(tmp_path: Path, mode: str) -> None:
    from trainer.promotion import settle_promotion

    store, (stable, earlier, mine) = store_with(tmp_path, 3)
    store.set_candidate(earlier, SHADOW)  # an earlier run's candidate: replaced
    decision = settle_promotion(
        store, mine, passing_gate(store), lambda: passing_gate(store), rollout=mode, fraction=0.3
    )
    assert decision["candidate"] == mode and not decision["promoted"]
    candidate = store.candidate()
    assert candidate is not None and (candidate.version, candidate.mode) == (mine, mode)
    assert candidate.fraction == (0.3 if mode == CANARY else 0.0)
    assert candidate.reason == "micro-F1 0.9 >= 0.8" and candidate.stable == stable
    assert store.latest() == stable
    assert store.promotion(earlier).status == ABORTED


def test_settle_promotes_the_first_model_and_rejects_a_failing_one_whatever_the_rollout(
    tmp_path: Path,
) -> None:
    from trainer.promotion import settle_promotion

    store = ArtefactStore(tmp_path)
    first = publish(store, keep_claim=True)
    decision = settle_promotion(
        store, first, passing_gate(store), lambda: passing_gate(store), rollout=SHADOW
    )
    assert decision["promoted"] and "candidate" not in decision
    assert store.latest() == first and store.candidate() is None
    worse = publish(store, "w", keep_claim=True)
    failing = {"previous": first, "promoted": False, "reason": "worse"}
    decision = settle_promotion(store, worse, failing, lambda: failing, rollout=SHADOW)
    assert store.promotion(worse).status == REJECTED and store.candidate() is None


def test_settle_regates_when_latest_moves_before_the_candidate_is_set(tmp_path: Path) -> None:
    from trainer.promotion import settle_promotion

    store, (_stable, moved_to, mine) = store_with(tmp_path, 3)
    decision = passing_gate(store)
    store.set_latest(moved_to)  # another writer, between the gate and the decision
    gates: list[str | None] = []

    def regate() -> dict[str, Any]:
        gates.append(store.latest())
        return passing_gate(store)

    settled = settle_promotion(store, mine, decision, regate, rollout=SHADOW)
    assert gates == [moved_to] and settled["candidate"] == SHADOW
    candidate = store.candidate()
    assert candidate is not None and candidate.stable == moved_to


def test_trainer_with_rollout_shadow_publishes_the_candidate_beside_latest(
    store_copy: ArtefactStore,
    tiny_model_dir: Path,
    fixture_data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trainer.__main__ import main as trainer_main

    stable = store_copy.latest()
    config = tmp_path / "tiny.yaml"
    recipe = tiny_config(
        tiny_model_dir, epochs=1, baseline=False, force_promote=True, max_train_examples=32
    )
    config.write_text(yaml.safe_dump(recipe.public_dict()))
    monkeypatch.setenv("TRAINER_ROLLOUT", "shadow")
    monkeypatch.setenv("TRAINER_ROLLOUT_SAMPLE", "0.5")
    assert trainer_main(trainer_args(config, fixture_data, store_copy.root)[2:]) == 0
    assert store_copy.latest() == stable  # LATEST did not move, and the exit code says fine
    candidate = store_copy.candidate()
    assert candidate is not None and (candidate.sample, candidate.stable) == (0.5, stable)
    assert candidate.mode == SHADOW and candidate.reason == "forced"
    assert store_copy.promotion(candidate.version).status == SHADOW
    out = capsys.readouterr().out
    assert f"{candidate.version} is the shadow candidate beside LATEST, which did not move" in out
