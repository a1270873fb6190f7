"""What the serving side tells its observers, and what of its state they may read.

The model manager and the batcher report events to a :class:`LoadObserver` and a
:class:`BatchObserver`, and the metrics read their state at scrape time through
:class:`ModelState` and :class:`QueueState`. Both directions are typed here, so the metrics
never import the manager or the batcher, nor they the metrics: each side depends on this
module alone. :class:`api.metrics.ApiMetrics` is the one observer today. The live figures
(:class:`LiveState`) and the inference log's queue (:class:`LogQueueState`) are read the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from shared.live import LiveFigures
from shared.predictor import Prediction

# Why a version could not be served: "verification" (the manifest or a checksum) or "load"
# (building or warming up the model). The manager reports them, the metrics label them.
RELOAD_FAILURE_REASONS = ("verification", "load")


class LoadObserver(Protocol):
    """Told of every attempt to load a model version and of how it ended."""

    def observe_reload_attempt(self) -> None:
        """A version is about to be verified, built and warmed up."""

    def observe_reload_failure(self, reason: str) -> None:
        """It could not be served; ``reason`` is one of :data:`RELOAD_FAILURE_REASONS`."""

    def observe_load(self, labels: Sequence[str], seconds: float) -> None:
        """It was swapped in after ``seconds``; ``labels`` are the tags it predicts."""


class BatchObserver(Protocol):
    """Told of every forward pass once its answers are on their way."""

    def observe_batch(
        self, waits: Iterable[float], seconds: float, predictions: Sequence[Prediction]
    ) -> None:
        """Each request's queue wait, the pass's duration, and what it answered."""


class ServedVersion(Protocol):
    """The served model, as far as an observer needs to know it."""

    @property
    def version(self) -> str: ...

    @property
    def loaded_at(self) -> str:
        """When it was loaded (ISO 8601, UTC)."""


class ModelState(Protocol):
    """Which model is served and how loading goes (the model manager is one)."""

    @property
    def current(self) -> ServedVersion | None: ...

    @property
    def precision(self) -> str: ...

    @property
    def latest_error(self) -> str | None:
        """Why ``LATEST`` cannot be read now (None while it can)."""

    @property
    def failed(self) -> Collection[str]:
        """The versions that failed to load and are skipped."""


class QueueCounters(Protocol):
    """Requests the batcher turned away, counted since it started."""

    @property
    def rejected_queue_full(self) -> int: ...

    @property
    def dropped_disconnected(self) -> int: ...


class QueueState(Protocol):
    """How full the batcher's queue is (the inference service is one)."""

    @property
    def waiting_texts(self) -> int: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def stats(self) -> QueueCounters: ...


class LiveVersionState(Protocol):
    """One version's live figures and its reference (``api.live.VersionLive`` is one)."""

    @property
    def figures(self) -> LiveFigures: ...

    @property
    def profile(self) -> Mapping[str, Any] | None: ...

    def tag_rates(self) -> Sequence[tuple[str, float, float | None]]:
        """(tag, live rate, reference rate) of the bounded tag set, "other" last."""


class LiveState(Protocol):
    """The last live figures (``api.live.LiveMonitor`` is one)."""

    @property
    def versions(self) -> Sequence[LiveVersionState]: ...


class LogQueueState(Protocol):
    """How many logged rows wait for the database writer."""

    def queued(self) -> int: ...


# What a rollout's answers and shadow passes count: which route answered, and shadow texts'
# outcomes. The routes and the shadow runner report them, the metrics label them.
ROLLOUT_ROUTES = ("stable", "canary", "pinned")
SHADOW_OUTCOMES = ("scored", "shed")


class RolloutObserver(Protocol):
    """Told of each answer's route and of each shadow pass's outcome and comparisons."""

    def observe_answer(self, route: str) -> None:
        """A prediction request was answered by one of :data:`ROLLOUT_ROUTES`."""

    def observe_shadow(self, outcome: str, texts: int) -> None:
        """``texts`` shadow texts had one of :data:`SHADOW_OUTCOMES`."""

    def observe_agreement(self, top1: bool, jaccard: float, score_delta: float) -> None:
        """One text scored by both versions: the candidate against the served one."""


class CandidatePointer(Protocol):
    """What ``CANDIDATE`` names (:class:`shared.store.Candidate` is one)."""

    @property
    def version(self) -> str: ...

    @property
    def mode(self) -> str: ...


class RolloutState(Protocol):
    """The candidate pointer and the loaded candidate (the model manager is one)."""

    @property
    def rollout(self) -> CandidatePointer | None: ...

    @property
    def candidate(self) -> ServedVersion | None: ...
