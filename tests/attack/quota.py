"""``python -m tests.attack.quota``: one key far over its quota must not hurt another key.

Serves the tiny test model (tests/serving.py) with keys on and a quota of ``--quota``
requests/s per key (and of texts, 1.25 times what ``fair`` sends), then runs 64 clients in
all: key ``hog`` sends at 10x its quota and key ``fair`` at its quota, for ``--together-s``
seconds; then ``fair`` alone for ``--alone-s``. Each client is open-loop (requests on a fixed
schedule, sent at once when it has fallen behind), one request in flight at a time, 4 texts a
request. The hog's clients run in a process of their own: sharing the fair clients' event
loop, their client-side work showed up as the API's latency (a p99 of 500 ms against 17 ms
measured apart).

Prints hog's 429 share and whether every 429 had a ``Retry-After``, fair's success rate, and
fair's p99 together vs alone. Exits non-zero when fair's success is under 99%, a 429 lacks
``Retry-After``, or any answer is a 5xx other than 503 ``overloaded``. The p99 ratio is
reported against its 2x target but does not fail the run (the machines here share two cores
between the API, these clients and other work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.keys import add_key
from tests.serving import ApiProcess, publish_tiny_model

CLIENTS = 64
HOG_CLIENTS = 48
TEXTS = ["How to merge two dicts in python", "java spring bean", "sql join on two tables", "dom"]


@dataclass
class Tally:
    """What one key's clients got."""

    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)  # of the 200s
    no_retry_after: int = 0
    bad_5xx: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def share(self, status: int) -> float:
        return self.statuses[status] / self.sent if self.sent else 0.0

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Connection:
    """One keep-alive HTTP/1.1 connection that sends the same request again and again: far
    lighter than a general client, so the attacking side takes less of the CPU it shares with
    the API here (on a real site the attacker's CPU is not the API's)."""

    def __init__(self, url: str, request: bytes) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.request = host, int(port), request
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self) -> tuple[int, dict[str, str], bytes]:
        """The status, headers and body of one answer (a stale kept-alive connection is
        replaced once)."""
        for attempt in range(2):
            fresh = self.streams is None
            if self.streams is None:
                self.streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self.streams
            try:
                writer.write(self.request)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                fields = (line.partition(":") for line in lines[1:] if line)
                headers = {name.lower(): value.strip() for name, _, value in fields}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
            except (OSError, asyncio.IncompleteReadError):
                self.close()
                if fresh or attempt:
                    raise
                continue
            if headers.get("connection", "").lower() == "close":
                self.close()
            return int(lines[0].split()[1]), headers, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def predict_request(url: str, key: str) -> bytes:
    body = json.dumps({"texts": TEXTS}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def client(
    url: str, key: str, interval_s: float, offset_s: float, end: float, tally: Tally
) -> None:
    """Send a request every ``interval_s`` until ``end`` (monotonic), one at a time."""
    connection = Connection(url, predict_request(url, key))
    due = time.monotonic() + offset_s
    while due < end:
        if (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        due += interval_s
        started = time.perf_counter()
        try:
            status, headers, body = await connection.send()
        except (OSError, asyncio.IncompleteReadError) as exc:
            tally.statuses[0] += 1
            tally.bad_5xx.append(f"transport: {type(exc).__name__}")
            continue
        elapsed_ms = (time.perf_counter() - started) * 1000
        tally.statuses[status] += 1
        if status == 200:
            tally.latencies_ms.append(elapsed_ms)
        elif status == 429 and "retry-after" not in headers:
            tally.no_retry_after += 1
        elif status >= 500 and not (status == 503 and b'"overloaded"' in body):
            tally.bad_5xx.append(f"{status} {body[:120]!r}")
    connection.close()


async def phase(
    url: str, keys: dict[str, str], rates: dict[str, float], clients: dict[str, int], s: float
) -> dict[str, Tally]:
    """Every key in ``rates`` at its rate (requests/s over its ``clients``) for ``s`` seconds."""
    tallies = {name: Tally() for name in rates}
    end = time.monotonic() + s
    tasks = []
    for name, rate in rates.items():
        n = clients[name]
        interval = n / rate
        for i in range(n):
            offset = interval * i / n
            tasks.append(client(url, keys[name], interval, offset, end, tallies[name]))
    await asyncio.gather(*tasks)
    return tallies


def hog_process(url: str, key: str, rate: float, seconds: float, out: Any) -> None:
    """The hog's clients in a process of their own; puts their Tally on ``out``."""
    tallies = asyncio.run(phase(url, {"hog": key}, {"hog": rate}, {"hog": HOG_CLIENTS}, seconds))
    out.put(tallies["hog"])


def together(url: str, keys: dict[str, str], quota: float, seconds: float) -> tuple[Tally, Tally]:
    """hog (in another process) and fair at once: their tallies."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    hog = context.Process(target=hog_process, args=(url, keys["hog"], 10 * quota, seconds, out))
    hog.start()
    fair_clients = {"fair": CLIENTS - HOG_CLIENTS}
    fair = asyncio.run(phase(url, keys, {"fair": quota}, fair_clients, seconds))["fair"]
    tally: Tally = out.get(timeout=60)
    hog.join(timeout=30)
    return tally, fair


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.attack.quota", description=__doc__)
    parser.add_argument("--quota", type=float, default=20.0, help="requests/s per key")
    parser.add_argument("--together-s", type=float, default=30.0)
    parser.add_argument("--alone-s", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--max-wait-ms",
        help="API_MAX_WAIT_MS for the API (default its own: under load a micro-batch waits up "
        "to 10 ms for company, which alone at 20 requests/s it never does)",
    )
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tagger-attack-quota-"))
    try:
        print("quota: training the tiny test model ...", flush=True)
        artefacts = publish_tiny_model(work)
        keys_file = work / "api-keys"
        keys = {name: add_key(keys_file, name) for name in ("hog", "fair")}
        settings = {
            "API_KEYS_FILE": str(keys_file),
            "API_QUOTA_REQUESTS_PER_S": str(args.quota),
            "API_QUOTA_TEXTS_PER_S": str(args.quota * len(TEXTS) * 1.25),
        }
        if args.max_wait_ms is not None:
            settings["API_MAX_WAIT_MS"] = args.max_wait_ms
        with ApiProcess(work, artefacts, **settings) as api:
            clients = {"fair": CLIENTS - HOG_CLIENTS}
            print(
                f"quota: {args.quota:g} requests/s per key; hog at {10 * args.quota:g}/s and "
                f"fair at {args.quota:g}/s for {args.together_s:g} s ({CLIENTS} clients), "
                f"then fair alone for {args.alone_s:g} s",
                flush=True,
            )
            hog, fair = together(api.url, keys, args.quota, args.together_s)
            alone = asyncio.run(phase(api.url, keys, {"fair": args.quota}, clients, args.alone_s))[
                "fair"
            ]
            log = api.log()
        return report(hog, fair, alone, log, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(hog: Tally, fair: Tally, alone: Tally, log: str, json_path: Path | None) -> int:
    everything = [hog, fair, alone]
    no_retry_after = sum(t.no_retry_after for t in everything)
    bad = [line for t in everything for line in t.bad_5xx]
    success = fair.share(200)
    ratio = fair.p(0.99) / alone.p(0.99)
    print(
        f"quota: hog: {hog.sent} requests, 429 share {hog.share(429):.1%}, "
        f"200 share {hog.share(200):.1%}; every 429 had Retry-After: "
        f"{'yes' if no_retry_after == 0 else f'no ({no_retry_after} without)'}"
    )
    statuses = dict(fair.statuses)
    print(f"quota: fair together: {fair.sent} requests, success {success:.2%} {statuses}")
    print(
        f"quota: fair p50/p99 together {fair.p(0.5):.1f}/{fair.p(0.99):.1f} ms, alone "
        f"{alone.p(0.5):.1f}/{alone.p(0.99):.1f} ms ({alone.sent} requests, success "
        f"{alone.share(200):.2%}); p99 ratio {ratio:.2f}x "
        f"(target <= 2x: {'met' if ratio <= 2 else 'missed'})"
    )
    figures = {
        "hog_requests": hog.sent,
        "hog_429_share": hog.share(429),
        "hog_200_share": hog.share(200),
        "retry_after_missing": no_retry_after,
        "fair_requests": fair.sent,
        "fair_success": success,
        "fair_p50_ms": fair.p(0.5),
        "fair_p90_ms": fair.p(0.9),
        "fair_p99_ms": fair.p(0.99),
        "alone_p50_ms": alone.p(0.5),
        "alone_p99_ms": alone.p(0.99),
        "p99_ratio": ratio,
        "bad_5xx": len(bad),
    }
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
    failures = []
    if success < 0.99:
        failures.append(f"fair's success {success:.2%} is under 99%")
    if no_retry_after:
        failures.append(f"{no_retry_after} answers 429 without Retry-After")
    if bad:
        failures.append(f"{len(bad)} answers 5xx (not 503 overloaded), e.g. {bad[0]}")
    if "Traceback" in log:
        failures.append("the API logged a traceback")
    for failure in failures:
        print(f"quota: FAILED: {failure}", file=sys.stderr)
    if "Traceback" in log:
        print(log[-3000:], file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
