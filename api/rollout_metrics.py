"""The rollout's metrics: the candidate, which route answered, shadow texts and comparisons.

Labels stay bounded: ``route`` and ``outcome`` are fixed lists (:mod:`api.observe`), ``result``
is agree or disagree, and ``tagger_candidate_info`` has one series (the loaded candidate's
version and mode), removed when the candidate goes. The score change can be negative, so its
histogram has buckets only: OpenMetrics forbids a sum there, and a count without a sum does not
parse (prometheus-client's ``Histogram`` writes one), so it is counted here and exported by the
collector.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from api.observe import ROLLOUT_ROUTES, SHADOW_OUTCOMES, RolloutState

JACCARD_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0)
SCORE_DELTA_BUCKETS = (
    -1.0, -0.5, -0.25, -0.1, -0.05, -0.02, -0.01, 0.0, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class RolloutMetrics:
    """Counters and histograms of the rollout (the :class:`~api.observe.RolloutObserver`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        answers = Counter(
            "tagger_rollout_answers",
            "prediction requests answered, by route (stable: the served version; canary: the "
            "candidate by the canary's share; pinned: the version the request named)",
            ["route"],
            registry=registry,
        )
        shadow = Counter(
            "tagger_shadow_texts",
            "texts of sampled requests for the other loaded version, by outcome (scored, or "
            "shed: queue full, waited over 2 s, version gone)",
            ["outcome"],
            registry=registry,
        )
        top1 = Counter(
            "tagger_rollout_top1_agreement",
            "texts scored by both versions, by whether their top tags agree",
            ["result"],
            registry=registry,
        )
        self.jaccard = Histogram(
            "tagger_rollout_jaccard",
            "Jaccard overlap of the two versions' decided tags, per text scored by both",
            buckets=JACCARD_BUCKETS,
            registry=registry,
        )
        self.score_delta_counts = [0] * (len(SCORE_DELTA_BUCKETS) + 1)  # the last: over 1
        self._answers = {route: answers.labels(route) for route in ROLLOUT_ROUTES}
        self._shadow = {outcome: shadow.labels(outcome) for outcome in SHADOW_OUTCOMES}
        self._agree, self._disagree = top1.labels("agree"), top1.labels("disagree")
        self.state: RolloutState | None = None
        registry.register(RolloutCollector(self))

    def watch(self, state: RolloutState | None) -> None:
        """Export the candidate of ``state`` at each scrape (replacing an earlier one)."""
        self.state = state

    def observe_answer(self, route: str) -> None:
        self._answers[route].inc()

    def observe_shadow(self, outcome: str, texts: int) -> None:
        self._shadow[outcome].inc(texts)

    def observe_agreement(self, top1: bool, jaccard: float, score_delta: float) -> None:
        (self._agree if top1 else self._disagree).inc()
        self.jaccard.observe(jaccard)
        self.score_delta_counts[bisect.bisect_left(SCORE_DELTA_BUCKETS, score_delta)] += 1


class RolloutCollector(Collector):
    """``tagger_candidate_info`` (1 for the loaded candidate, no series without one) and the
    score change's histogram, read at scrape time."""

    def __init__(self, metrics: RolloutMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "tagger_candidate_info",
            "the rollout candidate loaded beside the served version, and its mode (value 1; "
            "absent while there is none)",
            labels=["version", "mode"],
        )
        state = self.metrics.state
        pointer = state.rollout if state is not None else None
        loaded = state.candidate if state is not None else None
        if pointer is not None and loaded is not None and pointer.version == loaded.version:
            info.add_metric([pointer.version, pointer.mode], 1)
        yield info
        delta = HistogramMetricFamily(
            "tagger_rollout_score_delta",
            "the candidate's top score minus the served version's, per text scored by both "
            "(buckets only: no sum below 0)",
            labels=[],
        )
        bounds = [floatToGoString(b) for b in SCORE_DELTA_BUCKETS] + ["+Inf"]
        counts = self.metrics.score_delta_counts
        delta.add_metric([], [(b, float(sum(counts[: i + 1]))) for i, b in enumerate(bounds)], None)
        yield delta
