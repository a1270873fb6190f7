"""``trainer.rollout``: compare and decide on a real SQLite inference log written by the
writer (answer rows of the served version, shadow rows of the candidate with the comparison
``shared.live.agreement`` makes, feedback through ``record_feedback``) and a real store of
stand-in versions with a candidate beside LATEST."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from shared.inference_log import ROLE_SHADOW, PredictionRow, connect, record_feedback
from shared.inference_log.schema import predictions
from shared.live import agreement
from shared.store import ABORTED, PROMOTED, SHADOW, ArtefactError, ArtefactStore
from tests.conftest import publish
from tests.test_cli import tagger
from tests.test_inference_log import log_rows, row
from trainer.config import ConfigError
from trainer.rollout import Policy, compare, decide

STABLE_TAGS = [("python", 0.9), ("pandas", 0.4)]
AGREEING = [("python", 0.8), ("pandas", 0.6)]  # decides python and pandas
DISAGREEING = [("java", 0.7), ("python", 0.3)]  # decides java only


@pytest.fixture
def store(tmp_path: Path) -> ArtefactStore:
    """LATEST at a stand-in version, another one the shadow candidate beside it."""
    store = ArtefactStore(tmp_path / "artefacts")
    stable = publish(store, "stable")
    store.set_latest(stable)
    store.set_candidate(publish(store, "candidate"), SHADOW, sample=0.5, reason="test")
    return store


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = connect(f"sqlite:///{tmp_path / 'inference.db'}")
    yield eng
    eng.dispose()


def versions(store: ArtefactStore) -> tuple[str, str]:
    candidate = store.candidate()
    latest = store.latest()
    assert candidate is not None and latest is not None
    return latest, candidate.version


def table(report: str) -> dict[str, list[str]]:
    """The report's table: each row's name (its first 22 characters) and its cells."""
    return {line[:22].strip(): line[22:].split() for line in report.splitlines() if line}


def traffic(
    engine: Engine,
    store: ArtefactStore,
    texts: int,
    disagree: int = 0,
    feedback: int = 0,
    truth: list[str] | None = None,
    at: datetime | None = None,
) -> None:
    """``texts`` answered by the served version, each shadowed by the candidate (the first
    ``disagree`` of them with another top tag); the first ``feedback`` reported as ``truth``.
    Logged ``at`` (default: now)."""
    stable, candidate = versions(store)
    rows: list[PredictionRow] = []
    for i in range(texts):
        answer = replace(
            row(f"req-{i}", version=stable, at=at or datetime.now(UTC)),
            top_tags=STABLE_TAGS,
            predicted=["python"],
            compute_ms=10.0 + i % 10,
        )
        tags = DISAGREEING if i < disagree else AGREEING
        predicted = [tag for tag, score in tags if score >= 0.5]
        compared = agreement(answer.top_tags, answer.predicted, tags, predicted)
        shadow = replace(
            answer,
            version=candidate,
            top_tags=tags,
            predicted=predicted,
            role=ROLE_SHADOW,
            compute_ms=5.0,
            agree_top1=compared.top1,
            jaccard=compared.jaccard,
            score_delta=compared.score_delta,
        )
        rows += [answer, shadow]
    log_rows(engine, rows)
    for i in range(feedback):
        record_feedback(engine, f"req-{i}", 0, truth or ["python"])


def test_compare_shows_the_candidate_beside_the_served_version(
    engine: Engine, store: ArtefactStore
) -> None:
    stable, candidate = versions(store)
    traffic(engine, store, texts=20, disagree=5, feedback=8, truth=["python", "pandas"])
    report = compare(store, engine, window_s=0)
    lines = table(report)
    assert f"candidate {candidate} (shadow, sample 0.5, since " in report
    assert f"served    {stable} (LATEST)" in report and "window: the newest 20000 rows" in report
    assert lines["texts answered"][-2:] == ["20", "0"]
    assert lines["texts shadow-scored"][-2:] == ["0", "20"]
    assert lines["compute ms p50"][-2:] == ["14.0", "5.0"]
    assert lines["compute ms p95"][-2:] == ["19.0", "5.0"]
    assert lines["paired texts"][-2:] == ["20", "20"]
    assert lines["with feedback"][-2:] == ["8", "8"]
    # Texts 0-4 disagree (candidate: java), 5-7 agree (candidate: python, pandas).
    assert lines["live P@1"][-2:] == ["1.000", "0.375"]
    # stable: tp 8, fn 8 -> 16/24; candidate: tp 6, fp 5, fn 10 -> 12/27.
    assert lines["live micro-F1"][-2:] == ["0.667", "0.444"]
    jaccard = (5 * 0.0 + 15 * 0.5) / 20
    delta = (5 * (0.7 - 0.9) + 15 * (0.8 - 0.9)) / 20
    assert (
        f"on 20 paired texts: top-1 agreement 0.750, mean Jaccard {jaccard:.3f}, "
        f"mean score change {delta:+.3f}"
    ) in report


def test_compare_without_a_candidate_shows_the_served_version(
    engine: Engine, store: ArtefactStore
) -> None:
    stable, _ = versions(store)
    traffic(engine, store, texts=6, feedback=2)
    store.abort_candidate("test")
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    with engine.begin() as conn:  # outside the window
        old = [row(f"old-{i}", version=stable, at=two_hours_ago).values() for i in range(3)]
        conn.execute(predictions.insert(), old)
    report = compare(store, engine, window_s=3600)
    assert report.startswith(f"no candidate beside served {stable}; window: the last 3600 s")
    lines = table(report)
    assert lines["texts logged"][-1] == "6"  # its answer rows: the candidate's are not its own
    assert lines["with feedback"][-1] == "2" and lines["live P@1"][-1] == "1.000"
    assert compare(ArtefactStore(store.root.parent / "empty"), engine, 0).startswith("nothing")


def test_decide_waits_for_enough_paired_texts_then_for_feedback(
    engine: Engine, store: ArtefactStore
) -> None:
    _, candidate = versions(store)
    traffic(engine, store, texts=10, feedback=3)
    policy = Policy(min_requests=20, min_feedback=5)
    assert decide(store, engine, policy).startswith(f"waiting: 10/20 paired texts of {candidate}")
    line = decide(store, engine, replace(policy, min_requests=10))
    assert line.startswith("waiting: 3/5 paired texts with feedback")
    assert "top-1 agreement 1.000 on 10 paired texts" in line
    assert store.promotion(candidate).status == SHADOW  # nothing moved while waiting


def test_decide_aborts_on_agreement_and_records_the_figures(
    engine: Engine, store: ArtefactStore
) -> None:
    stable, candidate = versions(store)
    traffic(engine, store, texts=10, disagree=3, feedback=10)
    line = decide(store, engine, Policy(min_requests=10, min_agreement=0.8))
    reason = "top-1 agreement 0.700 on 10 paired texts is below 0.8"
    assert line == f"aborted {candidate} (LATEST stays {stable}): {reason}"
    assert store.candidate() is None and store.latest() == stable
    record = store.promotion(candidate)
    assert (record.status, record.reason) == (ABORTED, f"decide: {reason}")
    assert decide(store, engine, Policy()).startswith("waiting: no candidate beside LATEST")


def test_decide_aborts_on_a_quality_drop(engine: Engine, store: ArtefactStore) -> None:
    stable, candidate = versions(store)
    traffic(engine, store, texts=10, disagree=1, feedback=10)  # truth: python only
    line = decide(store, engine, Policy(min_requests=10, min_agreement=0.8, min_feedback=10))
    # stable: tp 10 -> 1.000; candidate: java once (fp 1, fn 1), python+pandas 9 times (tp 9,
    # fp 9) -> 18 / 29.
    assert line.startswith(f"aborted {candidate} (LATEST stays {stable}): live micro-F1 0.621")
    assert f"against {stable}'s 1.000 on 10 paired texts with feedback" in line
    assert store.promotion(candidate).status == ABORTED and store.latest() == stable


def test_decide_promotes_when_agreement_and_quality_clear(
    engine: Engine, store: ArtefactStore
) -> None:
    stable, candidate = versions(store)
    traffic(engine, store, texts=12, disagree=1, feedback=12, truth=["python", "pandas"])
    line = decide(store, engine, Policy(min_requests=12, min_agreement=0.9, min_feedback=12))
    assert line.startswith(f"promoted {candidate} (LATEST was {stable}): top-1 agreement 0.917")
    assert store.latest() == candidate and store.candidate() is None
    record = store.promotion(candidate)
    assert record.status == PROMOTED and record.reason.startswith("decide: top-1 agreement")
    assert [h["status"] for h in record.history][-1] == SHADOW


def test_decide_judges_the_current_candidate_on_its_own_rows(
    engine: Engine, store: ArtefactStore
) -> None:
    stable, measured = versions(store)
    traffic(engine, store, texts=10, disagree=5)
    newer = publish(store, "newer")
    store.set_candidate(newer, SHADOW, replace=True, reason="newer one")
    # The newer candidate has no rows of its own yet: the old one's figures decide nothing.
    assert decide(store, engine, Policy(min_requests=10)).startswith("waiting: 0/10 paired")
    assert store.candidate() is not None and store.promotion(measured).status == ABORTED
    with pytest.raises(ArtefactError):
        store.abort_candidate("late", expected=measured)  # how decide's abort is guarded
    assert store.latest() == stable


def test_a_policy_out_of_range_is_one_readable_error() -> None:
    with pytest.raises(ConfigError, match="min_agreement"):
        Policy(min_agreement=1.5)
    with pytest.raises(ConfigError, match="min_requests"):
        Policy(min_requests=0)


def test_tagger_versions_compare_and_decide_on_the_log(
    engine: Engine, store: ArtefactStore, tmp_path: Path
) -> None:
    stable, candidate = versions(store)
    traffic(engine, store, texts=30, feedback=30, truth=["python", "pandas"])
    env = {"TRAINER_DATABASE_URL": str(engine.url)}
    where = ["versions", "--artefacts-dir", str(store.root)]
    shown = tagger(*where, "compare", "--window-s", "600", env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"candidate {candidate} (shadow" in shown.stdout
    assert table(shown.stdout)["paired texts"] == ["30", "30"]
    waiting = tagger(*where, "decide", env=env)
    assert (waiting.returncode, waiting.stdout) == (
        0,
        f"waiting: 30/500 paired texts of "
        f"{candidate} beside {stable} (top-1 agreement 1.000 on 30 paired texts)\n",
    )
    bad = tagger(*where, "decide", "--min-agreement", "2", env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: min_agreement must be in 0..1")
    done = tagger(*where, "decide", "--min-requests", "30", env=env)
    assert done.returncode == 0 and done.stdout.startswith(f"promoted {candidate}")
    assert store.latest() == candidate
