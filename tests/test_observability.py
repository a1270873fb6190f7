"""/metrics after a known sequence of requests, request ids, and JSON log lines (in-process)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from api.middleware import ACCESS_LOGGER
from shared.logs import (
    BUFFER_CAPACITY,
    RequestContext,
    flush_logs,
    request_context,
    setup_logging,
)
from shared.store import LATEST_FILE, ArtefactStore
from tests.conftest import clone_version, corrupt, make_client, wait_for

HEX_ID = re.compile(r"[0-9a-f]{32}")


def scrape(client: TestClient) -> list[Sample]:
    """Every sample of GET /metrics, parsed by prometheus_client's own parser."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    found = [s for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0].value


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def test_metrics_after_a_known_sequence(store_copy: ArtefactStore) -> None:
    first = store_copy.latest()
    assert first is not None
    with make_client(store_copy.root, max_text_chars=200, max_texts=4, queue_depth=2) as c:
        manager = c.app.state.manager  # type: ignore[attr-defined]
        ok = c.post("/predict", json={"text": "How to use pandas with numpy?"})
        assert ok.json()["predictions"][0]["tags"][0]["tag"] == "python"
        two = c.post("/predict", json={"texts": ["spring maven error", "mysql join slow"]})
        assert [p["tags"][0]["tag"] for p in two.json()["predictions"]] == ["java", "sql"]
        assert c.post("/predict", json={"text": "x" * 201}).status_code == 413
        assert c.post("/predict", json={"text": ""}).status_code == 422
        # 3 texts never fit a queue of 2: refused at once as overloaded.
        overloaded = c.post("/predict", json={"texts": ["a", "b", "c"]})
        assert overloaded.status_code == 503 and overloaded.json()["error"] == "overloaded"
        assert c.get("/no/such/route/42").status_code == 404

        bad = clone_version(store_copy, first)  # fails verification: skipped, counted
        corrupt(store_copy, bad)
        (store_copy.root / LATEST_FILE).write_text(bad + "\n")
        wait_for(lambda: bad in manager.failed)
        second = clone_version(store_copy, first)  # the hot swap
        store_copy.set_latest(second)
        wait_for(lambda: manager.current.version == second)
        after = c.post("/predict", json={"text": "spring maven error"})
        assert after.json()["model_version"] == second

        samples = scrape(c)
        requests = "tagger_http_requests_total"
        assert value(samples, requests, route="/predict", method="POST", status="200") == 3
        assert value(samples, requests, route="/predict", method="POST", status="413") == 1
        assert value(samples, requests, route="/predict", method="POST", status="422") == 1
        assert value(samples, requests, route="/predict", method="POST", status="503") == 1
        assert value(samples, requests, route="unmatched", method="GET", status="404") == 1
        assert total(samples, requests) == 7  # the scrape itself is counted once it is answered
        latency = "tagger_http_request_duration_seconds"
        assert value(samples, f"{latency}_count", route="/predict", method="POST") == 6
        assert value(samples, f"{latency}_bucket", route="/predict", le="+Inf") == 6
        assert {"0.005", "0.01", "0.02", "0.05"} <= {
            s.labels["le"] for s in samples if s.name == f"{latency}_bucket"
        }
        # texts of the requests whose body was valid: 1 + 2 + 1 (413) + 3 (503) + 1
        assert value(samples, "tagger_predict_texts_per_request_count") == 5
        assert value(samples, "tagger_predict_texts_per_request_sum") == 8
        assert value(samples, "tagger_batch_size_texts_count") == 3  # three forward passes
        assert value(samples, "tagger_batch_size_texts_sum") == 4
        assert value(samples, "tagger_batch_wait_seconds_count") == 3
        assert value(samples, "tagger_inference_duration_seconds_count") == 3
        assert value(samples, "tagger_input_tokens_count") == 4
        assert value(samples, "tagger_predicted_tags_per_text_count") == 4
        top1 = "tagger_predicted_top1_total"
        tags = ("python", "java", "sql", "javascript")
        assert [value(samples, top1, tag=t) for t in tags] == [1, 2, 1, 0]
        assert value(samples, "tagger_requests_refused_overload_total") == 1
        assert value(samples, "tagger_queue_depth_texts") == 0
        assert value(samples, "tagger_queue_capacity_texts") == 2

        assert value(samples, "tagger_model_reload_attempts_total") == 3
        assert value(samples, "tagger_model_reload_successes_total") == 2
        failures = "tagger_model_reload_failures_total"
        assert value(samples, failures, reason="verification") == 1
        assert value(samples, failures, reason="load") == 0
        assert value(samples, "tagger_model_load_duration_seconds_count") == 2
        assert [s.labels for s in samples if s.name == "tagger_model_info"] == [
            {"version": second, "precision": "fp32"}
        ]
        assert value(samples, "tagger_model_loaded") == 1
        assert value(samples, "tagger_model_loaded_timestamp_seconds") > 1.7e9
        assert value(samples, "tagger_model_failed_versions") == 1
        assert value(samples, "tagger_model_latest_readable") == 1
        assert value(samples, "process_resident_memory_bytes") > 0
        assert total(samples, "python_info") == 1

        again = scrape(c)
        assert value(again, requests, route="/metrics", method="GET", status="200") == 1
        assert total(again, requests) == 8


def test_no_model_is_visible_in_metrics(tmp_path: Path) -> None:
    with make_client(tmp_path / "empty") as c:
        samples = scrape(c)
        assert value(samples, "tagger_model_loaded") == 0
        assert not [s for s in samples if s.name == "tagger_model_info"]
        assert value(samples, "tagger_model_reload_attempts_total") == 0


def test_openmetrics_when_the_scraper_asks(client: TestClient) -> None:
    response = client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    names = {family.name for family in openmetrics_families(response.text)}
    assert {"tagger_http_requests", "tagger_model_info", "process_cpu_seconds"} <= names


def test_metrics_off(published: ArtefactStore) -> None:
    with make_client(published.root, metrics=False) as c:
        assert c.get("/metrics").status_code == 404
        assert c.post("/predict", json={"text": "pandas"}).status_code == 200
        assert c.app.state.metrics is None  # type: ignore[attr-defined]


def test_metrics_is_described_but_not_a_route_in_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/metrics" not in spec["paths"]
    assert "GET /metrics" in spec["info"]["description"]


def test_client_request_id_is_echoed_and_in_error_bodies(client: TestClient) -> None:
    ok = client.post("/predict", json={"text": "pandas"}, headers={"X-Request-ID": "client-1.a"})
    assert ok.headers["x-request-id"] == "client-1.a"
    missing = client.get("/nope", headers={"X-Request-ID": "client-2"})
    assert missing.headers["x-request-id"] == "client-2"
    assert missing.json()["request_id"] == "client-2"
    invalid = client.post("/predict", json={"text": ""}, headers={"X-Request-ID": "client-3"})
    assert invalid.json()["request_id"] == "client-3"
    too_long = client.post("/predict", json={"text": "x" * 201}, headers={"X-Request-ID": "c4"})
    assert too_long.status_code == 413 and too_long.json()["request_id"] == "c4"


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 129, "new\nline", "ünï"])
def test_request_id_is_generated_unless_sane(client: TestClient, sent: str | None) -> None:
    headers = {"X-Request-ID": sent.encode("utf-8")} if sent is not None else {}
    response = client.get("/nope", headers=headers)  # type: ignore[arg-type]
    generated = response.headers["x-request-id"]
    assert HEX_ID.fullmatch(generated) and response.json()["request_id"] == generated
    assert client.get("/nope").headers["x-request-id"] != generated


def test_500_carries_the_request_id(client: TestClient) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("secret internals")

    client.app.state.inference.submit = boom  # type: ignore[attr-defined]
    response = client.post("/predict", json={"text": "x"}, headers={"X-Request-ID": "r-500"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "r-500"
    assert response.json()["request_id"] == "r-500"


@contextlib.contextmanager
def logging_to(buffer: io.StringIO, fmt: str = "json", **options: Any) -> Iterator[None]:
    """``setup_logging`` into ``buffer``; the root logger is restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging("info", fmt, stream=buffer, **options)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Route every log record to a buffer as JSON lines, each written when it is logged."""
    buffer = io.StringIO()
    with logging_to(buffer):
        yield buffer


@pytest.fixture
def buffered_log() -> Iterator[io.StringIO]:
    """JSON lines as the API writes them: api.access's info lines wait for a flush."""
    buffer = io.StringIO()
    with logging_to(buffer, buffered=(ACCESS_LOGGER,)):
        yield buffer


def records(buffer: io.StringIO) -> list[dict]:
    lines = buffer.getvalue().splitlines()
    assert lines
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in parsed:
        assert {"time", "level", "logger", "message"} <= set(record), record
    return parsed


def test_json_log_lines_carry_the_request_id(
    published: ArtefactStore, json_log: io.StringIO
) -> None:
    secret_text = "zebra unicorn pandas numpy"
    with make_client(published.root) as c:
        ok = c.post("/predict", json={"text": secret_text}, headers={"X-Request-ID": "log-ok"})
        assert ok.status_code == 200

        def boom(*_: object) -> None:
            raise RuntimeError("secret internals")

        c.app.state.inference.submit = boom  # type: ignore[attr-defined]
        c.post("/predict", json={"text": secret_text}, headers={"X-Request-ID": "log-500"})

    lines = records(json_log)
    assert secret_text not in json_log.getvalue()  # never the texts themselves
    (access_ok,) = [r for r in lines if r.get("request_id") == "log-ok"]
    assert access_ok["logger"] == "api.access" and access_ok["level"] == "INFO"
    assert access_ok["route"] == "/predict" and access_ok["status"] == 200
    assert access_ok["texts"] == 1 and access_ok["model_version"] == published.latest()
    assert isinstance(access_ok["duration_ms"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", access_ok["time"])

    failed = [r for r in lines if r.get("request_id") == "log-500"]
    assert {r["logger"] for r in failed} == {"api.errors", "api.access"}
    (error,) = [r for r in failed if r["logger"] == "api.errors"]
    assert error["level"] == "ERROR" and "RuntimeError" in error["exc_info"]
    (access_500,) = [r for r in failed if r["logger"] == "api.access"]
    assert access_500["status"] == 500 and access_500["texts"] == 1

    # Outside a request: no request id, and the loaded version as a field.
    (serving,) = [r for r in lines if r["message"].startswith("now serving version")]
    assert "request_id" not in serving and serving["model_version"] == published.latest()


def test_probe_routes_are_logged_at_debug(published: ArtefactStore, json_log: io.StringIO) -> None:
    with make_client(published.root) as c:
        c.get("/health")
        c.get("/metrics")
        c.get("/model")
    routes = [r["route"] for r in records(json_log) if r["logger"] == "api.access"]
    assert routes == ["/model"]


def test_publish_log_carries_the_version(store_copy: ArtefactStore, json_log: io.StringIO) -> None:
    source = store_copy.latest()
    assert source is not None
    version = clone_version(store_copy, source)
    (published,) = [r for r in records(json_log) if r["message"].startswith("published version")]
    assert published["version"] == version and published["logger"] == "shared.store.writer"


def messages(buffer: io.StringIO) -> list[str]:
    return [json.loads(line)["message"] for line in buffer.getvalue().splitlines()]


def test_buffered_access_lines_wait_for_a_flush_and_keep_the_order(
    buffered_log: io.StringIO,
) -> None:
    access, other = logging.getLogger(ACCESS_LOGGER), logging.getLogger("api.model_manager")
    access.info("a1")
    access.info("a2")
    assert buffered_log.getvalue() == ""
    other.info("m1")  # a line of another logger goes out at once, after what waited
    assert messages(buffered_log) == ["a1", "a2", "m1"]
    access.info("a3")
    access.warning("a4")  # a warning too
    access.info("a5")
    assert messages(buffered_log) == ["a1", "a2", "m1", "a3", "a4"]
    flush_logs()
    assert messages(buffered_log)[-1] == "a5"
    for i in range(BUFFER_CAPACITY):  # a full buffer is written without waiting
        access.info("b%d", i)
    assert messages(buffered_log)[-1] == f"b{BUFFER_CAPACITY - 1}"
    access.info("c1")
    setup_logging("info", "json", stream=buffered_log)  # a new set-up writes what waited
    assert messages(buffered_log)[-1] == "c1"


def test_a_buffered_line_keeps_the_request_id_of_its_own_request(
    buffered_log: io.StringIO,
) -> None:
    access = logging.getLogger(ACCESS_LOGGER)
    token = request_context.set(RequestContext("first"))
    access.info("in the first request")
    request_context.reset(token)
    access.info("between requests")
    token = request_context.set(RequestContext("second"))
    flush_logs()  # written while another request is served
    request_context.reset(token)
    lines = records(buffered_log)
    assert [r.get("request_id") for r in lines] == ["first", None]


def test_the_api_writes_its_buffered_access_lines_by_the_end(
    published: ArtefactStore, buffered_log: io.StringIO
) -> None:
    # Flushed every minute: within the test, only the app's shutdown writes the line.
    with make_client(published.root, log_flush_s=60) as c:
        assert c.post("/predict", json={"text": "x"}, headers={"X-Request-ID": "buf-1"}).is_success
        assert "buf-1" not in buffered_log.getvalue()
    assert [r["route"] for r in records(buffered_log) if r.get("request_id") == "buf-1"] == [
        "/predict"
    ]


def test_the_api_flushes_its_access_lines_every_api_log_flush_s(
    published: ArtefactStore, buffered_log: io.StringIO
) -> None:
    with make_client(published.root, log_flush_s=0.05) as c:
        assert c.post("/predict", json={"text": "x"}, headers={"X-Request-ID": "buf-2"}).is_success
        wait_for(lambda: "buf-2" in buffered_log.getvalue(), timeout=5)


def test_text_format_shows_the_request_fields() -> None:
    buffer = io.StringIO()
    with logging_to(buffer, "text"):
        logging.getLogger("api.access").info(
            "POST /predict 200", extra={"request_id": "abc", "texts": 2}
        )
    assert re.fullmatch(
        r"\S+ \S+ INFO api\.access: POST /predict 200 \[request_id=abc texts=2\]\n",
        buffer.getvalue(),
    )


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        setup_logging("info", "yaml", stream=io.StringIO())


def test_an_app_can_start_twice(published: ArtefactStore) -> None:
    app = make_client(published.root).app
    for _ in range(2):
        with TestClient(app) as c:
            c.post("/predict", json={"text": "pandas"})
            samples = scrape(c)
    assert value(samples, "tagger_model_loaded") == 1
    assert value(samples, "tagger_model_reload_attempts_total") == 2  # one per start


def test_trainer_log_format_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.logs import UtcJsonFormatter
    from trainer.cli import setup_logging as trainer_logging
    from trainer.config import ConfigError

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        monkeypatch.setenv("TRAINER_LOG_FORMAT", "json")
        trainer_logging("INFO")
        (ours,) = [h for h in root.handlers if h.get_name() == "tagger"]
        assert isinstance(ours.formatter, UtcJsonFormatter)
        monkeypatch.setenv("TRAINER_LOG_FORMAT", "xml")
        with pytest.raises(ConfigError, match="TRAINER_LOG_FORMAT"):
            trainer_logging("INFO")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
