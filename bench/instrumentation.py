"""Experiment: what the instrumentation costs a real API under load.

An API with it ("on": metrics, JSON access log at info, as in production), one without
("off": ``API_METRICS=false``, log level warning) and, as a control, a second one without
("off2", to show what the comparison reads when nothing differs), driven in turn at each
concurrency level, in rounds of fresh processes. The cost is the median of the rounds' own
on/off ratios, the control's the noise floor.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.harness import drive_round, fresh_servers, round_orders

INSTRUMENTED = {"API_METRICS": "true", "API_LOG_FORMAT": "json", "API_LOG_LEVEL": "info"}
UNINSTRUMENTED = {"API_METRICS": "false", "API_LOG_LEVEL": "warning"}
WARMUP_S = 2

Runs = dict[int, list[dict[str, Any]]]  # concurrency level -> one wrk row per round


def instrumentation_cost(
    store_root: Path,
    bodies: Path,
    levels: list[int],
    rounds: int,
    duration: int,
    threads: int,
    control: bool = True,
) -> dict[str, Any]:
    """The same load on an instrumented API ("on") and an uninstrumented one ("off"), and
    (``control``) on a second uninstrumented one ("off2"). Each round starts fresh processes,
    warms them up, then drives each level on each of them in a rotating order. The cost is the
    median over rounds of each round's own on/off ratio, so a machine that drifts between
    rounds does not move it."""
    extra = {"API_POLL_INTERVAL_S": "2"}
    if threads:
        extra["API_TORCH_THREADS"] = str(threads)
    envs = {"on": {**INSTRUMENTED, **extra}, "off": {**UNINSTRUMENTED, **extra}}
    if control:
        envs["off2"] = envs["off"]
    runs: dict[str, Runs] = {name: {level: [] for level in levels} for name in envs}
    for rep, order in enumerate(round_orders(list(envs), rounds)):
        with fresh_servers(store_root, envs, order) as servers:
            for name, level, row in drive_round(servers, order, bodies, levels, duration, WARMUP_S):
                runs[name][level].append(row)
                print(json.dumps({"instrumentation": name, "round": rep, **row}), flush=True)
    result: dict[str, Any] = {"rounds": rounds, "duration_s": duration, "medians": medians(runs)}
    for key, name in (("cost", "on"), ("control", "off2")):
        if name in runs:
            result[key] = relative_cost(runs[name], runs["off"], levels)
    result["runs"] = runs
    return result


def medians(runs: dict[str, Runs]) -> dict[str, dict[int, dict[str, Any]]]:
    """Per side and level: median throughput and p50 over the rounds, and all their errors."""
    return {
        name: {
            level: {
                "throughput": round(statistics.median(r["throughput"] for r in rows), 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in rows), 2),
                "errors": sum(r["errors"] for r in rows),
            }
            for level, rows in by_level.items()
        }
        for name, by_level in runs.items()
    }


def relative_cost(runs: Runs, base: Runs, levels: list[int]) -> dict[str, float | None]:
    """Per level: how much slower (p50) and lower (throughput) ``runs`` is than ``base``, in
    per cent, as the median of the rounds' own ratios (None when a run measured nothing)."""
    cost: dict[str, float | None] = {}
    for level in levels:
        pairs = list(zip(runs[level], base[level], strict=True))
        slower, lower = f"c{level}_p50_slower_pct", f"c{level}_throughput_lower_pct"
        if not all(
            min(a["p50_ms"], b["p50_ms"], a["throughput"], b["throughput"]) > 0 for a, b in pairs
        ):
            cost[slower] = cost[lower] = None
            continue
        p50 = statistics.median(a["p50_ms"] / b["p50_ms"] for a, b in pairs)
        rate = statistics.median(a["throughput"] / b["throughput"] for a, b in pairs)
        cost[slower] = round((p50 - 1) * 100, 2)
        cost[lower] = round((1 - rate) * 100, 2)
    return cost
