"""The API's edge: the body limit (read before parsing), inputs a JSON parser accepts,
the OpenAPI document against the routes, and retries of versions that failed to load; and the
Swarm's edge in front of it (deploy/swarm/edge, a real HAProxy): TLS, the public routes only,
per-source limits, buffering, JSON errors, the stats password, and the secrets it needs."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.limits import NOT_BLANK, BodyLimit
from api.model_manager import ModelManager
from shared.store import LATEST_FILE, ArtefactStore
from tests.conftest import (
    REPO,
    assert_error,
    clone_version,
    corrupt,
    free_port,
    make_client,
    wait_for,
)

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


# -- the Swarm edge: deploy/swarm/edge/haproxy.cfg run by a real HAProxy ----------------------
#
# The edge's own files (entrypoint.sh, haproxy.cfg) as the image runs them, on this machine:
# only the listening addresses and the request deadline are changed in a copy, and the
# replicas are one stand-in HTTP server. Needs haproxy (Debian: apt-get install haproxy) and
# openssl (deploy/make-secrets.sh makes the certificate).

EDGE_DIR = REPO / "deploy" / "swarm" / "edge"
HAPROXY_HINT = "install it (Debian/Ubuntu: apt-get install haproxy, as .ci/run does)"
PUBLIC_ROUTES = ["/predict", "/tag/predict/", "/tag/status/", "/feedback", "/health"]


def require_haproxy() -> str:
    """haproxy's path. Without it CI (which sets CI) fails; elsewhere the tests skip."""
    found = shutil.which("haproxy")
    if found is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"haproxy not found, and CI is set: {HAPROXY_HINT}", pytrace=False)
        pytest.skip(f"haproxy not found: {HAPROXY_HINT}")
    return found


class Replica(http.server.BaseHTTPRequestHandler):
    """A stand-in api replica: /ready 200; any other request is counted and answered 200 JSON,
    or with the status its X-Test-Status header names."""

    requests: list[tuple[str, str, int]]  # (method, path, body bytes), set per server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path != "/ready":
            self.requests.append((self.command, self.path, len(body)))
        status = int(self.headers.get("x-test-status") or 200)
        payload = json.dumps(
            {"path": self.path, "request_id": self.headers.get("x-request-id")}
        ).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = answer


class ReplicaServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the edge's health checks hang up without reading the answer


@dataclass
class Edge:
    https: str
    http: str
    stats: str
    ca: Path
    stats_password: str
    replica_requests: list[tuple[str, str, int]]
    https_port: int

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.https, verify=ssl_context(self.ca), timeout=10, **kwargs)


def ssl_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@contextmanager
def running_edge(tmp_path: Path, replica: bool = True, **env: str) -> Iterator[Edge]:
    """The edge on free ports in front of a stand-in replica (or none: a closed port)."""
    haproxy = require_haproxy()
    (tmp_path / "deploy").mkdir()
    shutil.copy(REPO / "deploy" / "make-secrets.sh", tmp_path / "deploy")
    made = subprocess.run(
        ["sh", str(tmp_path / "deploy" / "make-secrets.sh")], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    secrets_dir = tmp_path / "secrets"
    ports = {name: free_port() for name in ("https", "http", "stats", "replica")}
    config = (EDGE_DIR / "haproxy.cfg").read_text()
    for name, port in (("8443", "https"), ("8080", "http"), ("8404", "stats")):
        assert f"bind :{name}" in config
        config = config.replace(f"bind :{name}", f"bind 127.0.0.1:{ports[port]}")
    assert "timeout http-request 10s" in config
    config = config.replace("timeout http-request 10s", "timeout http-request 1s")
    (tmp_path / "haproxy.cfg").write_text(config)

    requests: list[tuple[str, str, int]] = []
    handler = type("Handler", (Replica,), {"requests": requests})
    server = ReplicaServer(("127.0.0.1", ports["replica"]), handler)
    if replica:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    else:
        server.server_close()
    process = subprocess.Popen(
        ["sh", str(EDGE_DIR / "entrypoint.sh")],
        env={
            "PATH": f"{Path(haproxy).parent}:{os.environ['PATH']}",
            "EDGE_SECRETS": str(secrets_dir),
            "EDGE_CONFIG": str(tmp_path / "haproxy.cfg"),
            "EDGE_TLS_PORT": str(ports["https"]),
            "EDGE_API_ADDRESS": f"127.0.0.1:{ports['replica']}",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    edge = Edge(
        https=f"https://localhost:{ports['https']}",
        http=f"http://127.0.0.1:{ports['http']}",
        stats=f"http://127.0.0.1:{ports['stats']}",
        ca=secrets_dir / "edge.crt",
        stats_password=(secrets_dir / "edge-stats-password").read_text().strip(),
        replica_requests=requests,
        https_port=ports["https"],
    )

    def up() -> bool:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            return httpx.get(f"{edge.stats}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, what="the edge did not answer /healthz")
        if replica:  # the first health check of the replica's /ready
            with edge.client() as c:
                wait_for(lambda: c.get("/health").status_code == 200, what="no replica up")
            requests.clear()
        yield edge
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        if replica:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with running_edge(tmp_path_factory.mktemp("edge")) as running:
        yield running


def test_edge_config_checks_with_haproxy(tmp_path: Path) -> None:
    """haproxy -c on the file itself, with what entrypoint.sh sets."""
    haproxy = require_haproxy()
    pem = tmp_path / "edge.pem"
    made = subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=x"),
            *("-keyout", str(pem), "-out", str(tmp_path / "edge.crt")),
        ],
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    pem.write_bytes((tmp_path / "edge.crt").read_bytes() + pem.read_bytes())
    env = {
        "STATS_PASSWORD": "x",
        "EDGE_CERT": str(pem),
        "EDGE_SOURCE_MAX_CONNS": "200",
        "EDGE_SOURCE_DROP_CONNS": "400",
        "EDGE_SOURCE_MAX_REQUESTS_10S": "500",
        "EDGE_TLS_SUFFIX": ":8443",
        "EDGE_API_ADDRESS": "tasks.api:8000",
    }
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(EDGE_DIR / "haproxy.cfg")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_edge_buffers_hold_the_largest_body_the_api_takes() -> None:
    """tune.bufsize fits the API's body limit, headers and the rewrite reserve (arithmetic)."""
    from api.settings import ApiSettings

    config = (EDGE_DIR / "haproxy.cfg").read_text()
    bufsize = int(re.search(r"tune\.bufsize (\d+)", config)[1])  # type: ignore[index]
    maxrewrite = int(re.search(r"tune\.maxrewrite (\d+)", config)[1])  # type: ignore[index]
    assert bufsize - maxrewrite >= ApiSettings().max_body_bytes + 16 * 1024
    assert "option http-buffer-request" in config


def test_edge_frontends_share_the_global_connection_cap() -> None:
    """The https flood cannot take the stats port's share (the container's healthcheck)."""
    sections = re.split(r"^(?=\S)", (EDGE_DIR / "haproxy.cfg").read_text(), flags=re.MULTILINE)
    caps = {
        section.split()[1] if section.startswith("frontend") else "global": int(found[1])
        for section in sections
        if (found := re.search(r"^\s+maxconn (\d+)", section, re.MULTILINE))
    }
    assert set(caps) == {"global", "https", "http", "stats"}
    assert caps["https"] + caps["http"] + caps["stats"] <= caps["global"]


def test_secrets_are_made_once_private_and_in_the_keys_format(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    script = shutil.copy(REPO / "deploy" / "make-secrets.sh", tmp_path / "deploy")
    first = subprocess.run(["sh", str(script)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "secrets"
    names = ["api-key", "api-keys", "edge-stats-password", "edge.crt", "edge.pem"]
    assert sorted(p.name for p in folder.iterdir()) == names
    assert all(stat.S_IMODE((folder / n).stat().st_mode) == 0o600 for n in names)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    key = (folder / "api-key").read_text().strip()
    assert re.fullmatch(r"tgr_[0-9a-f]{64}", key)
    lines = [line for line in (folder / "api-keys").read_text().splitlines() if line[:1] != "#"]
    assert lines == [f"default:{hashlib.sha256(key.encode()).hexdigest()}"]
    certificate = (folder / "edge.crt").read_text()
    assert certificate in (folder / "edge.pem").read_text() and "PRIVATE KEY" not in certificate
    before = {n: (folder / n).read_bytes() for n in names}
    again = subprocess.run(["sh", str(script)], capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout == ""
    assert {n: (folder / n).read_bytes() for n in names} == before


def test_edge_speaks_tls_1_2_or_later_with_the_test_certificate(edge: Edge) -> None:
    port = edge.https_port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ssl_context(edge.ca).wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    old = ssl_context(edge.ca)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):  # the system's CAs do not know it
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")


def test_plain_http_is_redirected_to_https_keeping_the_method(edge: Edge) -> None:
    response = httpx.post(f"{edge.http}/predict?x=1", json={"text": "a"}, timeout=5)
    assert response.status_code == 308
    assert response.headers["location"] == f"https://127.0.0.1:{edge.https_port}/predict?x=1"
    assert edge.replica_requests == []


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/model",
        "/docs",
        "/docs-assets/x.js",
        "/openapi.json",
        "/ready",
        "/predict/../metrics",
        "//metrics",
        "/%6detrics",
        "/PREDICT",
        "/predict/",
    ],
)
def test_edge_answers_404_json_for_every_route_not_public(edge: Edge, path: str) -> None:
    with edge.client() as c:
        response = c.send(c.build_request("GET", path))
    body = assert_error(response, 404, "not_found")
    assert body["request_id"] == response.headers["x-request-id"]
    assert edge.replica_requests == []


@pytest.mark.parametrize("path", PUBLIC_ROUTES)
def test_edge_forwards_public_routes_naming_the_replica_not_its_address(
    edge: Edge, path: str
) -> None:
    edge.replica_requests.clear()
    with edge.client() as c:
        response = c.post(f"{path}?q=1", json={"text": "a"}, headers={"X-Request-ID": "mine-1"})
        replaced = c.post(path, json={"text": "a"}, headers={"X-Request-ID": "bad id!"})
    assert response.status_code == 200
    assert re.fullmatch(r"api([1-9]|1[0-6])", response.headers["x-served-by"])
    assert response.json() == {"path": f"{path}?q=1", "request_id": "mine-1"}
    assert re.fullmatch(r"[0-9a-f-]{36}", replaced.json()["request_id"])
    assert [r[:2] for r in edge.replica_requests] == [("POST", f"{path}?q=1"), ("POST", path)]


def test_a_replica_s_503_is_passed_on_never_retried(edge: Edge) -> None:
    edge.replica_requests.clear()
    with edge.client() as c:
        response = c.post("/predict", json={"text": "a"}, headers={"X-Test-Status": "503"})
    assert response.status_code == 503 and response.json()["path"] == "/predict"
    assert len(edge.replica_requests) == 1


def test_a_body_up_to_the_api_limit_reaches_the_replica_only_when_whole(edge: Edge) -> None:
    """http-buffer-request and tune.bufsize: a 512 KiB body is held at the edge until its last
    byte, then forwarded at once."""
    from api.settings import ApiSettings

    size = ApiSettings().max_body_bytes
    edge.replica_requests.clear()
    with socket.create_connection(("127.0.0.1", edge.https_port), timeout=5) as raw:
        with ssl_context(edge.ca).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(
                b"POST /predict HTTP/1.1\r\nHost: localhost\r\n"
                + f"Content-Length: {size}\r\nContent-Type: application/json\r\n\r\n".encode()
                + b"x" * (size - 1)
            )
            time.sleep(0.3)
            assert edge.replica_requests == []
            tls.sendall(b"x")
            assert tls.recv(64).startswith(b"HTTP/1.1 200")
    assert edge.replica_requests == [("POST", "/predict", size)]


def test_a_body_that_trickles_past_the_deadline_is_a_json_408(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.https_port), timeout=5) as raw:
        with ssl_context(edge.ca).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"application/json" in head
    assert json.loads(body)["error"] == "request_timeout"


def test_stats_need_the_password(edge: Edge) -> None:
    assert httpx.get(f"{edge.stats}/stats", timeout=5).status_code == 401
    wrong = httpx.get(f"{edge.stats}/stats", auth=("admin", "nope"), timeout=5)
    assert wrong.status_code == 401
    right = httpx.get(f"{edge.stats}/stats", auth=("admin", edge.stats_password), timeout=5)
    assert right.status_code == 200 and "api1" in right.text


def test_per_source_request_rate_is_a_json_429_with_retry_after(tmp_path: Path) -> None:
    with running_edge(tmp_path, EDGE_SOURCE_MAX_REQUESTS_10S="20") as edge, edge.client() as c:
        statuses = [c.post("/predict", json={"text": "a"}).status_code for _ in range(25)]
        assert statuses.count(200) >= 18 and statuses[-1] == 429
        response = c.post("/predict", json={"text": "a"})
    assert_error(response, 429, "too_many_requests")
    assert response.headers["retry-after"] == "10"


def test_per_source_connections_beyond_the_limit_get_a_json_429(tmp_path: Path) -> None:
    with running_edge(tmp_path, EDGE_SOURCE_MAX_CONNS="3") as edge:
        held = [edge.client() for _ in range(3)]
        try:
            for c in held:
                assert c.get("/health").status_code == 200  # each keeps its connection
            with edge.client() as extra:
                response = extra.get("/health")
            assert_error(response, 429, "too_many_requests")
            assert response.headers["retry-after"] == "1"
        finally:
            for c in held:
                c.close()


def test_no_replica_ready_is_a_json_503(tmp_path: Path) -> None:
    with running_edge(tmp_path, replica=False) as edge, edge.client() as c:
        response = c.post("/predict", json={"text": "a"})
    assert_error(response, 503, "no_replica_ready")
    assert "/" not in response.json()["message"].replace("/ready", "")


def test_the_edge_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    require_haproxy()
    result = subprocess.run(
        ["sh", str(EDGE_DIR / "entrypoint.sh")],
        env={"PATH": os.environ["PATH"], "EDGE_SECRETS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"edge: no secret {tmp_path}/edge.pem (make secrets, then deploy again)"
    )
