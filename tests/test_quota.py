"""Per-key quotas and the fair share of the queue: the token bucket's arithmetic on a clock we
move by hand, the 429s with Retry-After through the API (one key over its quota, the other
still served), and the batcher refusing the caller over its share past half full."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from api.fairness import WaitingTexts
from api.inference import QueueFull
from api.keys import add_key
from api.quota import Quotas, TokenBucket, retry_after
from shared.store import ArtefactStore
from tests.conftest import assert_error, make_client
from tests.test_batching import busy_service


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, capacity=4.0, clock=clock)
    assert [bucket.take(1) for _ in range(4)] == [0, 0, 0, 0]
    assert bucket.take(1) == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take(1) == 0
    clock.now += 100  # refills to the capacity, no further
    assert [bucket.take(1) for _ in range(5)][-1] == pytest.approx(0.5)


def test_more_than_the_capacity_waits_for_a_full_bucket_then_owes_the_rest() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10.0, capacity=20.0, clock=clock)
    assert bucket.take(5) == 0
    assert bucket.take(64) == pytest.approx(0.5)  # needs a full bucket: 5 more tokens
    clock.now += 0.5
    assert bucket.take(64) == 0  # granted, 44 in debt
    assert bucket.take(1) == pytest.approx(4.5)


def test_retry_after_is_whole_seconds_rounded_up_at_least_one() -> None:
    assert [retry_after(s) for s in (0.01, 0.5, 1.0, 1.01, 7.9)] == ["1", "1", "1", "2", "8"]


def test_quotas_are_per_caller_and_zero_is_no_limit() -> None:
    clock = Clock()
    quotas = Quotas(requests_per_s=1, texts_per_s=0, burst_s=2, clock=clock)
    assert [quotas.charge_request("hog") for _ in range(2)] == [0, 0]
    assert quotas.charge_request("hog") == pytest.approx(1.0)
    assert quotas.charge_request("fair") == 0
    assert all(quotas.charge_texts("hog", 64) == 0 for _ in range(100))
    tiny = Quotas(requests_per_s=0.1, texts_per_s=0, burst_s=1, clock=clock)
    assert tiny.charge_request("a") == 0 and tiny.charge_request("a") == pytest.approx(10)


def test_the_api_answers_429_with_retry_after_to_the_key_over_its_quota(
    published: ArtefactStore, tmp_path: Path
) -> None:
    path = tmp_path / "keys"
    hog, fair = add_key(path, "hog"), add_key(path, "fair")
    settings = {"keys_file": path, "quota_requests_per_s": 0.5, "quota_burst_s": 4}
    with make_client(published.root, **settings) as c:
        statuses = [c.get("/tag/status/", headers={"X-API-Key": hog}) for _ in range(3)]
        assert [r.status_code for r in statuses[:2]] == [200, 200]
        body = assert_error(statuses[2], 429, "quota_exceeded")
        assert int(statuses[2].headers["Retry-After"]) == 2 and hog not in body["message"]
        assert c.get("/tag/status/", headers={"X-API-Key": fair}).status_code == 200
        assert c.get("/health", headers={"X-API-Key": hog}).status_code == 200
        metrics = c.get("/metrics", headers={"X-API-Key": fair}).text
    assert 'tagger_quota_rejections_total{key="hog"} 1.0' in metrics
    assert 'tagger_requests_by_key_total{key="hog",status="429"} 1.0' in metrics


def test_texts_are_charged_once_the_body_is_read(published: ArtefactStore, tmp_path: Path) -> None:
    path = tmp_path / "keys"
    key = add_key(path, "reader")
    settings = {"keys_file": path, "quota_texts_per_s": 0.1, "quota_burst_s": 30}
    headers = {"Authorization": f"Bearer {key}"}
    with make_client(published.root, max_texts=4, **settings) as c:
        assert c.post("/predict", json={"texts": ["a b"] * 3}, headers=headers).status_code == 200
        invalid = c.post("/predict", json={"texts": ["a"] * 5}, headers=headers)
        assert_error(invalid, 422, "too_many_texts")  # refused before any charge
        refused = c.post("/predict", json={"texts": ["a b"] * 2}, headers=headers)
        assert_error(refused, 429, "quota_exceeded")
        assert refused.headers["Retry-After"] == "20"  # 2 texts short at 0.1 a second
        form = c.post("/tag/predict/", data={"text": "java"}, headers=headers)
        assert form.status_code == 429


# ---- the fair share of the queue --------------------------------------------------------------
def test_past_half_full_a_caller_gets_at_most_an_equal_share() -> None:
    waiting = WaitingTexts(depth=100)
    waiting.add("hog", 60)
    assert waiting.admits("hog", 40)  # alone, a caller may fill the queue
    waiting.add("fair", 10)
    assert not waiting.admits("hog", 1)  # past half full: 100 / 2 callers each
    assert waiting.admits("fair", 30) and waiting.admits("new", 30)
    assert not waiting.admits("fair", 31)  # the total still bounds everyone
    assert waiting.admits(None, 30)  # keys off: the total only
    waiting.remove("hog", 60)
    assert waiting.by_caller == {"fair": 10} and waiting.total == 10
    waiting.remove("fair", 10)
    assert waiting.by_caller == {} and waiting.total == 0


def test_the_batcher_refuses_the_hog_and_admits_the_others() -> None:
    async def scenario() -> None:
        svc, fake, first = await busy_service(queue_depth=64, max_batch_size=8)
        fair = [svc.submit(["f"] * 8, 1, caller="fair")]
        hog = [svc.submit(["h"] * 8, 1, caller="hog") for _ in range(4)]  # 40 waiting
        with pytest.raises(QueueFull):
            svc.submit(["h"] * 8, 1, caller="hog")  # past half full, over 64 / 2
        fair.append(svc.submit(["f"] * 8, 1, caller="fair"))
        with pytest.raises(QueueFull):
            svc.submit(["x"] * 30, 1)  # the total still bounds everyone
        fake.gate.set()
        await first
        answers = await asyncio.gather(*hog, *fair)
        assert answers[-1].predictions[0].predicted == ["v1:f"]
        assert svc.waiting_texts == 0 and svc._waiting.by_caller == {}
        assert svc.stats.rejected_queue_full == 2
        await svc.close()

    asyncio.run(scenario())
