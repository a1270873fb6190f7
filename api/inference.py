"""The one place where requests meet the model: a micro-batching queue in front of it.

Requests put their texts on a bounded queue. One worker takes everything that is waiting
(up to ``max_batch_size`` texts) and runs it as one forward pass on a dedicated thread, never
on the event loop, then hands each caller its own rows. A lone request on an idle server runs
at once; the worker waits up to ``max_wait_ms`` for more texts only under load (others arrived
with it, or the previous batch had several requests and ended moments ago), so batching costs
an idle server nothing while a loaded one does not fall into alternating tiny and full batches.

A batch runs entirely on one model, so every answer names the version that computed it, also
across a hot swap. A job names its target: the served version (None), or a loaded version by
name, either pinned by the caller (:class:`VersionNotLoaded` when it is gone by compute time)
or chosen by the canary (answered by the served version when the candidate is gone). A batch
holds the jobs of one target only; the others keep their places in the queue. A request whose
client went away is dropped before it is computed. When more than ``queue_depth`` texts wait,
new requests are refused with :class:`QueueFull` (the API answers 503 with ``Retry-After``),
and past half full a caller over its fair share is refused too (:mod:`api.fairness`); batches
are still taken in arrival order.

With batching off, each request runs its own forward pass on the same single worker thread
(the naive design; kept for comparison in ``make bench``); the same ``queue_depth`` bound
applies to the texts waiting for that thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from api.busy import BusyMeter
from api.fairness import WaitingTexts
from api.model_manager import LoadedModel, ModelManager
from api.observe import BatchObserver
from shared.predictor import Prediction

log = logging.getLogger(__name__)

# How long after a multi-request batch the server still counts as "under load".
LOAD_MEMORY_S = 0.05


class ModelNotReady(RuntimeError):
    """No model is loaded yet."""


class QueueFull(RuntimeError):
    """Too many texts are waiting; the caller should retry later."""


class VersionNotLoaded(RuntimeError):
    """A request pinned to a version that is not loaded (any more)."""

    def __init__(self, version: str) -> None:
        super().__init__(f"version {version} is not loaded")
        self.version = version


Result = tuple[LoadedModel, list[Prediction]]


class Answer(NamedTuple):
    """A job's predictions, the model that made them, and its forward pass's duration."""

    model: LoadedModel
    predictions: list[Prediction]
    compute_s: float


@dataclass
class _Job:
    texts: list[str]
    top_k: int
    future: asyncio.Future[Answer]
    target: str | None = None  # None: the served version
    pinned: bool = False  # True: that version or VersionNotLoaded; False: else the served one
    caller: str | None = None  # the API key's name, for the fair share of the queue
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str | None, bool]:
        return self.target, self.pinned


@dataclass
class BatchStats:
    """Counters for ``/model``-style introspection and the benchmark."""

    batches: int = 0
    texts: int = 0
    dropped_disconnected: int = 0
    rejected_queue_full: int = 0


class InferenceService:
    def __init__(
        self,
        manager: ModelManager,
        batching: bool = True,
        max_batch_size: int = 32,
        max_wait_ms: float = 10.0,
        queue_depth: int = 1024,
        torch_executor: ThreadPoolExecutor | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.manager = manager
        self.observer = observer  # told of each forward pass
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.queue_depth = queue_depth
        self.stats = BatchStats()
        self.busy = BusyMeter()  # the model thread's load, for the shadow runner
        self._forming = False  # a batch is taken from the queue and not yet handed to the thread
        # One thread runs every forward pass (the app shares it with model loading).
        self._executor = torch_executor or ThreadPoolExecutor(1, thread_name_prefix="torch")
        self._owns_executor = torch_executor is None
        self._jobs: collections.deque[_Job] = collections.deque()
        self._waiting = WaitingTexts(queue_depth)
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._last_batch_jobs = 0
        self._last_batch_end = 0.0

    @property
    def waiting_texts(self) -> int:
        """Texts queued and not yet taken into a batch."""
        return self._waiting.total

    @property
    def served_waiting(self) -> bool:
        """Some request's texts wait for the model thread (queued, or in a forming batch)."""
        return self._waiting.total > 0 or self._forming

    def start(self) -> None:
        if self.batching and self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        _fail(list(self._jobs), ModelNotReady())
        if self._owns_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(
        self,
        texts: Sequence[str],
        top_k: int,
        target: str | None = None,
        pinned: bool = False,
        caller: str | None = None,
    ) -> asyncio.Future[Answer]:
        """Queue ``caller``'s ``texts`` for ``target`` (None: the served version); the future
        resolves to the :class:`Answer`. Raises ModelNotReady or QueueFull (queue full, or the
        caller over its fair share) at once. Cancelling the future withdraws the texts (if
        their batch has not started)."""
        if self.manager.current is None:
            raise ModelNotReady()
        if not self._waiting.admits(caller, len(texts)):
            self.stats.rejected_queue_full += 1
            raise QueueFull()
        if not self.batching:
            return self._submit_alone(list(texts), top_k, target, pinned, caller)
        loop = asyncio.get_running_loop()
        job = _Job(list(texts), top_k, loop.create_future(), target, pinned, caller)
        self._jobs.append(job)
        self._waiting.add(caller, len(job.texts))
        self._wakeup.set()
        return job.future

    async def predict(self, texts: Sequence[str], top_k: int) -> Result:
        """``await submit(...)``: predictions for ``texts`` and the model that made them."""
        answer = await self.submit(texts, top_k)
        return answer.model, answer.predictions

    def model_for(self, target: str | None, pinned: bool) -> LoadedModel:
        """The loaded model a job for ``target`` runs on now (see the module docstring)."""
        served = self.manager.current
        if served is None:
            raise ModelNotReady()
        if target is None:
            return served
        model = self.manager.loaded(target)
        if model is not None:
            return model
        if pinned:
            raise VersionNotLoaded(target)
        return served

    def _submit_alone(
        self, texts: list[str], top_k: int, target: str | None, pinned: bool, caller: str | None
    ) -> asyncio.Future[Answer]:
        """Batching off: this request's own forward pass on the torch thread. Its texts count
        as waiting (against ``queue_depth``) until the thread starts on them, or until they
        are withdrawn."""
        loop = asyncio.get_running_loop()
        self._waiting.add(caller, len(texts))
        counted = True

        def stop_counting(*_: object) -> None:  # on the event loop only, so exactly once
            nonlocal counted
            if counted:
                counted = False
                self._waiting.remove(caller, len(texts))

        def run(model: LoadedModel) -> list[Prediction]:
            loop.call_soon_threadsafe(stop_counting)
            return model.predictor.predict(texts, top_k)

        async def alone() -> Answer:
            model = self.model_for(target, pinned)
            started = self.busy.begin()
            try:
                result = await loop.run_in_executor(self._executor, run, model)
            finally:
                seconds = self.busy.end() - started
            if self.observer is not None:
                self.observer.observe_batch((), seconds, result)
            return Answer(model, result, seconds)

        task = asyncio.ensure_future(alone())
        task.add_done_callback(stop_counting)
        return task

    def _take(self, room: int, key: tuple[str | None, bool] | None) -> list[_Job]:
        """Pop waiting jobs for the batch's ``key`` (target) in arrival order while their texts
        fit in ``room``, dropping withdrawn ones; jobs for other targets keep their places.
        A new batch (``key`` None) takes the first job's target and that job, however many
        texts it has."""
        taken: list[_Job] = []
        passed: list[_Job] = []
        first = key is None
        while self._jobs:
            job = self._jobs[0]
            if job.future.done():  # withdrawn: the client disconnected or gave up
                self._jobs.popleft()
                self._waiting.remove(job.caller, len(job.texts))
                self.stats.dropped_disconnected += 1
                continue
            if key is None:
                key = job.key
            elif job.key != key:
                passed.append(self._jobs.popleft())
                continue
            if len(job.texts) > room and not (first and not taken):
                break
            self._jobs.popleft()
            self._waiting.remove(job.caller, len(job.texts))
            taken.append(job)
            room -= len(job.texts)
        self._jobs.extendleft(reversed(passed))
        return taken

    async def _run(self) -> None:
        while True:
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = self._take(self.max_batch_size, None)
            self._forming = bool(batch)
            try:
                if batch and self.max_wait_s > 0 and self._under_load(batch):
                    await self._top_up(batch)
                if batch:
                    await self._compute(batch)
            except Exception as exc:  # the worker must outlive any one batch
                log.exception("micro-batch failed")
                _fail(batch, exc)
            finally:
                self._forming = False
            self._last_batch_jobs, self._last_batch_end = len(batch), time.monotonic()

    def _under_load(self, batch: list[_Job]) -> bool:
        recent = time.monotonic() - self._last_batch_end < LOAD_MEMORY_S
        return len(batch) > 1 or (self._last_batch_jobs > 1 and recent)

    async def _top_up(self, batch: list[_Job]) -> None:
        """Others arrived together with this batch: let more join for up to max_wait_ms."""
        deadline = batch[0].enqueued + self.max_wait_s
        room = self.max_batch_size - sum(len(j.texts) for j in batch)
        while room > 0 and (delay := deadline - time.monotonic()) > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except TimeoutError:
                return
            more = self._take(room, batch[0].key)
            batch += more
            room -= sum(len(j.texts) for j in more)

    async def _compute(self, batch: list[_Job]) -> None:
        """One forward pass for the whole batch, on the model its target names right now."""
        try:
            model = self.model_for(batch[0].target, batch[0].pinned)
        except (ModelNotReady, VersionNotLoaded) as exc:
            _fail(batch, exc)
            return
        texts = [t for job in batch for t in job.texts]
        top_k = max(job.top_k for job in batch)
        loop = asyncio.get_running_loop()
        started = self.busy.begin()
        self._forming = False
        try:
            results = await loop.run_in_executor(
                self._executor, model.predictor.predict, texts, top_k
            )
        except Exception as exc:
            _fail(batch, exc)
            return
        finally:
            seconds = self.busy.end() - started
        self.stats.batches += 1
        self.stats.texts += len(texts)
        start = 0
        for job in batch:
            rows = results[start : start + len(job.texts)]
            start += len(job.texts)
            if not job.future.done():
                job.future.set_result(Answer(model, [cut(p, job.top_k) for p in rows], seconds))
        if self.observer is not None:
            # Counted once the answers are on their way: the callback runs after the requests'
            # own steps, so recording a batch never delays its answers.
            waits = [started - job.enqueued for job in batch]
            loop.call_soon(self.observer.observe_batch, waits, seconds, results)


def _fail(batch: list[_Job], exc: BaseException) -> None:
    for job in batch:
        if not job.future.done():
            job.future.set_exception(exc)


def cut(prediction: Prediction, top_k: int) -> Prediction:
    """``prediction`` with its ``top_k`` best tags only (a batch runs with its largest top_k)."""
    if len(prediction.tags) <= top_k:
        return prediction
    return replace(prediction, tags=prediction.tags[:top_k])
