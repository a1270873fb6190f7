"""Shadow scoring: a sampled share of answered requests scored again by the other loaded version,
off the response path, on the same model thread, only when it has time.

While a rollout is on (a candidate loaded beside the served version, in shadow or canary mode),
each request answered by one of the two (not pinned) is, with the candidate's ``sample``
probability, queued once its answer is sent: its first :data:`MAX_SHADOW_TEXTS` texts, for the
*other* version (the candidate when the served version answered, the served one when the canary
answered). A shadow pass runs only when no request's texts wait for the model thread, no pass
runs on it, and the thread was busy less than ``max_busy`` of the last second; it holds at most
:data:`MAX_SHADOW_TEXTS` texts, so a request arriving meanwhile waits one short pass at most.
The queue is bounded (``max_texts``): the oldest are shed when it is full, and so are texts
waiting over :data:`MAX_AGE_S` or whose version is gone. Shed and scored texts are counted.

Each scored text is compared with its answer (:func:`shared.live.agreement`, always the
candidate against the served version, whichever answered), counted in the metrics and in
``GET /model``, and logged as a ``shadow`` row beside the request's answer rows (when those
were logged), with the pass time. Nothing here can fail a request: errors are logged and the
texts counted as shed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from api.busy import BusyMeter
from api.inference import cut
from api.model_manager import LoadedModel, ModelManager
from api.observe import RolloutObserver
from api.prediction_log import InferenceLog
from shared.live import Agreement, agreement
from shared.predictor import Prediction

log = logging.getLogger(__name__)

MAX_SHADOW_TEXTS = 16  # texts per request queued, and per shadow pass
MAX_AGE_S = 2.0  # older queued texts are shed
POLL_S = 0.005  # how often a waiting shadow pass looks again whether the thread is free


@dataclass
class ShadowStats:
    """Counts since start, for ``GET /model``."""

    scored: int = 0  # texts scored by a shadow pass
    shed: int = 0  # texts dropped: queue full, too old, version gone, pass failed
    compared: int = 0
    top1_agreed: int = 0
    jaccard_sum: float = 0.0
    score_delta_sum: float = 0.0

    def add(self, found: Agreement) -> None:
        self.compared += 1
        self.top1_agreed += found.top1
        self.jaccard_sum += found.jaccard
        self.score_delta_sum += found.score_delta


@dataclass
class ShadowJob:
    """A request's texts to score on ``other``, with the answer to compare them with."""

    request_id: str
    texts: list[str]
    top_k: int
    answer: list[Prediction]
    other: str  # the version that scores them
    candidate_answered: bool  # True: the canary answered and ``other`` is the served version
    logged: bool  # the answer rows were logged: log the shadow rows too
    enqueued: float = field(default_factory=time.monotonic)


class ShadowRunner:
    """The shadow queue and the task that drains it (see the module docstring)."""

    def __init__(
        self,
        manager: ModelManager,
        executor: Executor,
        busy: BusyMeter,
        served_waiting: Callable[[], bool],
        inference_log: InferenceLog | None = None,
        observer: RolloutObserver | None = None,
        max_busy: float = 0.8,
        max_texts: int = 256,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.manager, self.executor, self.busy = manager, executor, busy
        self.served_waiting = served_waiting
        self.inference_log, self.observer = inference_log, observer
        self.max_busy, self.max_texts, self.draw = max_busy, max_texts, draw
        self.stats = ShadowStats()
        self._jobs: collections.deque[ShadowJob] = collections.deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued_texts(self) -> int:
        return self._queued

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shadow-runner")

    async def close(self) -> None:
        """Stop; what is queued is dropped (not counted: nothing was refused)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._jobs.clear()
        self._queued = 0

    def job_for(
        self,
        request_id: str,
        texts: Sequence[str],
        top_k: int,
        answered_by: LoadedModel,
        predictions: Sequence[Prediction],
        logged: bool,
    ) -> ShadowJob | None:
        """The shadow job for a request just answered (not pinned), if it is drawn: None when
        no rollout is on or the sample leaves it out."""
        active = self.manager.active_rollout()
        served = self.manager.current
        if active is None or served is None:
            return None
        rollout, candidate = active
        if answered_by.version == served.version:
            other, candidate_answered = candidate.version, False
        elif answered_by.version == candidate.version:
            other, candidate_answered = served.version, True
        else:
            return None
        if rollout.sample <= 0 or self.draw() >= rollout.sample:
            return None
        return ShadowJob(
            request_id,
            list(texts[:MAX_SHADOW_TEXTS]),
            top_k,
            list(predictions[:MAX_SHADOW_TEXTS]),
            other,
            candidate_answered,
            logged,
        )

    def enqueue(self, job: ShadowJob) -> None:
        """Queue ``job`` (after its answer is sent), shedding the oldest beyond ``max_texts``."""
        self._jobs.append(job)
        self._queued += len(job.texts)
        while self._queued > self.max_texts and self._jobs:
            self._shed(self._jobs.popleft())
        self._wakeup.set()

    def _shed(self, job: ShadowJob) -> None:
        self._queued -= len(job.texts)
        self._count("shed", len(job.texts))

    def _count(self, outcome: str, texts: int) -> None:
        if outcome == "shed":
            self.stats.shed += texts
        else:
            self.stats.scored += texts
        if self.observer is not None:
            self.observer.observe_shadow(outcome, texts)

    def _may_run(self) -> bool:
        return not self.served_waiting() and self.busy.idle and self.busy.share() < self.max_busy

    async def _run(self) -> None:
        while True:
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
            oldest = time.monotonic() - MAX_AGE_S
            while self._jobs and self._jobs[0].enqueued < oldest:
                self._shed(self._jobs.popleft())
            if not self._jobs:
                continue
            if not self._may_run():
                await asyncio.sleep(POLL_S)
                continue
            batch = self._take()
            try:
                await self._score(batch)
            except Exception:  # the runner must outlive any one pass
                log.exception("shadow pass failed")
                self._count("shed", sum(len(job.texts) for job in batch))

    def _take(self) -> list[ShadowJob]:
        """The oldest jobs for one version, up to :data:`MAX_SHADOW_TEXTS` texts."""
        batch = [self._jobs.popleft()]
        room = MAX_SHADOW_TEXTS - len(batch[0].texts)
        while self._jobs and self._jobs[0].other == batch[0].other:
            if len(self._jobs[0].texts) > room:
                break
            room -= len(self._jobs[0].texts)
            batch.append(self._jobs.popleft())
        self._queued -= sum(len(job.texts) for job in batch)
        return batch

    async def _score(self, batch: list[ShadowJob]) -> None:
        texts = [text for job in batch for text in job.texts]
        model = self.manager.loaded(batch[0].other)
        if model is None:  # let go since (promoted over, aborted)
            self._count("shed", len(texts))
            return
        top_k = max(job.top_k for job in batch)
        loop = asyncio.get_running_loop()
        started = self.busy.begin()
        try:
            results = await loop.run_in_executor(
                self.executor, model.predictor.predict, texts, top_k
            )
        finally:
            seconds = self.busy.end() - started
        self._count("scored", len(texts))
        start = 0
        for job in batch:
            rows = [cut(p, job.top_k) for p in results[start : start + len(job.texts)]]
            start += len(job.texts)
            self._compare(job, model.version, rows, seconds * 1000)

    def _compare(
        self, job: ShadowJob, version: str, rows: list[Prediction], compute_ms: float
    ) -> None:
        found: list[Agreement] = []
        for answered, shadowed in zip(job.answer, rows, strict=True):
            stable, candidate = (
                (shadowed, answered) if job.candidate_answered else (answered, shadowed)
            )
            one = agreement(
                [(t.tag, t.score) for t in stable.tags],
                stable.predicted,
                [(t.tag, t.score) for t in candidate.tags],
                candidate.predicted,
            )
            found.append(one)
            self.stats.add(one)
            if self.observer is not None:
                self.observer.observe_agreement(one.top1, one.jaccard, one.score_delta)
        if job.logged and self.inference_log is not None:
            self.inference_log.record_shadow(
                job.request_id, job.texts, version, rows, compute_ms, found
            )
