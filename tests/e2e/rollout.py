"""The rollout stages of make e2e and make e2e-swarm (issue 21), standard library only.

python3 tests/e2e/rollout.py wait VERSION CANDIDATE MODE URL...
    every URL's /model serves VERSION and names CANDIDATE (loaded) in MODE ("none" and "-"
    for no candidate), within 30 s; prints what each one reports
python3 tests/e2e/rollout.py pin URL STABLE CANDIDATE UNLOADED
    a request pinned to each loaded version (header, body field) is answered by it; one
    pinned to UNLOADED is a JSON 409 naming the loaded ones; header and field disagreeing: 422
python3 tests/e2e/rollout.py keys URL CANDIDATE FRACTION
    40 rollout keys, 3 requests each: a key always lands on one version, and on CANDIDATE
    exactly when canary_share(key) < FRACTION (the documented hash, computed here)
python3 tests/e2e/rollout.py summary LOAD_JSON STABLE CANDIDATE FRACTION
    the load client's phases: answers, failures, versions, p50/p99; zero failed requests,
    every answer from one of the two, the canary share, p99 during the moves against steady

Through the Swarm's edge (https, keys on): E2E_CA_FILE names the CA file to trust and
E2E_API_KEY the key sent as ``Authorization: Bearer``; neither set: plain http, no key.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any

TITLE = "How to merge two dictionaries in Python?"
STEPS = ("shadow", "canary", "promote", "shadow-old", "abort")
# Each step: "STEP-cli" while the operator's CLI runs (a one-off container whose Python start
# shares the API's CPU here), then "STEP-move" from its exit (the pointer moved) until every
# replica reports the change, and 2 s more. The moves are held to P99_LIMIT, the CLI's phases
# printed. ("pause": no requests; the e2e's candidate comes from a training, so no "shadow-*".)
MOVES = tuple(f"{step}-move" for step in STEPS)
CLIS = tuple(f"{step}-cli" for step in STEPS)
PHASES = (
    *("steady", *CLIS[:1], *MOVES[:1], "shadow", CLIS[1], MOVES[1], "canary", CLIS[2], MOVES[2]),
    *("promoted", CLIS[3], MOVES[3], CLIS[4], MOVES[4], "aborted"),
)
P99_LIMIT = 2.0  # p99 during the moves at most this many times the steady p99
CA_FILE = os.environ.get("E2E_CA_FILE")
CONTEXT = ssl.create_default_context(cafile=CA_FILE) if CA_FILE else None
AUTH = (
    {"Authorization": f"Bearer {os.environ['E2E_API_KEY']}"} if "E2E_API_KEY" in os.environ else {}
)


def canary_share(key: str) -> float:
    """The share a rollout key lands on, as the API computes it (docs/rollout.md)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers=AUTH)
    with urllib.request.urlopen(request, timeout=10, context=CONTEXT) as response:
        return json.load(response)


def model_figures(url: str) -> Any:
    """GET /model, or a note where it is internal (404 through the Swarm's edge)."""
    try:
        return get_json(f"{url}/model")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        return {"shadow": "(internal: /model is not served here)", "agreement": None}


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    """POST JSON; the status and the JSON answer (errors included)."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", **AUTH, **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=15, context=CONTEXT) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def predict(url: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
    """POST /predict of the one title, with ``body``'s fields added."""
    return post(f"{url}/predict", {"text": TITLE, **body}, headers)


def reported(url: str) -> tuple[str | None, str | None, str | None, bool]:
    """What /model reports: the served version, the candidate's version, mode, loaded."""
    model = get_json(f"{url}/model")
    candidate = model.get("candidate") or {}
    return (
        model.get("version"),
        candidate.get("version"),
        candidate.get("mode"),
        bool(candidate.get("loaded")),
    )


def wait(version: str, candidate: str, mode: str, urls: list[str]) -> int:
    want_candidate = None if candidate == "none" else candidate
    want_mode = None if mode == "-" else mode
    deadline = time.monotonic() + 30
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = {url: reported(url) for url in urls}
        if all(
            v == version and c == want_candidate and m == want_mode and (loaded or c is None)
            for v, c, m, loaded in seen.values()
        ):
            print(f"every replica ({len(urls)}): serves {version}, candidate {candidate} {mode}")
            return 0
        time.sleep(0.2)
    print(f"after 30 s: {seen} (want {version}, candidate {candidate} {mode})", file=sys.stderr)
    return 1


def pin(url: str, stable: str, candidate: str, unloaded: str) -> int:
    for version in (stable, candidate):
        for headers, body in (({"X-Model-Version": version}, {}), ({}, {"model_version": version})):
            status, answer = predict(url, headers, body)
            assert status == 200, (version, status, answer)
            assert answer["model_version"] == version, (version, answer)
    status, refused = predict(url, {"X-Model-Version": unloaded}, {})
    assert status == 409, (status, refused)
    assert refused["error"] == "version_not_loaded", refused
    assert sorted(refused["loaded_versions"]) == sorted([stable, candidate]), refused
    status, answer = predict(url, {"X-Model-Version": stable}, {"model_version": candidate})
    assert status == 422, (status, answer)
    print(f"pinned: {stable} 200, {candidate} 200 (header and field); {unloaded} 409: {refused}")
    return 0


def keys(url: str, candidate: str, fraction: float) -> int:
    on_candidate = 0
    for i in range(40):
        key = f"e2e-key-{i}"
        answers = {predict(url, {"X-Rollout-Key": key}, {})[1]["model_version"] for _ in range(3)}
        assert len(answers) == 1, (key, answers)
        expected_candidate = canary_share(key) < fraction
        assert (answers == {candidate}) == expected_candidate, (key, canary_share(key), answers)
        on_candidate += expected_candidate
    print(f"40 keys x 3 requests: each on one version; {on_candidate} on {candidate}, as hashed")
    return 0


def light(url: str, tsv: str, count: int, prefix: str) -> int:
    with open(tsv, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[:count]
    before = model_figures(url)
    reports = []
    for i, row in enumerate(rows):
        request_id = f"{prefix}-{i}"
        headers = {"X-Request-ID": request_id}
        status, answer = post(f"{url}/predict", {"text": row["title"]}, headers)
        assert status == 200, (status, answer)
        reports.append({"request_id": request_id, "tags": ast.literal_eval(row["tags"])})
    for report in reports:  # the log's writer flushes every 0.5 s: a 404 until then
        for _ in range(20):
            status, answer = post(f"{url}/feedback", report, {})
            if status != 404:
                break
            time.sleep(0.25)
        assert status == 200, (status, answer)
    time.sleep(1)  # the last shadow passes
    after = model_figures(url)
    print(
        f"/model (the replica that answered it): shadow under the load {before.get('shadow')}; "
        f"after {count} requests one at a time {after.get('shadow')}, agreement "
        f"{after.get('agreement')}"
    )
    return 0


def summary(load_file: str, stable: str, candidate: str, fraction: float) -> int:
    load = json.load(open(load_file))
    phases = load["phases"]
    print(f"{'phase':<16} {'ok':>6} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7}  versions")
    for name in PHASES:
        p = phases.get(name)
        if p is None:
            continue
        print(
            f"{name:<16} {p['ok']:>6} {p['failed']:>6} {p['p50_ms']:>7} {p['p99_ms']:>7}"
            f"  {p['versions']}  {p['errors'][:2]}"
        )
    total = sum(p["ok"] for p in phases.values())
    failed = sum(p["failed"] for p in phases.values())
    canary = phases["canary"]["versions"]
    share = canary.get(candidate, 0) / max(sum(canary.values()), 1)
    steady = phases["steady"]["p99_ms"]
    moving = max(phases[name]["p99_ms"] for name in MOVES if name in phases)
    cli = max((phases[name]["p99_ms"] for name in CLIS if name in phases), default=0)
    print(
        f"rollout: {total} requests, {failed} failed; canary share {share:.1%} of "
        f"{sum(canary.values())} (fraction {fraction:.0%}); p99 during the moves {moving} ms "
        f"(worst move), steady {steady} ms: {moving / max(steady, 1e-9):.2f}x; while the CLI "
        f"started: {cli} ms ({cli / max(steady, 1e-9):.2f}x)"
    )
    assert failed == 0, "failed requests"
    for name, p in phases.items():
        assert set(p["versions"]) <= {stable, candidate}, (name, p["versions"])
    assert abs(share - fraction) <= 0.05, f"canary share {share:.3f}, fraction {fraction}"
    for name, answered_by in (("steady", stable), ("shadow", stable), ("promoted", candidate)):
        assert set(phases[name]["versions"]) == {answered_by}, (name, phases[name]["versions"])
    assert set(phases["aborted"]["versions"]) == {candidate}, ("aborted", phases["aborted"])
    assert moving <= P99_LIMIT * steady, f"p99 during the moves {moving} > 2 x steady {steady}"
    return 0


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "wait":
        return wait(args[0], args[1], args[2], args[3:])
    if command == "pin":
        return pin(*args[:4])
    if command == "keys":
        return keys(args[0], args[1], float(args[2]))
    if command == "light":
        return light(args[0], args[1], int(args[2]), args[3])
    if command == "summary":
        return summary(args[0], args[1], args[2], float(args[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
