"""What the API exposes and how it bounds slow clients: internal routes only on the internal
port (a real uvicorn on two ports), the body deadline (408), the body budget and the in-flight
cap (503 ``overloaded``), and public error bodies without paths."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.exposure import INTERNAL_PATHS, PUBLIC_PATHS, is_internal_request, is_public_path
from api.limits import SMALL_BODY_BYTES, BodyBudget, BodyLimit
from api.settings import ApiSettings
from shared.store import ArtefactStore
from tests.conftest import assert_error, free_port, make_client, wait_for
from tests.serving import ApiProcess

TIMEOUT_S = 3.0
BUDGET = 64 * 1024
JSON = {"content-type": "application/json"}


# -- helpers: a client that sends its body slowly, over a raw socket ---------------------------


def open_upload(port: int, declared: int, first: bytes) -> socket.socket:
    """A POST /predict that declares ``declared`` body bytes and sends only ``first``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S + 10)
    head = (
        "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + first)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The response on ``sock``, read to the end of the connection (so the server closed it):
    status, headers (lower-case names), JSON body."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def predict_body(size: int) -> bytes:
    """A valid /predict body of about ``size`` bytes (texts of 1,900 characters)."""
    texts = ["python list " + "x" * 1888] * max(1, size // 1904)
    return json.dumps({"texts": texts}).encode()


@pytest.fixture(scope="module")
def two_ports(
    published: ArtefactStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiProcess, str]]:
    """``python -m api`` with an internal port, a short body deadline and a small budget."""
    internal = free_port()
    work = tmp_path_factory.mktemp("two-ports")
    with ApiProcess(
        work,
        published.root,
        API_INTERNAL_PORT=str(internal),
        API_REQUEST_TIMEOUT_S=str(TIMEOUT_S),
        API_BODY_BUFFER_BYTES=str(BUDGET),
    ) as api:
        yield api, f"http://127.0.0.1:{internal}"


# -- the internal port -------------------------------------------------------------------------


@pytest.mark.integration
def test_internal_routes_answer_only_on_the_internal_port(
    two_ports: tuple[ApiProcess, str],
) -> None:
    api, internal = two_ports
    for path in ("/metrics", "/model", "/docs", "/openapi.json", "/docs-assets/swagger-ui.css"):
        assert_error(httpx.get(api.url + path), 404, "not_found")
        assert httpx.get(internal + path).status_code == 200, path
    for url in (api.url, internal):
        answer = httpx.post(f"{url}/predict", json={"text": "spring maven error"})
        assert answer.status_code == 200, answer.text
        for path in ("/health", "/ready", "/tag/status/"):
            assert httpx.get(url + path).status_code == 200, path
    # The public port's 404 is that of any unknown path.
    unknown = httpx.get(f"{api.url}/no-such-route").json()
    hidden = httpx.get(f"{api.url}/model").json()
    assert {k: v for k, v in unknown.items() if k != "request_id"} == {
        k: v for k, v in hidden.items() if k != "request_id"
    }


def test_one_port_serves_every_route_as_today(published: ArtefactStore) -> None:
    with make_client(published.root) as c:
        for path in ("/metrics", "/model", "/docs", "/openapi.json"):
            assert c.get(path).status_code == 200, path
    # TestClient requests arrive on port 80: with another internal port they are public.
    with make_client(published.root, internal_port=9000) as c:
        assert_error(c.get("/model"), 404, "not_found")
        assert c.get("/tag/status/").status_code == 200


def test_which_requests_are_internal() -> None:
    settings = ApiSettings(internal_port=9000)
    assert is_internal_request({"server": ("10.0.0.1", 9000)}, settings)
    assert not is_internal_request({"server": ("10.0.0.1", 8000)}, settings)
    assert not is_internal_request({"server": None}, settings)
    assert not is_internal_request({"server": ("10.0.0.1", 9000)}, ApiSettings())
    assert all(is_public_path(p) for p in PUBLIC_PATHS)
    assert is_public_path("/tag/status") and not is_public_path("/tag/statusx")
    assert not any(is_public_path(p) for p in INTERNAL_PATHS)


def test_the_internal_port_must_differ_from_the_public_one() -> None:
    with pytest.raises(ValueError, match="API_INTERNAL_PORT and API_PORT are both 8000"):
        ApiSettings(internal_port=8000)


def test_not_ready_names_no_path(tmp_path: Path) -> None:
    root = tmp_path / "secret-place" / "artefacts"
    with make_client(root) as c:
        for response in (c.get("/ready"), c.post("/predict", json={"text": "x"})):
            body = assert_error(response, 503, "model_not_ready")
            assert "secret-place" not in response.text and "/" not in body["message"].replace(
                "GET /model", ""
            )


# -- slow bodies: the deadline and the budget ---------------------------------------------------


@pytest.mark.integration
def test_a_body_late_past_the_deadline_is_a_408_and_the_connection_closes(
    two_ports: tuple[ApiProcess, str],
) -> None:
    api, _ = two_ports
    sock = open_upload(api.port, 1000, b'{"text": "')
    started = time.monotonic()
    status, headers, body = read_until_closed(sock)
    waited = time.monotonic() - started
    assert status == 408 and body["error"] == "request_timeout" and body["request_id"]
    assert headers["connection"] == "close"
    assert TIMEOUT_S - 0.5 < waited < TIMEOUT_S + 5


@pytest.mark.integration
def test_a_head_late_past_the_deadline_is_a_408_and_a_silent_connection_is_closed(
    two_ports: tuple[ApiProcess, str],
) -> None:
    api, _ = two_ports
    trickle = socket.create_connection(("127.0.0.1", api.port), timeout=TIMEOUT_S + 10)
    silent = socket.create_connection(("127.0.0.1", api.port), timeout=TIMEOUT_S + 10)
    started = time.monotonic()
    trickle.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\n")
    # A header a byte at a time, never ended; nothing sent once the server may have closed
    # (bytes after its close would be answered with a reset, losing the 408).
    for byte in b"X-Slow: 123456789":
        if time.monotonic() - started > TIMEOUT_S - 0.5:
            break
        trickle.sendall(bytes([byte]))
        time.sleep(0.25)
    status, headers, body = read_until_closed(trickle)
    assert status == 408 and body["error"] == "request_timeout"
    assert headers["connection"] == "close"
    assert silent.recv(1) == b""  # closed with no answer: nothing was asked
    silent.close()
    assert time.monotonic() - started < TIMEOUT_S + 5


@pytest.mark.integration
def test_the_body_budget_refuses_large_bodies_but_not_small_ones(
    two_ports: tuple[ApiProcess, str],
) -> None:
    api, _ = two_ports
    held = [open_upload(api.port, 200_000, b"x" * 30_000) for _ in range(2)]
    time.sleep(0.5)  # both 30,000-byte starts read: 60,000 of the 65,536 bytes held
    try:
        status, headers, body = read_until_closed(open_upload(api.port, 200_000, b"x" * 30_000))
        assert (status, body["error"], headers["retry-after"]) == (503, "overloaded", "1")
        assert headers["connection"] == "close"
        small = httpx.post(f"{api.url}/predict", json={"text": "spring maven error"})
        assert small.status_code == 200, small.text
    finally:
        for sock in held:
            sock.close()
    # Closed uploads give their bytes back: a 30 KB body is read again.
    big = predict_body(30_000)
    assert SMALL_BODY_BYTES < len(big) < BUDGET // 2
    wait_for(
        lambda: httpx.post(f"{api.url}/predict", content=big, headers=JSON).status_code == 200,
        what="the budget was not given back",
    )


def test_the_deadline_and_the_budget_without_a_server() -> None:
    """Pure ASGI: a stalled body is a 408 after the deadline; a small body passes a spent
    budget, a large one is a 503; every byte is given back."""
    called: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append((await receive())["body"])

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def stalled() -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    def body_of(size: int) -> Any:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"x" * size, "more_body": False}

        return receive

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    budget = BodyBudget(BUDGET)
    limit = BodyLimit(app, max_body_bytes=512 * 1024, timeout_s=0.05, budget=budget)
    asyncio.run(limit(scope, stalled, send))
    assert sent[0]["status"] == 408 and called == [] and budget.held == 0

    budget.held = BUDGET  # spent by other requests
    sent.clear()
    asyncio.run(limit(scope, body_of(SMALL_BODY_BYTES), send))
    assert called == [b"x" * SMALL_BODY_BYTES] and budget.held == BUDGET
    asyncio.run(limit(scope, body_of(SMALL_BODY_BYTES + 1), send))
    assert sent[0]["status"] == 503 and len(called) == 1 and budget.held == BUDGET
    assert (b"retry-after", b"1") in sent[0]["headers"]


# -- the in-flight cap --------------------------------------------------------------------------


@pytest.mark.integration
def test_requests_beyond_the_cap_get_a_json_503_but_probes_do_not(
    published: ArtefactStore, tmp_path: Path
) -> None:
    internal = free_port()
    with ApiProcess(
        tmp_path,
        published.root,
        API_INTERNAL_PORT=str(internal),
        API_MAX_CONCURRENCY="3",
        API_REQUEST_TIMEOUT_S="30",
    ) as api:
        held = [open_upload(api.port, 1000, b"{") for _ in range(3)]
        try:
            time.sleep(0.5)
            refused = httpx.post(f"{api.url}/predict", json={"text": "x"})
            assert_error(refused, 503, "overloaded")
            assert refused.headers["retry-after"] == "1"
            assert httpx.get(f"{api.url}/health").status_code == 200
            assert httpx.get(f"{api.url}/ready").status_code == 200
            assert httpx.get(f"http://127.0.0.1:{internal}/metrics").status_code == 200
        finally:
            for sock in held:
                sock.close()
        wait_for(
            lambda: httpx.post(f"{api.url}/predict", json={"text": "x"}).status_code == 200,
            what="the in-flight count did not go down",
        )
        # One server on two sockets stops as one: SIGTERM, a clean shutdown, both ports shut.
        assert api.stop() in (0, -signal.SIGTERM)
        assert "Traceback" not in api.log()
        for port in (api.port, internal):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
