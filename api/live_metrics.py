"""The live-figure gauges and the inference log's queue, read at scrape time.

Label values stay bounded: ``version`` is one of the few versions the live figures cover
(:data:`api.live.MAX_VERSIONS`), ``metric`` and ``feature`` are fixed lists, and ``tag`` is one
of the version's top 10 tags or ``other`` (the mean rate of the remaining tags).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.observe import LiveState, LogQueueState

QUALITY_METRICS = ("p_at_1", "recall_at_5", "micro_f1")


class LiveCollector(Collector):
    """Gauges of the live figures (``live``) and of the log's queue (``log``), either absent."""

    def __init__(self, live: LiveState | None, log: LogQueueState | None) -> None:
        self.live, self.log = live, log

    def collect(self) -> Iterable[Metric]:
        if self.log is not None:
            yield GaugeMetricFamily(
                "tagger_prediction_log_queue_rows",
                "logged rows waiting for the database writer (API_PREDICTION_LOG_QUEUE at most)",
                value=self.log.queued(),
            )
        if self.live is None:
            return
        rows = GaugeMetricFamily(
            "tagger_live_rows",
            "logged predictions in the live window",
            labels=["version"],
        )
        feedback = GaugeMetricFamily(
            "tagger_live_feedback_rows",
            "logged predictions in the window with feedback",
            labels=["version"],
        )
        quality = GaugeMetricFamily(
            "tagger_live_quality",
            "quality of the decided tags on the window's rows with feedback",
            labels=["version", "metric"],
        )
        reference = GaugeMetricFamily(
            "tagger_reference_quality",
            "the same figures on the version's validation rows (its reference profile)",
            labels=["version", "metric"],
        )
        drift = GaugeMetricFamily(
            "tagger_live_psi",
            "population stability index of the window against the reference, by feature "
            "(top_score, tokens)",
            labels=["version", "feature"],
        )
        live_rate = GaugeMetricFamily(
            "tagger_live_tag_predicted_rate",
            "share of the window's texts each tag was decided for (top 10 tags; other: the "
            "mean of the rest)",
            labels=["version", "tag"],
        )
        reference_rate = GaugeMetricFamily(
            "tagger_reference_tag_predicted_rate",
            "the same share on the validation rows",
            labels=["version", "tag"],
        )
        unknown = GaugeMetricFamily(
            "tagger_live_unknown_feedback_tag_share",
            "share of the feedback tags the version cannot predict",
            labels=["version"],
        )
        for state in self.live.versions:
            f = state.figures
            rows.add_metric([f.version], f.rows)
            feedback.add_metric([f.version], f.feedback_rows)
            for name in QUALITY_METRICS:
                value = getattr(f, name)
                if value is not None:
                    quality.add_metric([f.version, name], value)
            metrics = (state.profile or {}).get("metrics") or {}
            for name in QUALITY_METRICS:
                if metrics.get(name) is not None:
                    reference.add_metric([f.version, name], float(metrics[name]))
            for feature, value in (("top_score", f.psi_top_score), ("tokens", f.psi_tokens)):
                if value is not None:
                    drift.add_metric([f.version, feature], value)
            for tag, live, ref in state.tag_rates():
                live_rate.add_metric([f.version, tag], live)
                if ref is not None:
                    reference_rate.add_metric([f.version, tag], ref)
            if f.unknown_tag_share is not None:
                unknown.add_metric([f.version], f.unknown_tag_share)
        yield from (rows, feedback, quality, reference, drift, live_rate, reference_rate, unknown)
