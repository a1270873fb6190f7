"""Experiment (``make bench-shadow``, and a step of ``make bench``): what a shadow candidate
costs a real API under load, and what the second loaded version costs in memory (issue 21).

Per round, fresh API processes on two private stores holding the same version: "off" serves
it alone (what every request costs today), "on" serves it with a copy of it as the shadow
candidate at ``--sample`` (default 0.2: a fifth of the answered requests scored again by the
candidate, off the response path) and, as a control, "off2" (a second "off"). Each is warmed
up, the candidate loaded, then driven at each concurrency level in a rotating order; the cost
is the median of the rounds' own on/off ratios (the method of :mod:`bench.instrumentation`).
Per level, the texts the candidate scored and those it shed (the model busy: shadow work goes
first) are counted from ``/metrics``: a cost measured while everything was shed would flatter
the shadow. Resident memory with one version loaded ("off") and with two ("on"), at ready and
after the round.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import experiment, report
from bench.harness import (
    Server,
    clone_version,
    drive_round,
    fresh_servers,
    private_store,
    round_orders,
)
from bench.instrumentation import Runs, medians, relative_cost

SAMPLE = 0.2
SHADOW_TEXTS = "tagger_shadow_texts_total"
WARMUP_S = 2


def stores(source_root: Path, version: str, workdir: Path, sample: float) -> dict[str, Path]:
    """Two private stores of ``version``: "off" with it alone, "on" with a copy of it as the
    shadow candidate at ``sample``."""
    from shared.store import SHADOW, ArtefactStore

    off = private_store(source_root, version, workdir / "off")
    on = private_store(source_root, version, workdir / "on")
    candidate = clone_version(on, version)
    ArtefactStore(on).set_candidate(candidate, SHADOW, sample=sample, reason="bench: shadow")
    return {"off": off, "on": on}


def envs_for(roots: dict[str, Path], threads: int) -> dict[str, dict[str, str]]:
    """The servers of a round: each on its store, metrics on (the counters are read), the
    inference log as by default (into each server's own SQLite file)."""
    extra = {"API_POLL_INTERVAL_S": "2", "API_METRICS": "true"}
    if threads:
        extra["API_TORCH_THREADS"] = str(threads)
    envs = {name: {**extra, "TAGGER_ARTEFACTS_DIR": str(root)} for name, root in roots.items()}
    envs["off2"] = envs["off"]
    return envs


def shadow_texts(url: str) -> dict[str, float]:
    """The server's shadow counters by outcome ("scored", "shed"), from its /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return parse_shadow_texts(response.read().decode())


def parse_shadow_texts(text: str) -> dict[str, float]:
    """The shadow counters by outcome in a Prometheus exposition (0 where absent)."""
    counts = {"scored": 0.0, "shed": 0.0}
    for line in text.splitlines():
        if line.startswith(SHADOW_TEXTS + "{"):
            labels, value = line.rsplit(" ", 1)
            for outcome in counts:
                if f'outcome="{outcome}"' in labels:
                    counts[outcome] += float(value)
    return counts


class ShadowCounter:
    """The shadow counters of one server between two moments."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.last: dict[str, float] = {}

    def mark(self) -> None:
        """Remember the counters now."""
        self.last = shadow_texts(self.url)

    def since(self) -> dict[str, float]:
        """The counts since the last mark (or call); marks again."""
        now = shadow_texts(self.url)
        delta = {outcome: now[outcome] - self.last.get(outcome, 0.0) for outcome in now}
        self.last = now
        return delta


def wait_candidate_loaded(server: Server, timeout: float = 120) -> float:
    """Wait until the server's /model reports its candidate loaded; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with urllib.request.urlopen(f"{server.url}/model", timeout=10) as response:
            candidate = json.load(response).get("candidate") or {}
        if candidate.get("loaded"):
            return round(time.monotonic() - started, 2)
        time.sleep(0.05)
    raise RuntimeError(f"the candidate was not loaded {timeout:.0f} s after /ready")


def shadow_cost(
    store_root: Path,
    bodies: Path,
    levels: list[int],
    rounds: int,
    duration: int,
    threads: int,
    sample: float = SAMPLE,
    control: bool = True,
) -> dict[str, Any]:
    """The same load on an API without a candidate ("off") and one with a shadow candidate at
    ``sample`` ("on"), in rounds of fresh processes; the cost as the median of the rounds'
    ratios, the shadow texts scored and shed per level, the memory of one and two versions."""
    workdir = Path(tempfile.mkdtemp(prefix="tagger-bench-shadow-"))
    names = ["off", "on", *(["off2"] if control else [])]
    runs: dict[str, Runs] = {name: {level: [] for level in levels} for name in names}
    texts: dict[int, dict[str, float]] = {level: {"scored": 0.0, "shed": 0.0} for level in levels}
    memory: dict[str, list[float]] = {k: [] for k in ("one_ready", "two_ready", "one", "two")}
    try:
        version = store_root.joinpath("LATEST").read_text().strip()
        envs = envs_for(stores(store_root, version, workdir, sample), threads)
        for rep, order in enumerate(round_orders(names, rounds)):
            with fresh_servers(store_root, envs, order) as servers:
                wait_candidate_loaded(servers["on"])
                memory["one_ready"].append(servers["off"].rss())
                memory["two_ready"].append(servers["on"].rss())
                counter = ShadowCounter(servers["on"].url)
                for name, level, row in drive_round(
                    servers, order, bodies, levels, duration, WARMUP_S, counter.mark
                ):
                    runs[name][level].append(row)
                    if name == "on":
                        for outcome, count in counter.since().items():
                            texts[level][outcome] += count
                    print(json.dumps({"shadow": name, "round": rep, **row}), flush=True)
                memory["one"].append(servers["off"].rss())
                memory["two"].append(servers["on"].rss())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "rounds": rounds,
        "duration_s": duration,
        "sample": sample,
        "medians": medians(runs),
        "cost": relative_cost(runs["on"], runs["off"], levels),
        "shadow_texts": texts,
        "rss_mib": {k: round(statistics.median(v), 1) for k, v in memory.items()},
    }
    if control:
        result["control"] = relative_cost(runs["off2"], runs["off"], levels)
    result["runs"] = runs
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = experiment.parser("python -m bench.shadow", __doc__, rounds=6)
    parser.add_argument("--sample", type=float, default=SAMPLE, help="the candidate's sample")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The experiment on a private copy of the newest version (see :func:`bench.experiment.run`)."""
    args = parse_args(argv)

    def measure(store_root: Path, bodies: Path, levels: list[int]) -> dict[str, Any]:
        return shadow_cost(
            store_root,
            bodies,
            levels,
            args.rounds,
            args.duration,
            args.threads,
            args.sample,
            control=not args.no_control,
        )

    return experiment.run(
        args, "shadow", measure, report.print_shadow, "bench-shadow", "latest-shadow.json"
    )


if __name__ == "__main__":
    sys.exit(main())
