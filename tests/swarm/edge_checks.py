"""What make e2e-swarm checks at the edge, from outside, standard library only.

    python3 tests/swarm/edge_checks.py HTTPS_URL HTTP_URL CA_FILE KEY_FILE

- TLS: the handshake succeeds against CA_FILE (the test certificate, made by make secrets),
  at TLS 1.2 or later, and fails against the system's CAs;
- plain http is redirected (308) to the same path on HTTPS_URL;
- the internal routes (/metrics, /model, /docs, /openapi.json) are a JSON 404 even with a key;
- /predict: 401 without a key and with a wrong one (JSON, ``WWW-Authenticate: Bearer``), 200
  with the key as ``Authorization: Bearer`` and as ``X-API-Key``; /health needs none.
One line a check; exit 1 at the first that fails.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
import urllib.parse
from typing import Any

INTERNAL = ("/metrics", "/model", "/docs", "/openapi.json")
BODY = json.dumps({"text": "How to merge two dictionaries in Python?"})


def request(
    url: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request; the status, the headers (lower-case names) and the JSON body (or None)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port
    connection = (
        http.client.HTTPSConnection(host, port, timeout=15, context=context)
        if parts.scheme == "https"
        else http.client.HTTPConnection(host, port, timeout=15)
    )
    try:
        body = BODY if method == "POST" else None
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body, all_headers)
        response = connection.getresponse()
        raw = response.read()
        answer = {k.lower(): v for k, v in response.getheaders()}
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw[:200]
        return response.status, answer, payload
    finally:
        connection.close()


def check(ok: bool, line: str) -> None:
    print(("ok   " if ok else "FAIL ") + line)
    if not ok:
        raise SystemExit(1)


def main(https_url: str, http_url: str, ca_file: str, key_file: str) -> int:
    context = ssl.create_default_context(cafile=ca_file)
    key = open(key_file).read().strip()
    parts = urllib.parse.urlsplit(https_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
            version, cipher = tls.version(), (tls.cipher() or ("?",))[0]
            peer: Any = tls.getpeercert() or {}
            subject = {name: value for rdn in peer.get("subject", ()) for name, value in rdn}
    name = subject.get("commonName")
    check(
        version in ("TLSv1.2", "TLSv1.3"),
        f"TLS handshake with the test certificate: {version}, {cipher}, CN {name}",
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as raw:
        try:
            ssl.create_default_context().wrap_socket(raw, server_hostname=parts.hostname)
            refused = False
        except ssl.SSLCertVerificationError:
            refused = True
    check(refused, "the system's CAs do not trust it (a self-signed test certificate)")

    status, headers, _ = request(http_url, "POST", "/predict?x=1")
    location = headers.get("location")
    check(
        status == 308 and location == f"{https_url}/predict?x=1",
        f"plain http: {status} to {location}",
    )

    bearer = {"Authorization": f"Bearer {key}"}
    for path in INTERNAL:
        status, _, payload = request(https_url, "GET", path, bearer, context)
        error = payload.get("error") if isinstance(payload, dict) else payload
        check(status == 404 and error == "not_found", f"{path} through the edge: {status} {error}")

    for name, headers in (
        ("no key", {}),
        ("a wrong key", {"Authorization": f"Bearer tgr_{'0' * 64}"}),
        ("a wrong X-API-Key", {"X-API-Key": "tgr_wrong"}),
    ):
        status, answer, payload = request(https_url, "POST", "/predict", headers, context)
        error = payload.get("error") if isinstance(payload, dict) else payload
        challenge = answer.get("www-authenticate", "")
        check(
            status == 401 and error == "unauthorized" and challenge.startswith("Bearer"),
            f"/predict with {name}: {status} {error}, WWW-Authenticate {challenge!r}",
        )
        check(key not in json.dumps(payload), "the 401's body does not carry the key")
    for name, headers in (("Bearer", bearer), ("X-API-Key", {"X-API-Key": key})):
        status, answer, payload = request(https_url, "POST", "/predict", headers, context)
        version = payload.get("model_version") if isinstance(payload, dict) else payload
        check(
            status == 200 and bool(version),
            f"/predict with the key ({name}): {status}, {version}, by {answer.get('x-served-by')}",
        )
    status, _, _ = request(https_url, "GET", "/health", None, context)
    check(status == 200, f"/health without a key: {status}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(*sys.argv[1:]))
