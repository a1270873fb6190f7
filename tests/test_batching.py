"""The micro-batcher: coalescing, per-request rows in order, one version per batch across a
hot swap, the queue-full answer, withdrawn requests, and equality with unbatched results."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.inference import InferenceService, ModelNotReady, QueueFull
from api.model_manager import LoadedModel, ModelManager
from api.settings import ApiSettings
from shared.predictor import Prediction, TagScore
from shared.predictor.torch_runner import load_torch_predictor
from shared.store import ArtefactStore


class FakePredictor:
    """Tags each text with ``<version>:<text>``; can hold a forward pass until released."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def predict(self, texts: Sequence[str], top_k: int = 5) -> list[Prediction]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("forward pass failed")
        return [
            Prediction(
                tags=[TagScore(f"{self.version}:{t}", 1.0)]
                + [TagScore(f"x{i}", 0.0) for i in range(top_k - 1)],
                predicted=[f"{self.version}:{t}"],
            )
            for t in texts
        ]


def loaded(version: str) -> LoadedModel:
    return LoadedModel(version, FakePredictor(version), {}, {}, {}, "")  # type: ignore[arg-type]


def service(model: LoadedModel | None, **kwargs: object) -> InferenceService:
    manager = ModelManager(ArtefactStore("/nonexistent"))
    manager.current = model
    svc = InferenceService(manager, **kwargs)  # type: ignore[arg-type]
    svc.start()
    return svc


async def wait_entered(predictor: FakePredictor) -> None:
    while not predictor.entered.is_set():
        await asyncio.sleep(0.005)


async def busy_service(
    **kwargs: object,
) -> tuple[InferenceService, FakePredictor, asyncio.Task[object]]:
    """A service on model v1 whose worker is held inside a forward pass for request "a",
    so that the next requests queue up; release with ``fake.gate.set()``."""
    model = loaded("v1")
    fake: FakePredictor = model.predictor  # type: ignore[assignment]
    svc = service(model, **kwargs)
    fake.gate.clear()
    first = asyncio.create_task(svc.predict(["a"], 1))
    await wait_entered(fake)
    return svc, fake, first  # type: ignore[return-value]


def test_concurrent_requests_share_a_forward_pass_and_get_their_own_rows() -> None:
    async def main() -> None:
        svc, fake, first = await busy_service(max_batch_size=32, max_wait_ms=0)
        others = [asyncio.create_task(svc.predict([f"t{i}", f"u{i}"], 2)) for i in range(10)]
        await asyncio.sleep(0.05)
        fake.gate.set()
        (m1, p1), *rest = await asyncio.gather(first, *others)
        assert m1.version == "v1" and p1[0].predicted == ["v1:a"]
        for i, (_, preds) in enumerate(rest):
            assert [p.predicted for p in preds] == [[f"v1:t{i}"], [f"v1:u{i}"]]
            assert all(len(p.tags) == 2 for p in preds)
        assert [len(b) for b in fake.batches] == [1, 20]
        assert svc.stats.batches == 2
        await svc.close()

    asyncio.run(main())


def test_batches_respect_max_batch_size() -> None:
    async def main() -> None:
        svc, fake, first = await busy_service(max_batch_size=4, max_wait_ms=0)
        rest = [asyncio.create_task(svc.predict([f"t{i}"], 1)) for i in range(10)]
        await asyncio.sleep(0.02)
        fake.gate.set()
        await asyncio.gather(first, *rest)
        assert [len(b) for b in fake.batches] == [1, 4, 4, 2]
        await svc.close()

    asyncio.run(main())


def test_a_lone_request_does_not_wait_for_company() -> None:
    async def main() -> None:
        svc = service(loaded("v1"), max_wait_ms=5000)
        _, preds = await asyncio.wait_for(svc.predict(["solo"], 1), timeout=2)
        assert preds[0].predicted == ["v1:solo"]
        await svc.close()

    asyncio.run(main())


def test_each_batch_runs_on_one_version_across_a_swap() -> None:
    async def main() -> None:
        old, new = loaded("v1"), loaded("v2")
        svc = service(old, max_wait_ms=0)
        fake_old: FakePredictor = old.predictor  # type: ignore[assignment]
        fake_old.gate.clear()
        running = asyncio.create_task(svc.predict(["in-flight"], 1))
        await wait_entered(fake_old)
        queued = [asyncio.create_task(svc.predict([f"q{i}"], 1)) for i in range(5)]
        await asyncio.sleep(0.02)
        svc.manager.current = new  # the hot swap happens while a batch is running
        fake_old.gate.set()
        m, preds = await running
        assert m.version == "v1" and preds[0].predicted == ["v1:in-flight"]
        for i, task in enumerate(queued):
            m, preds = await task
            assert m.version == "v2" and preds[0].predicted == [f"v2:q{i}"]
        await svc.close()

    asyncio.run(main())


def test_full_queue_refuses_new_requests() -> None:
    async def main() -> None:
        svc, fake, first = await busy_service(queue_depth=4, max_wait_ms=0)
        waiting = [asyncio.create_task(svc.predict(["b", "c"], 1)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await svc.predict(["d"], 1)
        assert svc.stats.rejected_queue_full == 1
        fake.gate.set()
        await asyncio.gather(first, *waiting)
        await svc.predict(["e"], 1)  # room again once the queue drained
        await svc.close()

    asyncio.run(main())


def test_withdrawn_requests_are_not_computed() -> None:
    async def main() -> None:
        svc, fake, first = await busy_service(max_wait_ms=0)
        gone = asyncio.create_task(svc.predict(["never"], 1))
        kept = asyncio.create_task(svc.predict(["kept"], 1))
        await asyncio.sleep(0.01)
        gone.cancel()  # what the route does when the client disconnects
        fake.gate.set()
        await first
        await kept
        assert ["never"] not in fake.batches and all("never" not in b for b in fake.batches)
        assert svc.stats.dropped_disconnected == 1
        await svc.close()

    asyncio.run(main())


def test_a_failed_forward_pass_fails_its_batch_only() -> None:
    async def main() -> None:
        svc, fake, first = await busy_service(max_wait_ms=0)
        bad = asyncio.create_task(svc.predict(["boom"], 1))
        await asyncio.sleep(0.01)
        fake.gate.set()
        await first
        with pytest.raises(RuntimeError, match="forward pass failed"):
            await bad
        assert (await svc.predict(["after"], 1))[1][0].predicted == ["v1:after"]
        await svc.close()

    asyncio.run(main())


def test_no_model_is_refused_before_queueing() -> None:
    async def main() -> None:
        svc = service(None)
        with pytest.raises(ModelNotReady):
            await svc.predict(["x"], 1)
        await svc.close()

    asyncio.run(main())


def test_batched_answers_equal_unbatched_ones_with_the_tiny_model(published: ArtefactStore) -> None:
    version = published.latest()
    assert version is not None
    real = LoadedModel(version, load_torch_predictor(published.root / version), {}, {}, {}, "")
    texts = ["pandas numpy", "spring maven error in the jvm build", "sql", "node promise dom"]

    async def run(batching: bool) -> list[list[Prediction]]:
        svc = service(real, batching=batching, max_wait_ms=5)
        results = await asyncio.gather(*(svc.predict([t], 3) for t in texts))
        await svc.close()
        return [preds for _, preds in results]

    batched, single = asyncio.run(run(True)), asyncio.run(run(False))
    for b, s in zip(batched, single, strict=True):
        assert b[0].predicted == s[0].predicted
        assert [t.tag for t in b[0].tags] == [t.tag for t in s[0].tags]
        assert [t.score for t in b[0].tags] == pytest.approx([t.score for t in s[0].tags], abs=1e-5)


def test_queue_full_is_a_json_503_with_retry_after(published: ArtefactStore) -> None:
    settings = ApiSettings(artefacts_dir=Path(published.root))
    with TestClient(create_app(settings)) as client:

        def full(*_: object) -> None:
            raise QueueFull()

        client.app.state.inference.submit = full  # type: ignore[attr-defined]
        response = client.post("/predict", json={"text": "x"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "overloaded"


def test_route_withdraws_work_when_the_client_disconnects() -> None:
    from api.errors import ClientGone
    from api.routes import unless_disconnected

    class GoneRequest:
        async def receive(self) -> dict[str, str]:
            await asyncio.sleep(0.01)
            return {"type": "http.disconnect"}

    async def main() -> None:
        started = asyncio.Event()

        async def slow() -> str:
            started.set()
            await asyncio.sleep(10)
            return "never"

        work = asyncio.ensure_future(slow())
        with pytest.raises(ClientGone):
            await unless_disconnected(GoneRequest(), work)  # type: ignore[arg-type]
        assert started.is_set()
        await asyncio.sleep(0)
        assert work.cancelled()

    asyncio.run(main())


def test_queue_depth_is_enforced_with_batching_off_too() -> None:
    async def main() -> None:
        model = loaded("v1")
        fake: FakePredictor = model.predictor  # type: ignore[assignment]
        svc = service(model, batching=False, queue_depth=2)
        fake.gate.clear()
        running = asyncio.create_task(svc.predict(["a"], 1))
        await wait_entered(fake)  # "a" is on the torch thread: no longer waiting
        waiting = asyncio.create_task(svc.predict(["b", "c"], 1))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await svc.predict(["d"], 1)
        assert svc.stats.rejected_queue_full == 1
        fake.gate.set()
        await asyncio.gather(running, waiting)
        await svc.predict(["e", "f"], 1)  # room again once the queue drained
        await svc.close()

    asyncio.run(main())


def test_withdrawn_requests_free_their_place_with_batching_off() -> None:
    async def main() -> None:
        model = loaded("v1")
        fake: FakePredictor = model.predictor  # type: ignore[assignment]
        svc = service(model, batching=False, queue_depth=2)
        fake.gate.clear()
        running = asyncio.create_task(svc.predict(["a"], 1))
        await wait_entered(fake)
        gone = svc.submit(["b", "c"], 1)
        await asyncio.sleep(0.01)
        gone.cancel()  # what the route does when the client disconnects
        await asyncio.sleep(0.01)
        assert svc.waiting_texts == 0
        fake.gate.set()
        await running
        await svc.close()

    asyncio.run(main())
