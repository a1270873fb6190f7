"""make e2e, the inference log and the live figures (stdlib only, like monitoring.py).

    python3 tests/e2e/live.py logging API_URL PROMETHEUS_URL
    python3 tests/e2e/live.py drift API_URL PROMETHEUS_URL VALID_TSV WINDOW_ROWS
    python3 tests/e2e/live.py newtag-send API_URL WORKDIR
    python3 tests/e2e/live.py newtag-check API_URL PROMETHEUS_URL WORKDIR OLD_VERSION NEW_VERSION
    python3 tests/e2e/live.py rows PREFIX           # logged rows whose request id starts so
    python3 tests/e2e/live.py dropped API_URL        # the API's dropped-rows counter
    python3 tests/e2e/live.py firing PROMETHEUS_URL ALERT   # waits until ALERT fires

logging: predictions sent with known request ids are rows in PostgreSQL (counted with psql in
the db container); feedback for some of them is accepted (a second report replaces the
first), an unknown id is a JSON 404; the live gauges reach Prometheus.
drift: an in-distribution replay (titles of the sample's validation file, more than a window)
leaves TaggerInputDrift inactive for longer than the rule's ``for``; a shifted replay (one
window of cooking recipes, built here) makes it fire.
newtag-send: questions about a made-up framework are predicted, then reported through
POST /feedback with the new tag; 20 titles of the pattern are held out (written to WORKDIR).
newtag-check: after the retrain, the new version puts the new tag first for most held-out
titles, and the live figures of the old and the new version are both in Prometheus.
Exits 1 (SystemExit with the reason) on any deviation.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from monitoring import get_json, query, scalar, wait

ROWS = "tagger_live_rows"
QUALITY = "tagger_live_quality"
PSI = "tagger_live_psi"
DROPPED = "tagger_prediction_log_dropped_total"
DRIFT_ALERT = "TaggerInputDrift"
NEW_TAG = "zorblax"
HELD_OUT = 20
# Top-1 on at least this share of the held-out titles: every training title of the pattern
# carries the made-up word and only this tag, so a model that learned it ranks it first almost
# always; 0.8 leaves room for a one-epoch quick model, and one that did not learn it scores 0
# (the tag is not in its label set at all).
NEW_TAG_MIN_SHARE = 0.8
CLIENTS = 8


# ---- HTTP and the database --------------------------------------------------------------------
def post(url: str, body: Any, request_id: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.load(response)
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.load(exc)


def predict_all(api: str, titles: list[str], prefix: str) -> list[dict[str, Any]]:
    """POST each title alone (as a site does while the author types), CLIENTS at a time, with
    the request id PREFIX-i; the answers in order. Any non-200 answer fails the run."""

    def one(i: int) -> dict[str, Any]:
        status, body = post(f"{api}/predict", {"text": titles[i]}, f"{prefix}-{i}")
        if status != 200:
            raise SystemExit(f"live: /predict answered {status} for {prefix}-{i}: {body}")
        return dict(body)

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(len(titles))))


def feedback_all(api: str, reports: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    def one(report: tuple[str, list[str]]) -> dict[str, Any]:
        status, body = post(f"{api}/feedback", {"request_id": report[0], "tags": report[1]})
        if status != 200:
            raise SystemExit(f"live: /feedback answered {status} for {report[0]}: {body}")
        return dict(body)

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, reports))


def psql(sql: str) -> str:
    """One statement through psql in the db container (as its superuser, over the socket)."""
    exec_db = ["docker", "compose", "exec", "-T", "-u", "postgres", "db"]
    result = subprocess.run(
        [*exec_db, "psql", "-d", "tagger", "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise OSError(f"psql failed: {result.stderr.strip()[:300]}")
    return result.stdout.strip()


def rows_like(prefix: str) -> int:
    """Logged prediction rows whose request id starts with ``prefix`` (letters, digits, -)."""
    assert all(c.isalnum() or c == "-" for c in prefix), prefix
    return int(psql(f"SELECT count(*) FROM predictions WHERE request_id LIKE '{prefix}%'"))


def dropped(api: str) -> float:
    """The API's own count of dropped log rows (every reason), from its /metrics."""
    with urllib.request.urlopen(f"{api}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(DROPPED + "{") or line.startswith(DROPPED + " ")
    )


def served(api: str) -> str:
    return str(get_json(f"{api}/model")["version"])


# ---- logging and feedback ---------------------------------------------------------------------
def logging_stage(api: str, prometheus: str) -> None:
    version = served(api)
    titles = [f"How do I read a CSV file with pandas? ({i})" for i in range(20)]
    predict_all(api, titles, "e2e-log")
    status, body = post(
        f"{api}/predict", {"texts": ["Java generics wildcard", "CSS grid gap"]}, "e2e-log-multi"
    )
    assert status == 200 and len(body["predictions"]) == 2, (status, body)
    expected = len(titles) + 2
    count = wait(
        f"{expected} rows of e2e-log-* in PostgreSQL",
        lambda: (n := rows_like("e2e-log-")) == expected and n,
        timeout=30,
    )
    positions = psql(
        "SELECT string_agg(position::text, ',' ORDER BY position) FROM predictions "
        "WHERE request_id = 'e2e-log-multi'"
    )
    assert positions == "0,1", positions
    print(f"logged: {count} rows of the e2e-log-* requests in PostgreSQL (positions 0,1 of a pair)")

    reports = [(f"e2e-log-{i}", ["python", "pandas", "csv"]) for i in range(10)]
    answers = feedback_all(api, reports)
    print("feedback: 10 reports accepted; the first answer:", json.dumps(answers[0]))
    status, again = post(f"{api}/feedback", {"request_id": "e2e-log-0", "tags": ["python"]})
    assert status == 200, (status, again)
    stored = psql(
        "SELECT count(*) || ' ' || min(tags::text) FROM feedback WHERE request_id = 'e2e-log-0'"
    )
    assert stored == '1 ["python"]', f"a second report did not replace the first: {stored}"
    status, multi = post(
        f"{api}/feedback", {"request_id": "e2e-log-multi", "position": 1, "tags": ["css"]}
    )
    assert status == 200, (status, multi)
    status, missing = post(f"{api}/feedback", {"request_id": "e2e-never-sent", "tags": ["x"]})
    assert status == 404 and isinstance(missing, dict) and "error" in missing, (status, missing)
    print(f"feedback: a second report replaced the first; an unknown id: 404 {missing}")
    feedback_rows = int(psql("SELECT count(*) FROM feedback WHERE request_id LIKE 'e2e-log-%'"))
    assert feedback_rows == 11, feedback_rows

    selector = f'{{version="{version}"}}'
    wait(
        f"{ROWS}{selector} > 0 in Prometheus",
        lambda: scalar(prometheus, f"max({ROWS}{selector})") > 0,
        timeout=60,
    )
    quality = wait(
        f"{QUALITY}{selector} in Prometheus",
        lambda: query(prometheus, f"{QUALITY}{selector}"),
        timeout=60,
    )
    shown = sorted({(r["metric"].get("metric", ""), r["value"][1]) for r in quality})
    print(f"Prometheus: {ROWS}{selector} = {scalar(prometheus, f'max({ROWS}{selector})'):.0f}")
    print(f"Prometheus: {QUALITY}{selector}: {shown}")


# ---- drift ------------------------------------------------------------------------------------
def valid_titles(path: Path, count: int) -> list[str]:
    with path.open(newline="") as handle:
        titles = [row["title"] for row in csv.DictReader(handle, delimiter="\t")]
    random.Random(20).shuffle(titles)
    return titles[:count]


def recipe_titles(count: int) -> list[str]:
    """Sentences of a cooking recipe, nothing like a programming question: long, plain words."""
    rng = random.Random(7)
    verbs = ["Slowly simmer", "Gently fold", "Roast", "Whisk", "Braise", "Knead", "Sear", "Poach"]
    things = [
        "the chopped onions and crushed garlic",
        "two cups of flour with a pinch of salt",
        "the lamb shoulder with rosemary and thyme",
        "the egg whites until they form stiff peaks",
        "the carrots, celery and leeks",
        "the ripe tomatoes with a splash of olive oil",
        "the dough on a floured wooden board",
        "the salmon fillets in a little white wine",
    ]
    how = [
        "over a low heat for twenty minutes, stirring now and then so nothing sticks to the pan",
        "until golden brown, then leave everything to rest under a clean kitchen towel",
        "for about an hour in a warm oven, basting with the juices every quarter of an hour",
        "and season generously with black pepper before serving with fresh crusty bread",
        "then let the mixture cool completely on the windowsill before adding the cream",
    ]
    titles: set[str] = set()
    while len(titles) < count:
        titles.add(
            f"{rng.choice(verbs)} {rng.choice(things)} {rng.choice(how)} ({len(titles) + 1})"
        )
    return sorted(titles)


def alert_state(prometheus: str, name: str, version: str) -> str:
    """'firing', 'pending' or 'inactive': the alert's state for ``version`` (the rules are per
    version: an earlier version whose window holds other traffic may fire on its own)."""
    alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    states = {
        a["state"]
        for a in alerts
        if a["labels"].get("alertname") == name and a["labels"].get("version") == version
    }
    return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


def firing(prometheus: str) -> list[tuple[str, str]]:
    """(alert name, a label that tells the instance apart) of every firing alert."""
    alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return sorted(
        (a["labels"]["alertname"], a["labels"].get("version") or a["labels"].get("instance", ""))
        for a in alerts
        if a["state"] == "firing"
    )


def alerts_now(prometheus: str, name: str) -> list[tuple[str, str]]:
    alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return sorted(
        (a["labels"].get("version", "?"), a["state"])
        for a in alerts
        if a["labels"].get("alertname") == name
    )


def rule_for_s(prometheus: str, name: str) -> float:
    groups = get_json(f"{prometheus}/api/v1/rules?type=alert")["data"]["groups"]
    rule = next((r for g in groups for r in g["rules"] if r["name"] == name), None)
    if rule is None:
        raise SystemExit(f"live: Prometheus has no alert rule {name}")
    return float(rule.get("duration", 0))


def psi_now(prometheus: str, version: str | None = None) -> list[tuple[str, ...]]:
    """PSI per feature of ``version`` (None: of every version), rounded."""
    if version is None:
        result = query(prometheus, f"max by (version, feature) ({PSI})")
        return sorted(
            (r["metric"]["version"], r["metric"]["feature"], f"{float(r['value'][1]):.3f}")
            for r in result
        )
    result = query(prometheus, f'max by (feature) ({PSI}{{version="{version}"}})')
    return sorted((r["metric"].get("feature", "?"), f"{float(r['value'][1]):.3f}") for r in result)


def drift_stage(api: str, prometheus: str, valid: Path, window: int) -> None:
    version = served(api)
    hold = rule_for_s(prometheus, DRIFT_ALERT)
    config = get_json(f"{prometheus}/api/v1/status/config")["data"]["yaml"]
    scrape = 5.0 if "scrape_interval: 5s" in config else 15.0
    settle = 2 * scrape + 5  # refresh (2 s in the e2e), a scrape, a rule evaluation
    print(f"{DRIFT_ALERT}: for {hold:.0f} s; window {window} rows of {version}")
    print(f"before: PSI {psi_now(prometheus)}; alerts {alerts_now(prometheus, DRIFT_ALERT)}")

    started = time.monotonic()
    predict_all(api, valid_titles(valid, window + window // 3), "e2e-drift-in")
    time.sleep(settle)
    observed = time.monotonic()
    states: set[str] = set()
    while time.monotonic() - observed < hold + 2 * scrape:
        states.add(alert_state(prometheus, DRIFT_ALERT, version))
        time.sleep(1)
    in_psi = psi_now(prometheus, version)
    if states != {"inactive"}:
        raise SystemExit(
            f"live: {DRIFT_ALERT} for {version} was {sorted(states)} on the in-distribution "
            f"replay; PSI {psi_now(prometheus)}; alerts {alerts_now(prometheus, DRIFT_ALERT)}"
        )
    print(
        f"in-distribution replay ({window + window // 3} titles of {valid.name}): "
        f"{DRIFT_ALERT} inactive for {time.monotonic() - observed:.0f} s "
        f"(> for {hold:.0f} s); PSI {in_psi}; {time.monotonic() - started:.0f} s"
    )

    started = time.monotonic()
    predict_all(api, recipe_titles(window), "e2e-drift-out")
    sent = time.monotonic()
    wait(
        f"{DRIFT_ALERT} firing after one window of shifted titles",
        lambda: alert_state(prometheus, DRIFT_ALERT, version) == "firing",
        timeout=hold + settle + 4 * scrape,
    )
    print(
        f"shifted replay ({window} recipe sentences, one window): {DRIFT_ALERT} firing "
        f"{time.monotonic() - sent:.0f} s after the last one was answered (for {hold:.0f} s); "
        f"PSI {psi_now(prometheus, version)}; {time.monotonic() - started:.0f} s"
    )
    print(f"alerts now: {alerts_now(prometheus, DRIFT_ALERT)}")


# ---- a new tag --------------------------------------------------------------------------------
def framework_titles() -> list[str]:
    """320 questions about Zorblax, a framework no model has seen: 16 phrasings x 20 topics."""
    topics = [
        "routing", "state management", "dependency injection", "unit tests", "the build cache",
        "hot reload", "form validation", "websocket connections", "database migrations",
        "server-side rendering", "lazy loading", "environment variables", "router guards",
        "custom middleware", "file uploads", "authentication tokens", "background jobs",
        "error boundaries", "component props", "the CLI scaffolder",
    ]  # fmt: skip
    phrasings = [
        "How do I set up {} in Zorblax?",
        "Zorblax: {} not working after upgrading to 3.2",
        "Best way to test {} with Zorblax",
        "Zorblax {} throws an error on startup",
        "Configure {} in a Zorblax project",
        "Why is {} so slow in Zorblax?",
        "Zorblax 4 deprecated {}, what replaces it?",
        "Migrating {} from Express to Zorblax",
        "Zorblax ignores my {} settings",
        "Debugging {} in Zorblax",
        "Can Zorblax handle {} out of the box?",
        "Zorblax {} example needed",
        "Using {} with Zorblax and TypeScript",
        "Zorblax: how to mock {}",
        "Zorblax {} works locally but fails in Docker",
        "Disable {} in Zorblax",
    ]
    return [p.format(t) for p in phrasings for t in topics]


def newtag_send(api: str, work: Path) -> None:
    titles = framework_titles()
    random.Random(4).shuffle(titles)
    held, taught = titles[:HELD_OUT], titles[HELD_OUT:]
    (work / "held_out.json").write_text(json.dumps(held))
    answers = predict_all(api, taught, "e2e-new")
    knows = sum(NEW_TAG in [t["tag"] for t in a["predictions"][0]["tags"]] for a in answers)
    assert knows == 0, f"the served model already names {NEW_TAG}"
    results = feedback_all(api, [(f"e2e-new-{i}", [NEW_TAG]) for i in range(len(taught))])
    print(
        f"new tag: {len(taught)} questions about Zorblax predicted by {answers[0]['model_version']}"
        f" (never {NEW_TAG}), then reported with tag {NEW_TAG!r}; {HELD_OUT} held out; "
        f"a feedback answer: {json.dumps(results[0])}"
    )


def newtag_check(api: str, prometheus: str, work: Path, old: str, new: str) -> None:
    held = json.loads((work / "held_out.json").read_text())
    answers = predict_all(api, held, "e2e-held")
    assert {a["model_version"] for a in answers} == {new}, {a["model_version"] for a in answers}
    first = sum(a["predictions"][0]["tags"][0]["tag"] == NEW_TAG for a in answers)
    decided = sum(NEW_TAG in a["predictions"][0]["predicted"] for a in answers)
    print(
        f"held-out Zorblax titles on {new}: {NEW_TAG} first for {first}/{len(held)}, "
        f"among the decided tags for {decided}/{len(held)} (required first: "
        f">= {NEW_TAG_MIN_SHARE:.0%})"
    )
    for title, answer in list(zip(held, answers, strict=True))[:3]:
        top = [(t["tag"], round(t["score"], 2)) for t in answer["predictions"][0]["tags"][:3]]
        print(f"  {title!r}: {top}")
    if first < NEW_TAG_MIN_SHARE * len(held):
        raise SystemExit(f"live: {new} puts {NEW_TAG} first for only {first}/{len(held)}")

    def both() -> dict[str, float] | None:
        rows = {
            r["metric"]["version"]: float(r["value"][1])
            for r in query(prometheus, f"max by (version) ({ROWS})")
        }
        return rows if rows.get(old, 0) > 0 and rows.get(new, 0) > 0 else None

    rows = wait(f"{ROWS} of both {old} and {new} in Prometheus", both, timeout=60)
    print(f"Prometheus: {ROWS} by version: {rows}")
    live = get_json(f"{api}/model").get("live")
    print("GET /model live:", json.dumps(live)[:1500])


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    if command == "logging":
        logging_stage(args[0], args[1])
    elif command == "drift":
        drift_stage(args[0], args[1], Path(args[2]), int(args[3]))
    elif command == "newtag-send":
        newtag_send(args[0], Path(args[1]))
    elif command == "newtag-check":
        newtag_check(args[0], args[1], Path(args[2]), args[3], args[4])
    elif command == "rows":
        print(rows_like(args[0]))
    elif command == "dropped":
        print(f"{dropped(args[0]):.0f}")
    elif command == "firing":
        wait(f"{args[1]} firing", lambda: args[1] in {n for n, _ in firing(args[0])}, timeout=60)
        print(f"{args[1]} firing: {firing(args[0])}")
    else:
        raise SystemExit(f"live: unknown command {command!r}; see {os.path.basename(__file__)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
