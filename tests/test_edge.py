"""The API's edge: the body limit (read before parsing), inputs a JSON parser accepts,
the OpenAPI document against the routes, and retries of versions that failed to load."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.limits import NOT_BLANK, BodyLimit
from api.model_manager import ModelManager
from shared.store import LATEST_FILE, ArtefactStore
from tests.conftest import assert_error, clone_version, corrupt, make_client, wait_for

LIMIT = 4096


@pytest.fixture
def client(published: ArtefactStore) -> Iterator[TestClient]:
    """conftest's client with a small body limit as well."""
    with make_client(published.root, max_body_bytes=LIMIT, max_text_chars=200, max_texts=4) as c:
        yield c


# -- the body limit ---------------------------------------------------------------------------


def test_declared_oversized_body_is_a_json_413(client: TestClient) -> None:
    body = json.dumps({"text": "x" * (LIMIT + 1)}).encode()
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    answer = assert_error(response, 413, "body_too_large")
    assert str(LIMIT) in answer["message"]
    assert response.headers["connection"] == "close"
    # The form route and unknown routes are behind the same limit.
    assert_error(client.post("/tag/predict/", data={"text": "x" * LIMIT}), 413, "body_too_large")


def test_chunked_oversized_body_is_a_json_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers  # really sent chunked
    assert_error(response, 413, "body_too_large")


def test_bodies_within_the_limit_pass(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "spring '
        yield b'maven error"}'

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["predicted"][0] == "java"


def test_the_limit_stops_reading_and_never_calls_the_app() -> None:
    """Pure ASGI: a stream of chunks is read only up to the limit, the app never runs."""
    called: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope)

    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # endless

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    asyncio.run(BodyLimit(app, max_body_bytes=LIMIT)(scope, receive, send))
    assert called == [] and reads == LIMIT // 1000 + 1
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"] == "body_too_large"

    # Declared too large: answered before a single read.
    reads = 0
    sent.clear()
    scope["headers"] = [(b"content-length", b"300000000")]
    asyncio.run(BodyLimit(app, max_body_bytes=LIMIT)(scope, receive, send))
    assert called == [] and reads == 0 and sent[0]["status"] == 413


def test_default_limit_fits_the_largest_request_the_other_limits_allow() -> None:
    from api.settings import ApiSettings

    settings = ApiSettings()
    widest = "\U0001f600" * settings.max_text_chars  # 4 bytes each in UTF-8
    body = json.dumps(
        {"texts": [widest] * settings.max_texts, "top_k": settings.max_top_k}, ensure_ascii=False
    ).encode()
    assert len(body) <= settings.max_body_bytes


# -- inputs a JSON parser accepts -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_text",
    [
        r"\ud800 lone surrogate",  # JSON escapes, sent as is: a lone high surrogate
        r"\udfff",  # a lone low surrogate alone
        r"ok \ud83d\ude00 pair",  # a valid pair: one emoji
        r"\u0000 NUL python",
        r"\u202e\u200f RTL marks java",
        r"\u200b",  # zero-width space only: not white space to Python, empty to the tokenizer
        "emoji \U0001f40d python",
        "\u05e9\u05dc\u05d5\u05dd sql",
        r"\ufeff",
    ],
)
def test_odd_texts_get_an_answer_not_a_500(client: TestClient, raw_text: str) -> None:
    escaped = raw_text.replace('"', '\\"')
    for body in (f'{{"text": "{escaped}"}}', f'{{"texts": ["{escaped}", "sql"]}}'):
        response = client.post(
            "/predict", content=body.encode(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["predicted"]


def test_long_and_odd_bodies_get_documented_4xx(client: TestClient) -> None:
    assert_error(client.post("/predict", json={"text": "x" * 100_000}), 413, "body_too_large")
    assert_error(client.post("/predict", json={"text": "x" * 201}), 413, "text_too_long")
    for body in (b'{"text": "\xff\xfe"}', b"\xef\xbb\xbf{}", b"[]", b"null", b'"x"', b"1e999"):
        response = client.post(
            "/predict", content=body, headers={"content-type": "application/json"}
        )
        assert_error(response, 422, "invalid_request")
    for payload in ({"text": None}, {"text": None, "texts": ["a"]}, {"texts": None}):
        assert_error(client.post("/predict", json=payload), 422, "invalid_request")
    broken_form = client.post(
        "/tag/predict/",
        content=b"--x\r\nContent-Disposition: form-data",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert broken_form.status_code == 422, broken_form.text


def test_a_lone_surrogate_does_not_fail_the_batch_it_shares(client: TestClient) -> None:
    body = b'{"texts": ["\\ud800", "spring maven error"]}'
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json()["predictions"][1]["predicted"][0] == "java"


# -- the OpenAPI document ---------------------------------------------------------------------


def test_openapi_states_what_is_accepted_and_every_answer(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    request = spec["components"]["schemas"]["PredictRequest"]
    assert request["oneOf"] == [{"required": ["text"]}, {"required": ["texts"]}]
    assert request["additionalProperties"] is False
    text = request["properties"]["text"]
    assert text == {
        **text,
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": NOT_BLANK,
    }
    texts = request["properties"]["texts"]
    assert texts["type"] == "array" and texts["minItems"] == 1 and texts["maxItems"] == 4
    assert texts["items"]["maxLength"] == 200
    form_ref = spec["paths"]["/tag/predict/"]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"
    ]["schema"]["$ref"]
    form = spec["components"]["schemas"][form_ref.rsplit("/", 1)[-1]]
    assert form["properties"]["text"]["minLength"] == 1
    for path in ("/predict", "/tag/predict/"):
        assert {"200", "413", "422", "500", "503"} <= set(spec["paths"][path]["post"]["responses"])
    assert {"200", "500", "503"} <= set(spec["paths"]["/ready"]["get"]["responses"])
    assert "400" not in json.dumps(spec["paths"])


# -- retries of versions that failed to load --------------------------------------------------


def mend(store: ArtefactStore, version: str, original: bytes) -> None:
    (store.root / version / "model.safetensors").write_bytes(original)


def test_failed_version_is_retried_with_backoff_and_reported(store_copy: ArtefactStore) -> None:
    good = store_copy.latest()
    assert good is not None
    bad = clone_version(store_copy, good)
    original = corrupt(store_copy, bad)

    clock = [0.0]
    manager = ModelManager(store_copy, retry_initial_s=5, retry_max_s=12, clock=lambda: clock[0])

    async def main() -> None:
        await manager.start()
        (store_copy.root / LATEST_FILE).write_text(bad + "\n")
        assert not await manager.refresh()
        failure = manager.failed[bad]
        assert failure.attempts == 1 and "sha256" in failure.error
        assert failure.next_retry_at > failure.last_attempt_at
        clock[0] = 4.9
        assert not await manager.refresh() and manager.failed[bad].attempts == 1  # too soon
        clock[0] = 5.0
        assert not await manager.refresh() and manager.failed[bad].attempts == 2  # waits 10 s
        clock[0] = 14.9
        assert not await manager.refresh() and manager.failed[bad].attempts == 2
        clock[0] = 15.0
        assert not await manager.refresh() and manager.failed[bad].attempts == 3  # waits 12 s
        assert manager.failed[bad].retry_after == 27.0  # capped at retry_max_s
        mend(store_copy, bad, original)
        clock[0] = 27.0
        assert await manager.refresh()
        assert manager.current is not None and manager.current.version == bad
        assert bad not in manager.failed

    asyncio.run(main())


def test_moving_latest_to_a_failed_version_retries_it_at_once(store_copy: ArtefactStore) -> None:
    good = store_copy.latest()
    assert good is not None
    bad = clone_version(store_copy, good)
    original = corrupt(store_copy, bad)
    with make_client(store_copy.root, retry_initial_s=3600) as c:
        (store_copy.root / LATEST_FILE).write_text(bad + "\n")
        wait_for(lambda: c.get("/model").json()["failed_versions"] != [])
        (failed,) = c.get("/model").json()["failed_versions"]
        assert failed["version"] == bad and failed["attempts"] == 1
        assert "sha256" in failed["error"] and failed["next_retry_at"] > failed["last_attempt_at"]
        mend(store_copy, bad, original)
        store_copy.set_latest(good)  # roll back, then name the mended version on purpose
        wait_for(lambda: c.get("/model").json()["latest"] == good)
        store_copy.set_latest(bad)
        wait_for(lambda: c.get("/model").json()["version"] == bad)
        assert c.get("/model").json()["failed_versions"] == []


def test_the_documented_blank_pattern_is_pythons_white_space() -> None:
    import re
    import sys

    search = re.compile(NOT_BLANK).search
    assert all((search(chr(c)) is None) == chr(c).isspace() for c in range(sys.maxunicode + 1))


@pytest.mark.parametrize("top_k", [True, "3", 2.5, [1]])
def test_top_k_is_a_json_integer(client: TestClient, top_k: object) -> None:
    assert_error(
        client.post("/predict", json={"text": "a", "top_k": top_k}), 422, "invalid_request"
    )


def test_top_k_may_be_written_as_a_whole_float(client: TestClient) -> None:
    response = client.post("/predict", json={"text": "spring maven", "top_k": 2.0})
    assert response.status_code == 200 and len(response.json()["predictions"][0]["tags"]) == 2
