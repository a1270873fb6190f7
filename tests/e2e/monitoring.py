"""make e2e, monitoring step (stdlib only): Prometheus scrapes every api replica and counts
exactly the requests this script sends.

    python3 tests/e2e/monitoring.py PROMETHEUS_URL REPLICAS API_URL [API_URL ...]

Waits until Prometheus has REPLICAS healthy ``tagger-api`` targets; reads the request
counter (earlier requests of the e2e included) from Prometheus once it matches what the
replicas themselves report; sends known requests to every API URL (each with its own
X-Request-ID), then waits until Prometheus's sum has grown by exactly that many, per status
and per replica. Prints a sample of /metrics and one summary line; exits 1 on any deviation.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

PREDICT_OK = 20  # per replica
COUNTER = "tagger_http_requests_total"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = get_json(url)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def scalar(prometheus: str, promql: str) -> float:
    result = query(prometheus, promql)
    return float(result[0]["value"][1]) if result else 0.0


def wait(what: str, condition: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            last = repr(exc)
        time.sleep(1)
    raise SystemExit(f"monitoring: {what} not reached in {timeout:.0f} s (last: {last!r})")


def api_counter(api: str, status: str | None = None) -> float:
    """The replica's own count of /predict requests (the 0.0.4 text format, read plainly)."""
    with urllib.request.urlopen(f"{api}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(COUNTER + "{") and 'route="/predict"' in line:
            if status is None or f'status="{status}"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def post(api: str, body: dict[str, Any], request_id: str) -> int:
    request = urllib.request.Request(
        f"{api}/predict",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "X-Request-ID": request_id},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["X-Request-ID"] == request_id
            return int(response.status)
    except urllib.error.HTTPError as exc:
        assert exc.headers["X-Request-ID"] == request_id
        assert json.load(exc)["request_id"] == request_id
        return int(exc.code)


def main() -> int:
    prometheus, replicas, apis = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

    def targets_up() -> list[dict[str, Any]] | None:
        active = get_json(f"{prometheus}/api/v1/targets?state=active")["data"]["activeTargets"]
        mine = [t for t in active if t["labels"]["job"] == "tagger-api"]
        healthy = [t for t in mine if t["health"] == "up"]
        return healthy if len(mine) == replicas and len(healthy) == replicas else None

    targets = wait(f"{replicas} tagger-api target(s) up", targets_up)
    print("targets up:", sorted(t["labels"]["instance"] for t in targets))
    assert scalar(prometheus, 'sum(up{job="tagger-api"})') == replicas
    rules = get_json(f"{prometheus}/api/v1/rules?type=alert")["data"]["groups"]
    alert_names = sorted(r["name"] for g in rules for r in g["rules"])
    live_alerts = {"TaggerInputDrift", "TaggerLiveQualityDrop", "TaggerPredictionLogDropping"}
    assert len(alert_names) == 8 and live_alerts <= set(alert_names), alert_names
    print("alert rules loaded:", ", ".join(alert_names))

    # Requests the e2e made before (and health checks) are counted already: start from what
    # Prometheus sees once it agrees with the replicas themselves.
    promql = f'sum({COUNTER}{{route="/predict"}})'
    before_api = sum(api_counter(api) for api in apis)
    wait(
        f"Prometheus to report the replicas' count ({before_api:.0f})",
        lambda: scalar(prometheus, promql) == before_api,
    )
    before_422 = sum(api_counter(api, "422") for api in apis)

    statuses: dict[int, int] = {}
    for i in range(PREDICT_OK):
        for n, api in enumerate(apis):
            code = post(api, {"text": f"How do I sort a list in Python? ({i})"}, f"e2e-{n}-{i}")
            statuses[code] = statuses.get(code, 0) + 1
    for n, api in enumerate(apis):  # one invalid request per replica
        code = post(api, {"text": ""}, f"e2e-invalid-{n}")
        statuses[code] = statuses.get(code, 0) + 1
    sent = PREDICT_OK * len(apis) + len(apis)
    assert statuses == {200: PREDICT_OK * len(apis), 422: len(apis)}, statuses
    expected = before_api + sent
    wait(
        f"Prometheus to count the {sent} requests sent (total {expected:.0f})",
        lambda: scalar(prometheus, promql) == expected,
    )
    got_422 = scalar(prometheus, f'sum({COUNTER}{{route="/predict", status="422"}})')
    assert got_422 == before_422 + len(apis), (got_422, before_422)
    if len(apis) > 1:  # both replicas scraped, each with its own share
        per_instance = query(prometheus, f'{COUNTER}{{route="/predict", status="200"}}')
        assert len(per_instance) == replicas, per_instance
    print(
        f"monitoring: {promql} = {expected:.0f} ({before_api:.0f} before + {sent} sent), "
        f"422s {got_422:.0f}, over {replicas} replica(s)"
    )

    with urllib.request.urlopen(f"{apis[0]}/metrics", timeout=10) as response:
        text = response.read().decode()
    keep = re.compile(
        r"^(tagger_http_requests_total|tagger_http_request_duration_seconds_(count|bucket\{.*"
        r'le="0.0(1|25|5)")|tagger_batch_size_texts_(count|sum)|tagger_model_info|'
        r"tagger_model_reload|tagger_predicted_top1_total\{tag=\"python\"|tagger_input_tokens_count|"
        r"tagger_queue_depth|process_resident)"
    )
    print("sample of /metrics:")
    print("\n".join(line for line in text.splitlines() if keep.match(line)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
