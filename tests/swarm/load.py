"""Load for make e2e-swarm: N clients POST /predict through the edge until a stop file appears.

Standard library only (it runs on the host, outside the virtual environment). Every request is
counted under the phase named in the phase file when it started ("steady", "retrain",
"rolling", ...), so one run of the client gives the figures of every step: answers, failures,
the versions that answered and the latency percentiles (p50, p99, in ms). While the phase is
``pause`` the clients send nothing. Twice a second it writes a snapshot (JSON) that the test
script reads while it runs: per replica (the edge's X-Served-By header) the version it
answered last and when; the current streak of answers naming one version; totals. At the end
it prints the final snapshot as one JSON line.

    python3 tests/swarm/load.py URL WORKDIR [--clients 16] [--max-seconds 1800] [--ids PREFIX]
        [--cacert FILE] [--key-file FILE]
WORKDIR holds ``phase`` (read), ``stop`` (read) and ``snapshot.json`` (written). With
``--ids``, every request carries the X-Request-ID PREFIX-PHASE-CLIENT-N, so the rows the
inference log holds can be counted per phase. An https URL is checked against ``--cacert``
(the edge's test certificate); ``--key-file`` holds the API key sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import threading
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TITLES = [
    "How to merge two dictionaries in Python?",
    "Java NullPointerException when calling a method on a list",
    "SQL join three tables with a group by",
    "How do I center a div with CSS flexbox?",
]


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.phases: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"ok": 0, "failed": 0, "errors": [], "versions": {}, "first": None, "last": 0}
        )
        self.replicas: dict[str, dict[str, Any]] = {}
        self.streak = {"version": None, "count": 0}
        self.latencies: dict[str, list[float]] = defaultdict(list)

    def record(
        self, phase: str, version: str | None, replica: str, error: str | None, ms: float = 0.0
    ) -> None:
        now = round(time.monotonic() - self.started, 3)
        with self.lock:
            entry = self.phases[phase]
            entry["first"] = now if entry["first"] is None else entry["first"]
            entry["last"] = now
            if error is not None:
                entry["failed"] += 1
                if len(entry["errors"]) < 10:
                    entry["errors"].append(f"{now}s {error}"[:300])
                self.streak = {"version": None, "count": 0}
                return
            entry["ok"] += 1
            self.latencies[phase].append(ms)
            entry["versions"][version] = entry["versions"].get(version, 0) + 1
            self.replicas[replica] = {"version": version, "at": now}
            if self.streak["version"] == version:
                self.streak["count"] += 1
            else:
                self.streak = {"version": version, "count": 1}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            for phase, latencies in self.latencies.items():
                self.phases[phase].update(percentiles(latencies))
            return json.loads(
                json.dumps(
                    {
                        "now": round(time.monotonic() - self.started, 3),
                        "phases": self.phases,
                        "replicas": self.replicas,
                        "streak": self.streak,
                    }
                )
            )


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50 and p99 of the answered requests' latencies, in ms (0 when fewer than two)."""
    if len(latencies) < 2:
        return {"p50_ms": latencies[0] if latencies else 0.0, "p99_ms": max(latencies, default=0)}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 1), "p99_ms": round(cuts[98], 1)}


@dataclass(frozen=True)
class Target:
    url: str
    context: ssl.SSLContext | None  # https: the CA to trust
    auth: dict[str, str]  # the Authorization header, or none

    def connect(self) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=15, context=self.context
            )
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=15)


def client(
    target: Target, work: Path, tally: Tally, stop: threading.Event, n: int, ids: str | None
) -> None:
    connection: http.client.HTTPConnection | None = None
    i = n
    while not stop.is_set():
        phase = (work / "phase").read_text().strip()  # replaced atomically by the test
        if phase == "pause":  # an idle connection would be closed by the server meanwhile
            if connection is not None:
                connection.close()
                connection = None
            time.sleep(0.05)
            continue
        body = json.dumps({"text": TITLES[i % len(TITLES)]})
        headers = {"Content-Type": "application/json", **target.auth}
        if ids is not None:
            headers["X-Request-ID"] = f"{ids}-{phase}-{n}-{i}"
        i += 1
        started = time.monotonic()
        try:
            if connection is None:
                connection = target.connect()
            connection.request("POST", "/predict", body, headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
            version = json.loads(payload)["model_version"]
            ms = (time.monotonic() - started) * 1000
            tally.record(phase, version, response.getheader("X-Served-By") or "?", None, ms)
        except (OSError, http.client.HTTPException, ValueError, KeyError, RuntimeError) as exc:
            tally.record(phase, None, "", f"{type(exc).__name__}: {exc}")
            if connection is not None:
                connection.close()
            connection = None
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("work", type=Path)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--ids", default=None, help="request id prefix (default: none sent)")
    parser.add_argument("--cacert", type=Path, help="CA file for an https URL")
    parser.add_argument("--key-file", type=Path, help="file holding the API key")
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.cacert) if args.cacert else None
    auth = {}
    if args.key_file is not None:
        auth = {"Authorization": f"Bearer {args.key_file.read_text().strip()}"}
    target = Target(args.url, context, auth)
    tally, stop = Tally(), threading.Event()
    threads = [
        threading.Thread(
            target=client, args=(target, args.work, tally, stop, n, args.ids), daemon=True
        )
        for n in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + args.max_seconds
    snapshot_file = args.work / "snapshot.json"
    while not (args.work / "stop").exists() and time.monotonic() < deadline:
        tmp = snapshot_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(tally.snapshot()))
        os.replace(tmp, snapshot_file)
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=20)
    print(json.dumps(tally.snapshot()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
