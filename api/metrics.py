"""Prometheus metrics of the API, made by prometheus-client (exposition included).

Each app has its own :class:`~prometheus_client.CollectorRegistry`, so several apps in one
process (the tests) never clash. uvicorn runs one worker process, so no multiprocess mode is
needed: a scrape reads this process's own counters.

What happens per request or per batch is counted when it happens (counters, histograms);
what *is* (the served version, the queue depth, the refusals the batcher already counts) is
read at scrape time by :class:`StateCollector`, so it costs the request path nothing. The
model manager and the batcher, their events and their state, are seen only through the
protocols of :mod:`api.observe`: this module never imports them.
Label values are bounded: routes are the matched route's path template ("unmatched" for any
other path), statuses are HTTP codes, tags are the served model's labels.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from api.key_metrics import KeyMetrics
from api.live_metrics import LiveCollector
from api.observe import (
    RELOAD_FAILURE_REASONS,
    LiveState,
    LogQueueState,
    ModelState,
    QueueState,
    RolloutState,
)
from api.rollout_metrics import RolloutMetrics
from shared.predictor import Prediction

# Counters and histograms would each export a "_created" timestamp series too: twice the
# series for nothing the dashboards or alerts here use.
disable_created_metrics()

UNMATCHED_ROUTE = "unmatched"

# Request latency: /predict answers in 5-50 ms on this hardware at low load (fine steps
# there), up to seconds when the queue is long.
LATENCY_BUCKETS = (
    0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.035, 0.04,
    0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
WAIT_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.03, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
TEXT_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (4, 8, 12, 16, 20, 24, 32, 48, 64, 96, 128, 256, 512)
TAGS_PER_TEXT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# Why the inference log dropped rows (shared.inference_log.LogObserver's reasons).
LOG_DROP_REASONS = ("queue_full", "database")


class ApiMetrics:
    """Every metric the API exports, in one registry; the ``observe_*`` methods record events
    (it is the :class:`~api.observe.LoadObserver` and :class:`~api.observe.BatchObserver`, and
    the inference log's :class:`~shared.inference_log.LogObserver`)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

        self.http_requests = Counter(
            "tagger_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "tagger_http_request_duration_seconds",
            "time from receiving a request to the end of its answer, by route and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.texts_per_request = Histogram(
            "tagger_predict_texts_per_request",
            "texts in each prediction request whose body was valid (refused ones included)",
            buckets=TEXT_COUNT_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "tagger_batch_size_texts",
            "texts in each forward pass (a micro-batch, or one request with batching off)",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_wait = Histogram(
            "tagger_batch_wait_seconds",
            "time each request's texts waited in the queue before their forward pass began",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.inference_duration = Histogram(
            "tagger_inference_duration_seconds",
            "duration of each forward pass (tokenizing and scoring a batch)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.input_tokens = Histogram(
            "tagger_input_tokens",
            "tokens of each text the model read ([CLS] and [SEP] included, after truncation)",
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.predicted_top1 = Counter(
            "tagger_predicted_top1",
            "texts scored, by their top-scored tag",
            ["tag"],
            registry=registry,
        )
        self.predicted_per_text = Histogram(
            "tagger_predicted_tags_per_text",
            "tags decided for each text (score at or over the threshold; at least one)",
            buckets=TAGS_PER_TEXT_BUCKETS,
            registry=registry,
        )
        self.reload_attempts = Counter(
            "tagger_model_reload_attempts",
            "attempts to load a model version (the first at start-up included)",
            registry=registry,
        )
        self.reload_successes = Counter(
            "tagger_model_reload_successes",
            "versions loaded, warmed up and swapped in",
            registry=registry,
        )
        self.reload_failures = Counter(
            "tagger_model_reload_failures",
            "versions that could not be served, by reason (verification: manifest or "
            "checksums; load: building or warming up the model)",
            ["reason"],
            registry=registry,
        )
        self.load_duration = Histogram(
            "tagger_model_load_duration_seconds",
            "verification, loading and warm-up of each version that was swapped in",
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.log_written = Counter(
            "tagger_prediction_log_written",
            "predictions written to the inference log",
            registry=registry,
        )
        self.log_dropped = Counter(
            "tagger_prediction_log_dropped",
            "predictions not logged, by reason (queue_full: the writer's queue was full; "
            "database: the database refused the batch or could not be reached)",
            ["reason"],
            registry=registry,
        )
        for reason in RELOAD_FAILURE_REASONS:
            self.reload_failures.labels(reason)
        self._dropped = {reason: self.log_dropped.labels(reason) for reason in LOG_DROP_REASONS}
        # Label children are looked up once per label set, not once per request.
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._top1_children: dict[str, Counter] = {}
        self._state: list[Collector] = []
        self.rollout = RolloutMetrics(registry)  # the rollout's observer
        self.keys = KeyMetrics(registry)

    def watch(
        self,
        model: ModelState,
        queue: QueueState,
        live: LiveState | None = None,
        log: LogQueueState | None = None,
        rollout: RolloutState | None = None,
    ) -> None:
        """Export the state of ``model`` (the manager), ``queue`` (the batcher), ``live`` (the
        live figures), ``log`` (the inference log's queue) and ``rollout`` (the candidate),
        read at each scrape (replacing those of an earlier run of the app's lifespan)."""
        for collector in self._state:
            self.registry.unregister(collector)
        self._state = [StateCollector(model, queue), LiveCollector(live, log)]
        for collector in self._state:
            self.registry.register(collector)
        self.rollout.watch(rollout)

    def render(self, accept: str) -> tuple[bytes, str]:
        """Every metric in the format the ``Accept`` header asks for (the Prometheus text
        format, or OpenMetrics for a Prometheus server that prefers it), and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, texts: int | None
    ) -> None:
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:
            children = (
                self.http_requests.labels(route, method, str(status)),
                self.http_duration.labels(route, method),
            )
            self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if texts is not None:
            self.texts_per_request.observe(texts)

    def observe_batch(
        self, waits: Iterable[float], seconds: float, predictions: Sequence[Prediction]
    ) -> None:
        """One forward pass: each request's queue wait, its duration, and what it answered."""
        for wait in waits:
            self.batch_wait.observe(wait)
        self.batch_size.observe(len(predictions))
        self.inference_duration.observe(seconds)
        for prediction in predictions:
            if prediction.tokens:
                self.input_tokens.observe(prediction.tokens)
            self.predicted_per_text.observe(len(prediction.predicted))
            if prediction.tags:
                self.top1(prediction.tags[0].tag).inc()

    def top1(self, tag: str) -> Counter:
        child = self._top1_children.get(tag)
        if child is None:
            child = self._top1_children[tag] = self.predicted_top1.labels(tag)
        return child

    def rows_written(self, count: int) -> None:
        """The inference log wrote ``count`` rows (its writer thread)."""
        self.log_written.inc(count)

    def rows_dropped(self, count: int, reason: str) -> None:
        """The inference log dropped ``count`` rows, for one of :data:`LOG_DROP_REASONS`."""
        child = self._dropped.get(reason)
        (child or self.log_dropped.labels(reason)).inc(count)

    def observe_reload_attempt(self) -> None:
        """A version is about to be loaded (the first at start-up included)."""
        self.reload_attempts.inc()

    def observe_reload_failure(self, reason: str) -> None:
        """A version could not be served, for one of :data:`RELOAD_FAILURE_REASONS`."""
        self.reload_failures.labels(reason).inc()

    def observe_load(self, labels: Sequence[str], seconds: float) -> None:
        """A version was swapped in; its tags start at 0 so rates are defined from then on."""
        self.reload_successes.inc()
        self.load_duration.observe(seconds)
        for tag in labels:
            self.top1(tag)


class StateCollector(Collector):
    """Gauges (and the batcher's own counters) read from the live objects at scrape time."""

    def __init__(self, model: ModelState, queue: QueueState) -> None:
        self.model, self.queue = model, queue

    def collect(self) -> Iterable[Metric]:
        current = self.model.current
        info = GaugeMetricFamily(
            "tagger_model_info",
            "the served model version and precision (value 1; absent while none is loaded)",
            labels=["version", "precision"],
        )
        if current is not None:
            info.add_metric([current.version, self.model.precision], 1)
        yield info
        yield GaugeMetricFamily(
            "tagger_model_loaded", "1 while a model is served, else 0", value=int(bool(current))
        )
        if current is not None:
            loaded = dt.datetime.fromisoformat(current.loaded_at).timestamp()
            yield GaugeMetricFamily(
                "tagger_model_loaded_timestamp_seconds",
                "when the served version was loaded (Unix time)",
                value=loaded,
            )
        yield GaugeMetricFamily(
            "tagger_model_latest_readable",
            "1 when LATEST names a version (0: it cannot be read; see GET /model)",
            value=int(self.model.latest_error is None),
        )
        yield GaugeMetricFamily(
            "tagger_model_failed_versions",
            "versions that failed to load and are skipped",
            value=len(self.model.failed),
        )
        yield GaugeMetricFamily(
            "tagger_queue_depth_texts",
            "texts waiting for a forward pass",
            value=self.queue.waiting_texts,
        )
        yield GaugeMetricFamily(
            "tagger_queue_capacity_texts",
            "most texts that may wait (API_QUEUE_DEPTH); beyond it requests get 503",
            value=self.queue.queue_depth,
        )
        stats = self.queue.stats
        yield CounterMetricFamily(
            "tagger_requests_refused_overload",
            "requests refused with 503 overloaded because the queue was full",
            value=stats.rejected_queue_full,
        )
        yield CounterMetricFamily(
            "tagger_requests_withdrawn",
            "requests dropped before their forward pass because the client disconnected",
            value=stats.dropped_disconnected,
        )
