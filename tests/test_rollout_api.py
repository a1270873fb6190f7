"""The rollout in the API: per-target micro-batches, the busy meter, the shadow runner's
scheduling and shedding (fake models); and with real tiny versions through HTTP: the candidate
loaded beside the served version, shadow rows in the SQLite log, canary routing by key, pinning
(200/409/422), promotion without a reload, abort, and a corrupted, unreadable or deleted
candidate never touching the served version."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import api.shadow
from api.busy import BusyMeter
from api.inference import InferenceService, VersionNotLoaded
from api.model_manager import LoadedModel, ModelManager
from api.shadow import MAX_SHADOW_TEXTS, ShadowRunner
from shared.live import canary_share
from shared.predictor import Prediction, TagScore
from shared.store import CANDIDATE_FILE, ArtefactStore, Candidate
from tests.conftest import assert_error, clone_version, corrupt, make_client, wait_for
from tests.test_batching import FakePredictor, loaded, wait_entered
from tests.test_live_api import db_url, flush, rows_of, scrape

STABLE, CANDIDATE = "20260101T000000000Z-aaaaaa", "20260102T000000000Z-bbbbbb"
TITLES = ["How to use pandas with numpy?", "spring maven  error"]


def pointer(mode: str = "shadow", sample: float = 1.0, fraction: float = 0.0) -> Candidate:
    return Candidate(CANDIDATE, mode, sample, fraction, "2026-01-02T00:00:00+00:00", STABLE, "")


def fake_manager(mode: str = "shadow", **kwargs: Any) -> ModelManager:
    """Serving STABLE with CANDIDATE loaded beside it (fake predictors)."""
    manager = ModelManager(ArtefactStore("/nonexistent"))
    manager.current, manager.candidate = loaded(STABLE), loaded(CANDIDATE)
    manager.rollout = pointer(mode, **kwargs)
    return manager


def answered_by(result: Any) -> str:
    return str(result.model.version)


# ---- the micro-batcher's targets -------------------------------------------------------------
def test_a_batch_holds_one_target_and_the_others_keep_their_places() -> None:
    async def scenario() -> None:
        manager = fake_manager()
        svc = InferenceService(manager, max_wait_ms=5)
        svc.start()
        stable: FakePredictor = manager.current.predictor  # type: ignore[union-attr,assignment]
        other: FakePredictor = manager.candidate.predictor  # type: ignore[union-attr,assignment]
        stable.gate.clear()
        first = svc.submit(["a"], 1)
        await wait_entered(stable)
        jobs = [
            svc.submit(["b"], 1),
            svc.submit(["c"], 1, CANDIDATE),
            svc.submit(["d"], 1),
            svc.submit(["e"], 1, CANDIDATE, True),  # pinned: a target of its own
            svc.submit(["f"], 1, CANDIDATE),
        ]
        stable.gate.set()
        results = await asyncio.gather(first, *jobs)
        await svc.close()
        assert stable.batches == [["a"], ["b", "d"]]
        assert other.batches == [["c", "f"], ["e"]]
        assert [answered_by(r) for r in results] == [STABLE, STABLE, CANDIDATE, STABLE] + [
            CANDIDATE
        ] * 2
        assert [r.predictions[0].predicted for r in results[1:3]] == [
            [f"{STABLE}:b"],
            [f"{CANDIDATE}:c"],
        ]
        assert all(r.compute_s > 0 for r in results)

    asyncio.run(scenario())


@pytest.mark.parametrize("batching", [True, False])
def test_a_gone_candidate_answers_canary_jobs_with_the_served_version_and_fails_pinned_ones(
    batching: bool,
) -> None:
    async def scenario() -> None:
        manager = fake_manager("canary", sample=0.0, fraction=0.5)
        svc = InferenceService(manager, batching=batching)
        svc.start()
        manager.candidate = None  # aborted between routing and compute
        canary = await svc.submit(["x"], 1, CANDIDATE)
        assert answered_by(canary) == STABLE
        with pytest.raises(VersionNotLoaded, match=CANDIDATE):
            await svc.submit(["x"], 1, CANDIDATE, True)
        pinned = await svc.submit(["x"], 1, STABLE, True)
        assert answered_by(pinned) == STABLE
        await svc.close()

    asyncio.run(scenario())


def test_the_busy_meter_counts_overlapping_passes_once_over_the_last_second() -> None:
    now = [100.0]
    meter = BusyMeter(clock=lambda: now[0])
    assert meter.idle and meter.share() == 0.0
    meter.begin()
    now[0] += 0.2
    meter.begin()  # queued behind the first
    now[0] += 0.2
    meter.end()
    assert not meter.idle and meter.share() == pytest.approx(0.4)
    now[0] += 0.1
    meter.end()
    assert meter.idle and meter.share() == pytest.approx(0.5)
    now[0] += 0.7  # the window has moved past most of it
    assert meter.share() == pytest.approx(0.3)
    now[0] += 1.0
    assert meter.share() == 0.0


# ---- the shadow runner's scheduling ------------------------------------------------------------
def runner(
    manager: ModelManager, waiting: list[bool], **kwargs: Any
) -> tuple[ShadowRunner, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1)
    shadow = ShadowRunner(manager, executor, BusyMeter(), lambda: waiting[0], **kwargs)
    shadow.start()
    return shadow, executor


async def offer(shadow: ShadowRunner, manager: ModelManager, texts: list[str], rid: str) -> None:
    served = manager.current
    assert served is not None
    answer = served.predictor.predict(texts, 1)
    job = shadow.job_for(rid, texts, 1, served, answer, logged=False)
    assert job is not None
    shadow.enqueue(job)


async def until(condition: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


def test_shadow_passes_wait_for_served_requests_and_cover_the_other_version() -> None:
    async def scenario() -> None:
        manager, waiting = fake_manager(), [True]
        shadow, executor = runner(manager, waiting)
        other: FakePredictor = manager.candidate.predictor  # type: ignore[union-attr,assignment]
        await offer(shadow, manager, [f"t{i}" for i in range(20)], "r1")
        await asyncio.sleep(0.1)
        assert other.batches == [] and shadow.queued_texts == MAX_SHADOW_TEXTS
        waiting[0] = False
        await until(lambda: shadow.stats.scored == MAX_SHADOW_TEXTS)
        assert other.batches == [[f"t{i}" for i in range(MAX_SHADOW_TEXTS)]]
        # The fake versions tag differently: the comparison says so.
        assert shadow.stats.compared == MAX_SHADOW_TEXTS and shadow.stats.top1_agreed == 0
        assert shadow.stats.jaccard_sum == 0.0
        await shadow.close()
        executor.shutdown()

    asyncio.run(scenario())


class ScoredFake(FakePredictor):
    """Tags every text ``python`` with one fixed score, deciding ``tags``."""

    def __init__(self, version: str, score: float, tags: list[str]) -> None:
        super().__init__(version)
        self.score, self.tags = score, tags

    def predict(self, texts: Sequence[str], top_k: int = 5) -> list[Prediction]:
        super().predict(texts, top_k)
        return [Prediction([TagScore("python", self.score)], list(self.tags)) for _ in texts]


def fake_model(version: str, score: float, tags: list[str]) -> LoadedModel:
    return LoadedModel(version, ScoredFake(version, score, tags), {}, {}, {}, "")  # type: ignore[arg-type]


def test_comparisons_are_the_candidate_against_the_served_version_whichever_answered() -> None:
    async def scenario() -> None:
        manager = fake_manager("canary", fraction=0.5)
        manager.current = served = fake_model(STABLE, 0.9, ["python"])
        manager.candidate = canary = fake_model(CANDIDATE, 0.6, ["python", "pandas"])
        shadow, executor = runner(manager, [False])
        stable_job = shadow.job_for("r1", ["x"], 1, served, served.predictor.predict(["x"]), False)
        canary_job = shadow.job_for("r2", ["x"], 1, canary, canary.predictor.predict(["x"]), False)
        assert stable_job is not None and not stable_job.candidate_answered
        assert canary_job is not None and canary_job.candidate_answered
        assert (stable_job.other, canary_job.other) == (CANDIDATE, STABLE)
        shadow.enqueue(stable_job)
        shadow.enqueue(canary_job)
        await until(lambda: shadow.stats.compared == 2)
        stats = shadow.stats
        assert stats.top1_agreed == 2 and stats.jaccard_sum == pytest.approx(1.0)  # 2 x 0.5
        assert stats.score_delta_sum == pytest.approx(2 * (0.6 - 0.9))
        await shadow.close()
        executor.shutdown()

    asyncio.run(scenario())


def test_shadow_texts_are_shed_when_the_model_is_busy_or_the_queue_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api.shadow, "MAX_AGE_S", 0.2)

    async def scenario() -> None:
        manager = fake_manager()
        shadow, executor = runner(manager, [False], max_busy=0.0, max_texts=4)
        for rid in ("r1", "r2", "r3"):
            await offer(shadow, manager, ["x", "y"], rid)
        assert shadow.stats.shed == 2 and shadow.queued_texts == 4  # the oldest made room
        await until(lambda: shadow.stats.shed == 6)  # never ran: waited too long
        assert shadow.stats.scored == 0 and shadow.queued_texts == 0
        await shadow.close()
        executor.shutdown()

    asyncio.run(scenario())


def test_nothing_is_shadowed_without_a_loaded_candidate_or_outside_the_sample() -> None:
    manager = fake_manager(sample=0.5)
    draws = iter([0.7, 0.3])
    shadow = ShadowRunner(manager, ThreadPoolExecutor(1), BusyMeter(), lambda: False)
    shadow.draw = lambda: next(draws)
    served = manager.current
    assert served is not None
    answer = served.predictor.predict(["x"], 1)
    assert shadow.job_for("r", ["x"], 1, served, answer, False) is None  # 0.7 >= 0.5
    job = shadow.job_for("r", ["x"], 1, served, answer, False)
    assert job is not None and job.other == CANDIDATE and not job.candidate_answered
    manager.candidate = None
    assert shadow.job_for("r", ["x"], 1, served, answer, False) is None


def test_the_canary_share_is_ten_percent_within_two_points_and_fixed_per_key() -> None:
    shares = [canary_share(f"key-{i}") for i in range(10_000)]
    assert all(0.0 <= s < 1.0 for s in shares)
    assert abs(sum(s < 0.1 for s in shares) / len(shares) - 0.1) <= 0.02
    assert canary_share("key-1") == canary_share("key-1") != canary_share("key-2")


# ---- through HTTP, with real tiny versions -----------------------------------------------------
@pytest.fixture
def two_versions(store_copy: ArtefactStore) -> tuple[ArtefactStore, str, str]:
    """The store with its served version and a copy of it published beside (same weights)."""
    stable = store_copy.latest()
    assert stable is not None
    return store_copy, stable, clone_version(store_copy, stable)


def model_info(client: TestClient) -> dict[str, Any]:
    return client.get("/model").json()  # type: ignore[no-any-return]


def candidate_loaded(client: TestClient, version: str) -> bool:
    candidate = model_info(client)["candidate"]
    return bool(candidate and candidate["version"] == version and candidate["loaded"])


def post(client: TestClient, headers: dict[str, str] | None = None, **body: Any) -> Any:
    return client.post("/predict", json={"texts": TITLES, **body}, headers=headers or {})


def test_shadow_scores_beside_the_served_version_and_logs_the_comparison(
    two_versions: tuple[ArtefactStore, str, str], tmp_path: Path
) -> None:
    store, stable, cand = two_versions
    store.set_candidate(cand, "shadow", sample=1.0)
    db = tmp_path / "log.db"
    with make_client(store.root, database_url=db_url(db), live_refresh_s=0) as c:
        wait_for(lambda: candidate_loaded(c, cand), what="candidate loaded")
        answer = post(c, {"X-Request-ID": "req-1"})
        assert answer.status_code == 200 and answer.json()["model_version"] == stable
        wait_for(lambda: model_info(c)["shadow"]["scored"] == 2, what="shadow scored")
        info = model_info(c)
        metrics = scrape(c)
        # Shadow -> canary on the same version: the loaded candidate stays (no reload) and
        # a request it answers is scored again by the served version.
        manager: ModelManager = c.app.state.manager  # type: ignore[attr-defined]
        held = manager.candidate
        store.set_candidate(cand, "canary", sample=1.0, fraction=0.99)
        wait_for(lambda: model_info(c)["candidate"]["mode"] == "canary", what="canary")
        assert manager.candidate is held
        key = next(k for k in (f"k{i}" for i in range(100)) if canary_share(k) < 0.99)
        canary = post(c, {"X-Request-ID": "req-2", "X-Rollout-Key": key})
        assert canary.json()["model_version"] == cand
        wait_for(lambda: model_info(c)["shadow"]["scored"] == 4, what="shadow scored")
        flush(c)
    assert info["loaded_versions"] == [stable, cand]
    assert info["candidate"]["mode"] == "shadow" and info["candidate"]["error"] is None
    # A copy of the served weights: every comparison agrees.
    assert info["agreement"] == {
        "compared": 2,
        "top1_rate": 1.0,
        "mean_jaccard": 1.0,
        "mean_score_delta": pytest.approx(0.0, abs=1e-4),
    }
    rows = rows_of(db, "predictions")
    logged = sorted((r["request_id"], r["role"], r["position"], r["version"]) for r in rows)
    assert logged == [
        ("req-1", "answer", 0, stable),
        ("req-1", "answer", 1, stable),
        ("req-1", "shadow", 0, cand),
        ("req-1", "shadow", 1, cand),
        ("req-2", "answer", 0, cand),
        ("req-2", "answer", 1, cand),
        ("req-2", "shadow", 0, stable),
        ("req-2", "shadow", 1, stable),
    ]
    answers = [r for r in rows if r["role"] == "answer"]
    shadows = [r for r in rows if r["role"] == "shadow"]
    assert all(r["compute_ms"] > 0 for r in rows)
    assert all(r["agree_top1"] is None and r["jaccard"] is None for r in answers)
    assert all(r["agree_top1"] == 1 and r["jaccard"] == 1.0 for r in shadows)
    assert all(r["score_delta"] == pytest.approx(0.0, abs=1e-6) for r in shadows)
    assert sorted(r["top_tags"] for r in shadows) == sorted(r["top_tags"] for r in answers)
    assert metrics[("tagger_candidate_info", (("mode", "shadow"), ("version", cand)))] == 1
    assert metrics[("tagger_shadow_texts_total", (("outcome", "scored"),))] == 2
    assert metrics[("tagger_rollout_top1_agreement_total", (("result", "agree"),))] == 2
    assert metrics[("tagger_rollout_answers_total", (("route", "stable"),))] == 1


def test_canary_routes_by_key_and_requests_may_pin_a_loaded_version(
    two_versions: tuple[ArtefactStore, str, str],
) -> None:
    store, stable, cand = two_versions
    store.set_candidate(cand, "canary", sample=0.0, fraction=0.5)
    low = next(k for k in (f"k{i}" for i in range(100)) if canary_share(k) < 0.5)
    high = next(k for k in (f"k{i}" for i in range(100)) if canary_share(k) >= 0.5)
    with make_client(store.root, live_refresh_s=0) as c:
        wait_for(lambda: candidate_loaded(c, cand), what="candidate loaded")
        for _ in range(3):  # the same key, the same version
            assert post(c, {"X-Rollout-Key": low}).json()["model_version"] == cand
            assert post(c, {"X-Rollout-Key": high}).json()["model_version"] == stable
        form = c.post("/tag/predict/", data={"text": "pandas"}, headers={"X-Rollout-Key": low})
        assert form.json()["model_version"] == cand
        # Pinning wins over the canary, by header, by field, or both when they agree.
        pinned = post(c, {"X-Rollout-Key": low, "X-Model-Version": stable})
        assert pinned.json()["model_version"] == stable
        assert post(c, model_version=cand).json()["model_version"] == cand
        same = post(c, {"X-Model-Version": stable}, model_version=stable)
        assert same.json()["model_version"] == stable
        gone = "20200101T000000000Z-0a0b0c"
        body = assert_error(post(c, {"X-Model-Version": gone}), 409, "version_not_loaded")
        assert body["loaded_versions"] == [stable, cand] and gone in body["message"]
        assert body["request_id"]
        assert_error(post(c, model_version=gone), 409, "version_not_loaded")
        assert_error(
            post(c, {"X-Model-Version": stable}, model_version=cand),
            422,
            "conflicting_model_version",
        )
        assert_error(post(c, {"X-Rollout-Key": "k" * 129}), 422, "invalid_request")
        metrics = scrape(c)
        spec = c.get("/openapi.json").json()
    answers = {
        route: metrics[("tagger_rollout_answers_total", (("route", route),))]
        for route in ("stable", "canary", "pinned")
    }
    assert answers == {"stable": 3, "canary": 4, "pinned": 3}
    operation = spec["paths"]["/predict"]["post"]
    assert "409" in operation["responses"]
    assert {p["name"] for p in operation["parameters"]} >= {"X-Model-Version", "X-Rollout-Key"}
    error = spec["components"]["schemas"]["ErrorResponse"]["properties"]
    assert "loaded_versions" in error


def test_promotion_serves_the_loaded_candidate_without_a_reload(
    two_versions: tuple[ArtefactStore, str, str],
) -> None:
    store, stable, cand = two_versions
    store.set_candidate(cand, "canary", sample=0.5, fraction=0.1)
    with make_client(store.root, live_refresh_s=0) as c:
        wait_for(lambda: candidate_loaded(c, cand), what="candidate loaded")
        manager: ModelManager = c.app.state.manager  # type: ignore[attr-defined]
        held = manager.candidate
        attempts = scrape(c)[("tagger_model_reload_attempts_total", ())]
        store.promote_candidate(cand, "live figures cleared the bar")
        wait_for(lambda: model_info(c)["version"] == cand, what="promoted")
        assert manager.current is held  # the same loaded model: no reload
        assert scrape(c)[("tagger_model_reload_attempts_total", ())] == attempts
        info = model_info(c)
        assert info["candidate"] is None and info["loaded_versions"] == [cand]
        assert post(c).json()["model_version"] == cand
        assert_error(post(c, {"X-Model-Version": stable}), 409, "version_not_loaded")
        assert not any(name == "tagger_candidate_info" for name, _ in scrape(c))


def test_abort_lets_the_candidate_go_and_the_served_version_answers_everything(
    two_versions: tuple[ArtefactStore, str, str],
) -> None:
    store, stable, cand = two_versions
    store.set_candidate(cand, "canary", sample=0.0, fraction=0.9)
    with make_client(store.root, live_refresh_s=0) as c:
        wait_for(lambda: candidate_loaded(c, cand), what="candidate loaded")
        store.abort_candidate("agreement too low", expected=cand)
        wait_for(lambda: model_info(c)["candidate"] is None, what="candidate let go")
        assert model_info(c)["loaded_versions"] == [stable]
        for i in range(10):
            assert post(c, {"X-Rollout-Key": f"k{i}"}).json()["model_version"] == stable


def test_a_corrupted_candidate_is_refused_and_the_served_version_untouched(
    two_versions: tuple[ArtefactStore, str, str],
) -> None:
    store, stable, cand = two_versions
    store.set_candidate(cand, "canary", sample=1.0, fraction=0.9)
    corrupt(store, cand)
    with make_client(store.root, live_refresh_s=0) as c:
        wait_for(lambda: (model_info(c)["candidate"] or {}).get("error"), what="refused")
        info = model_info(c)
        assert info["version"] == stable and info["loaded_versions"] == [stable]
        assert info["candidate"]["loaded"] is False and "sha256" in info["candidate"]["error"]
        assert [f["version"] for f in info["failed_versions"]] == [cand]
        for i in range(10):
            assert post(c, {"X-Rollout-Key": f"k{i}"}).json()["model_version"] == stable
        assert model_info(c)["shadow"] == {"scored": 0, "shed": 0, "queued": 0}


def test_an_unreadable_candidate_file_serves_no_candidate(
    two_versions: tuple[ArtefactStore, str, str],
) -> None:
    store, stable, cand = two_versions
    store.set_candidate(cand, "shadow", sample=1.0)
    with make_client(store.root, live_refresh_s=0) as c:
        wait_for(lambda: candidate_loaded(c, cand), what="candidate loaded")
        (store.root / CANDIDATE_FILE).write_text("{not json")
        wait_for(lambda: model_info(c)["candidate_error"], what="candidate error shown")
        info = model_info(c)
        assert "tagger versions abort" in info["candidate_error"]
        assert info["candidate"] is None and info["loaded_versions"] == [stable]
        assert post(c).json()["model_version"] == stable


def test_a_candidate_deleted_under_the_api_is_let_go(
    two_versions: tuple[ArtefactStore, str, str],
) -> None:
    store, stable, cand = two_versions
    store.set_candidate(cand, "canary", sample=0.0, fraction=0.9)
    with make_client(store.root, live_refresh_s=0, retry_initial_s=60) as c:
        wait_for(lambda: candidate_loaded(c, cand), what="candidate loaded")
        shutil.rmtree(store.root / cand)
        wait_for(lambda: model_info(c)["loaded_versions"] == [stable], what="candidate let go")
        assert model_info(c)["candidate"]["error"]  # tried again once, and why it failed
        for i in range(10):
            assert post(c, {"X-Rollout-Key": f"k{i}"}).json()["model_version"] == stable
        assert_error(post(c, {"X-Model-Version": cand}), 409, "version_not_loaded")


def test_shadow_work_is_shed_and_counted_when_the_model_is_busy(
    two_versions: tuple[ArtefactStore, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.shadow, "MAX_AGE_S", 0.2)
    store, stable, cand = two_versions
    store.set_candidate(cand, "shadow", sample=1.0)
    # A busy share of 0 is never below the limit: the model counts as busy throughout.
    with make_client(store.root, live_refresh_s=0, shadow_max_busy=0.0) as c:
        wait_for(lambda: candidate_loaded(c, cand), what="candidate loaded")
        for _ in range(3):
            assert post(c).json()["model_version"] == stable
        wait_for(lambda: model_info(c)["shadow"]["shed"] == 6, what="shadow shed")
        assert model_info(c)["shadow"]["scored"] == 0
        assert scrape(c)[("tagger_shadow_texts_total", (("outcome", "shed"),))] == 6
