"""The metrics on their own: every tagger_* family's name, type and labels, and the values that
come from the events and the state the serving side shares through api.observe."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from api.live import VersionLive
from api.metrics import ApiMetrics
from shared.live import LiveFigures
from shared.predictor import Prediction, TagScore

# name -> (type, label names): what dashboards and alerts rely on.
FAMILIES = {
    "tagger_http_requests": ("counter", {"route", "method", "status"}),
    "tagger_http_request_duration_seconds": ("histogram", {"route", "method"}),
    "tagger_predict_texts_per_request": ("histogram", set()),
    "tagger_batch_size_texts": ("histogram", set()),
    "tagger_batch_wait_seconds": ("histogram", set()),
    "tagger_inference_duration_seconds": ("histogram", set()),
    "tagger_input_tokens": ("histogram", set()),
    "tagger_predicted_top1": ("counter", {"tag"}),
    "tagger_predicted_tags_per_text": ("histogram", set()),
    "tagger_model_reload_attempts": ("counter", set()),
    "tagger_model_reload_successes": ("counter", set()),
    "tagger_model_reload_failures": ("counter", {"reason"}),
    "tagger_model_load_duration_seconds": ("histogram", set()),
    "tagger_model_info": ("gauge", {"version", "precision"}),
    "tagger_model_loaded": ("gauge", set()),
    "tagger_model_loaded_timestamp_seconds": ("gauge", set()),
    "tagger_model_latest_readable": ("gauge", set()),
    "tagger_model_failed_versions": ("gauge", set()),
    "tagger_queue_depth_texts": ("gauge", set()),
    "tagger_queue_capacity_texts": ("gauge", set()),
    "tagger_requests_refused_overload": ("counter", set()),
    "tagger_requests_withdrawn": ("counter", set()),
    "tagger_prediction_log_written": ("counter", set()),
    "tagger_prediction_log_dropped": ("counter", {"reason"}),
    "tagger_prediction_log_queue_rows": ("gauge", set()),
    "tagger_live_rows": ("gauge", {"version"}),
    "tagger_live_feedback_rows": ("gauge", {"version"}),
    "tagger_live_quality": ("gauge", {"version", "metric"}),
    "tagger_reference_quality": ("gauge", {"version", "metric"}),
    "tagger_live_psi": ("gauge", {"version", "feature"}),
    "tagger_live_tag_predicted_rate": ("gauge", {"version", "tag"}),
    "tagger_reference_tag_predicted_rate": ("gauge", {"version", "tag"}),
    "tagger_live_unknown_feedback_tag_share": ("gauge", {"version"}),
    "tagger_candidate_info": ("gauge", {"version", "mode"}),
    "tagger_rollout_answers": ("counter", {"route"}),
    "tagger_shadow_texts": ("counter", {"outcome"}),
    "tagger_rollout_top1_agreement": ("counter", {"result"}),
    "tagger_rollout_jaccard": ("histogram", set()),
    "tagger_rollout_score_delta": ("histogram", set()),
    "tagger_requests_by_key": ("counter", {"key", "status"}),
    "tagger_quota_rejections": ("counter", {"key"}),
}
LOADED_AT = "2026-01-02T03:04:05+00:00"


@dataclass
class Served:
    version: str
    loaded_at: str


@dataclass
class Model:
    current: Served | None
    precision: str = "int8"
    latest_error: str | None = None
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class Pointer:
    version: str
    mode: str


@dataclass
class Rollout:
    rollout: Pointer | None
    candidate: Served | None


@dataclass
class Counters:
    rejected_queue_full: int = 0
    dropped_disconnected: int = 0


@dataclass
class Queue:
    waiting_texts: int = 0
    queue_depth: int = 64
    stats: Counters = field(default_factory=Counters)


@dataclass
class Live:
    versions: list[VersionLive] = field(default_factory=list)


@dataclass
class Log:
    rows: int = 0

    def queued(self) -> int:
        return self.rows


def figures(version: str, reference: bool = True, **values: object) -> LiveFigures:
    """Figures of ``version``: 200 rows, 60 with feedback, and what ``values`` set."""
    fields: dict[str, object] = {
        "version": version,
        "rows": 200,
        "feedback_rows": 60,
        "p_at_1": 0.5,
        "recall_at_5": 0.75,
        "micro_f1": 0.6,
        "unknown_tag_share": 0.1,
        "no_tag_share": 0.0,
        "unknown_token_rate": 0.01,
        "psi_top_score": 0.3 if reference else None,
        "psi_tokens": 0.02 if reference else None,
        "tag_rates": {"python": (0.5, 0.4), "java": (0.25, 0.3), "sql": (0.1, 0.2)},
        "reference": reference,
        "oldest": None,
        "newest": None,
    }
    fields.update(values)
    return LiveFigures(**fields)  # type: ignore[arg-type]


PROFILE = {"metrics": {"micro_f1": 0.8, "macro_f1": 0.7, "p_at_1": 0.9, "recall_at_5": 0.95}}


def scrape(metrics: ApiMetrics) -> dict[str, tuple[str, dict[tuple, float]]]:
    """tagger_* families: name -> (type, {(sample name, sorted labels): value})."""
    body, _ = metrics.render("")
    return {
        family.name: (
            family.type,
            {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples},
        )
        for family in text_string_to_metric_families(body.decode())
        if family.name.startswith("tagger_")
    }


def test_every_family_keeps_its_name_type_and_labels() -> None:
    metrics = ApiMetrics()
    live = Live([VersionLive(figures("v1"), PROFILE, ["python"])])
    rollout = Rollout(Pointer("v2", "shadow"), Served("v2", LOADED_AT))
    metrics.watch(Model(Served("v1", LOADED_AT)), Queue(), live=live, log=Log(), rollout=rollout)
    metrics.observe_request("/predict", "POST", 200, 0.01, 1)
    metrics.observe_load(["python"], 0.5)
    metrics.observe_batch([0.001], 0.01, [Prediction([TagScore("python", 0.9)], ["python"], 5)])
    metrics.keys.observe("alice", 429)
    metrics.keys.rejected("alice")
    families = scrape(metrics)
    assert set(families) == set(FAMILIES)
    for name, (kind, labels) in FAMILIES.items():
        found = families[name]
        assert found[0] == kind, name
        named = {k for _, sample_labels in found[1] for k, _ in sample_labels} - {"le"}
        assert named == labels, name


def test_events_and_state_are_what_the_metrics_say() -> None:
    metrics = ApiMetrics()
    model = Model(
        Served("v7", LOADED_AT), latest_error="LATEST is empty", failed={"v5": "x", "v6": "y"}
    )
    queue = Queue(waiting_texts=3, stats=Counters(rejected_queue_full=2, dropped_disconnected=5))
    metrics.watch(model, queue)
    for _ in range(3):
        metrics.observe_reload_attempt()
    metrics.observe_reload_failure("load")
    metrics.observe_reload_failure("verification")
    metrics.observe_reload_failure("load")
    metrics.observe_load(["python", "java"], 0.5)
    prediction = Prediction([TagScore("java", 0.8), TagScore("python", 0.1)], ["java"], 7)
    metrics.observe_batch([0.001, 0.002], 0.02, [prediction, prediction])

    values = {name: samples for name, (_, samples) in scrape(metrics).items()}

    def one(family: str, sample: str | None = None, **labels: str) -> float:
        return values[family][(sample or family, tuple(sorted(labels.items())))]

    assert one("tagger_model_reload_attempts", "tagger_model_reload_attempts_total") == 3
    failures = ("tagger_model_reload_failures", "tagger_model_reload_failures_total")
    assert one(*failures, reason="load") == 2
    assert one(*failures, reason="verification") == 1
    top1 = ("tagger_predicted_top1", "tagger_predicted_top1_total")
    assert one(*top1, tag="java") == 2
    assert one(*top1, tag="python") == 0  # present from the load on
    assert one("tagger_model_reload_successes", "tagger_model_reload_successes_total") == 1
    assert one("tagger_model_info", precision="int8", version="v7") == 1
    assert one("tagger_model_loaded") == 1
    stamp = dt.datetime.fromisoformat(LOADED_AT).timestamp()
    assert one("tagger_model_loaded_timestamp_seconds") == stamp
    assert one("tagger_model_latest_readable") == 0
    assert one("tagger_model_failed_versions") == 2
    assert one("tagger_queue_depth_texts") == 3
    assert one("tagger_queue_capacity_texts") == 64
    refused = "tagger_requests_refused_overload"
    assert one(refused, refused + "_total") == 2
    assert one("tagger_requests_withdrawn", "tagger_requests_withdrawn_total") == 5
    assert one("tagger_batch_wait_seconds", "tagger_batch_wait_seconds_count") == 2
    assert one("tagger_batch_size_texts", "tagger_batch_size_texts_sum") == 2
    assert one("tagger_input_tokens", "tagger_input_tokens_sum") == 14
    load = "tagger_model_load_duration_seconds"
    assert one(load, load + "_sum") == 0.5

    model.current, queue.waiting_texts = None, 0  # read again at the next scrape
    values = {name: samples for name, (_, samples) in scrape(metrics).items()}
    assert values["tagger_model_info"] == {}
    assert one("tagger_model_loaded") == 0
    assert "tagger_model_loaded_timestamp_seconds" not in values
    assert one("tagger_queue_depth_texts") == 0


def test_inference_log_and_live_figures() -> None:
    metrics = ApiMetrics()
    log, live = Log(rows=7), Live()
    metrics.watch(Model(Served("v2", LOADED_AT)), Queue(), live=live, log=log)
    metrics.rows_written(40)
    metrics.rows_written(2)
    metrics.rows_dropped(5, "database")
    metrics.rows_dropped(1, "queue_full")
    metrics.rows_dropped(3, "database")
    served = VersionLive(figures("v2"), PROFILE, ["python", "java"])
    old = VersionLive(
        figures("v1", reference=False, micro_f1=None, p_at_1=None, recall_at_5=None),
        None,
        ["python"],
    )
    live.versions = [served, old]

    values = {name: samples for name, (_, samples) in scrape(metrics).items()}

    def one(family: str, sample: str | None = None, **labels: str) -> float:
        return values[family][(sample or family, tuple(sorted(labels.items())))]

    assert one("tagger_prediction_log_written", "tagger_prediction_log_written_total") == 42
    dropped = ("tagger_prediction_log_dropped", "tagger_prediction_log_dropped_total")
    assert one(*dropped, reason="database") == 8
    assert one(*dropped, reason="queue_full") == 1
    assert one("tagger_prediction_log_queue_rows") == 7
    assert one("tagger_live_rows", version="v2") == 200
    assert one("tagger_live_feedback_rows", version="v1") == 60
    assert one("tagger_live_quality", version="v2", metric="micro_f1") == 0.6
    assert one("tagger_live_quality", version="v2", metric="p_at_1") == 0.5
    assert one("tagger_reference_quality", version="v2", metric="micro_f1") == 0.8
    assert one("tagger_reference_quality", version="v2", metric="recall_at_5") == 0.95
    assert one("tagger_live_psi", version="v2", feature="top_score") == 0.3
    assert one("tagger_live_psi", version="v2", feature="tokens") == 0.02
    rate, ref = "tagger_live_tag_predicted_rate", "tagger_reference_tag_predicted_rate"
    assert one(rate, version="v2", tag="java") == 0.25
    assert one(ref, version="v2", tag="python") == 0.4
    assert one(rate, version="v2", tag="other") == 0.1  # the mean of the tags not listed
    assert one(rate, version="v1", tag="other") == (0.25 + 0.1) / 2
    assert one("tagger_live_unknown_feedback_tag_share", version="v2") == 0.1
    # No feedback quality, no reference: those series are absent, not zero.
    assert {labels for _, labels in values["tagger_live_quality"]} == {
        (("metric", m), ("version", "v2")) for m in ("micro_f1", "p_at_1", "recall_at_5")
    }
    assert all(("version", "v1") not in labels for _, labels in values["tagger_live_psi"])
    assert all(("version", "v1") not in labels for _, labels in values["tagger_reference_quality"])


def test_rollout_metrics_count_events_and_drop_the_candidate_series_when_it_goes() -> None:
    metrics = ApiMetrics()
    state = Rollout(Pointer("v2", "canary"), Served("v2", LOADED_AT))
    metrics.watch(Model(Served("v1", LOADED_AT)), Queue(), rollout=state)
    observer = metrics.rollout
    for route in ("stable", "stable", "canary", "pinned"):
        observer.observe_answer(route)
    observer.observe_shadow("scored", 16)
    observer.observe_shadow("shed", 3)
    observer.observe_agreement(True, 1.0, 0.0)
    observer.observe_agreement(False, 0.5, -0.2)
    families = scrape(metrics)
    info = ("tagger_candidate_info", (("mode", "canary"), ("version", "v2")))
    assert families["tagger_candidate_info"][1] == {info: 1.0}
    answers = families["tagger_rollout_answers"][1]
    assert answers[("tagger_rollout_answers_total", (("route", "stable"),))] == 2
    assert answers[("tagger_rollout_answers_total", (("route", "canary"),))] == 1
    texts = families["tagger_shadow_texts"][1]
    assert texts[("tagger_shadow_texts_total", (("outcome", "shed"),))] == 3
    agreement = families["tagger_rollout_top1_agreement"][1]
    assert agreement[("tagger_rollout_top1_agreement_total", (("result", "disagree"),))] == 1
    jaccard = families["tagger_rollout_jaccard"][1]
    assert jaccard[("tagger_rollout_jaccard_sum", ())] == 1.5
    delta = families["tagger_rollout_score_delta"][1]  # buckets only: they go below 0
    assert delta[("tagger_rollout_score_delta_bucket", (("le", "-0.25"),))] == 0
    assert delta[("tagger_rollout_score_delta_bucket", (("le", "-0.1"),))] == 1
    assert delta[("tagger_rollout_score_delta_bucket", (("le", "0.0"),))] == 2
    assert delta[("tagger_rollout_score_delta_bucket", (("le", "+Inf"),))] == 2
    assert {name for name, _ in delta} == {"tagger_rollout_score_delta_bucket"}
    body, _ = metrics.render("application/openmetrics-text; version=1.0.0")
    assert "tagger_rollout_score_delta" in {f.name for f in openmetrics_families(body.decode())}
    state.candidate = None  # loading, failed, or let go: no series
    assert families_of(metrics, "tagger_candidate_info") == {}
    state.candidate, state.rollout = Served("v2", LOADED_AT), None
    assert families_of(metrics, "tagger_candidate_info") == {}


def families_of(metrics: ApiMetrics, name: str) -> dict[tuple, float]:
    return scrape(metrics).get(name, ("", {}))[1]
