"""The report of ``make bench``: the targets (read from ``bench/targets.toml``) checked against
the figures, the table printed, and the results written as JSON."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import tomllib
from pathlib import Path
from typing import Any

TARGETS = Path(__file__).resolve().parent / "targets.toml"
KINDS = frozenset(
    {
        "raw_rate",
        "zero_errors",
        "swap_peak",
        "vs_mode",
        "p50",
        "api_overhead",
        "startup",
        "instrumentation",
        "prediction_log",
        "shadow",
    }
)


def load_targets(path: Path = TARGETS) -> dict[str, Any]:
    """The targets file, each kind of check present and no other (a misspelt table would
    otherwise check nothing, silently)."""
    targets = tomllib.loads(path.read_text())
    missing, unknown = KINDS - targets.keys(), targets.keys() - KINDS
    if missing or unknown:
        raise ValueError(
            f"{path}: missing {sorted(missing) or 'none'}, unknown {sorted(unknown) or 'none'}"
        )
    return targets


def _at(results: dict[str, Any], mode: str, concurrency: int) -> dict[str, Any] | None:
    entry = results["modes"].get(mode)
    if entry is None:
        return None
    return next((r for r in entry["levels"] if r["concurrency"] == concurrency), None)


def check(results: dict[str, Any], targets: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target against the figures, in a fixed order: per mode (raw rate, errors, swap),
    then the comparisons between modes, latencies, start-up, instrumentation, the inference
    log per database."""
    checks: list[dict[str, Any]] = []

    def add(name: str, value: Any, ok: bool) -> None:
        checks.append({"check": name, "value": value, "ok": ok})

    rate, errors, swap = targets["raw_rate"], targets["zero_errors"], targets["swap_peak"]
    for mode, entry in results["modes"].items():
        row = _at(results, mode, rate["concurrency"])
        if row is not None and mode not in rate["except_modes"]:
            ratio = row["throughput"] / results["raw"][entry["raw"]]["batch32_titles_per_s"]
            add(
                f"{mode}: c={rate['concurrency']} >= {rate['min_ratio']} x its raw batch-32",
                round(ratio, 3),
                ratio >= rate["min_ratio"],
            )
        if mode not in errors["except_modes"]:
            failed = sum(r["errors"] for r in entry["levels"])
            add(f"{mode}: zero errors", failed, failed == 0)
        if entry.get("swap"):
            ratio = entry["swap"]["rss_peak_mib"] / entry["rss_loaded_mib"]
            add(
                f"{mode}: hot-swap peak RSS < {swap['below_ratio']} x one-model RSS",
                round(ratio, 2),
                ratio < swap["below_ratio"],
            )
    for target in targets["vs_mode"]:
        mode, base, level = target["mode"], target["base"], target["concurrency"]
        row, base_row = _at(results, mode, level), _at(results, base, level)
        if row is not None and base_row is not None:
            ratio = row["throughput"] / base_row["throughput"]
            add(
                f"{mode}: c={level} >= {target['min_ratio']} x {base} API c={level}",
                round(ratio, 2),
                ratio >= target["min_ratio"],
            )
    for target in targets["p50"]:
        mode, level, limit = target["mode"], target["concurrency"], target["max_ms"]
        row = _at(results, mode, level)
        if row is not None:
            add(f"{mode}: c={level} p50 <= {limit} ms", row["p50_ms"], row["p50_ms"] <= limit)
    for overhead in targets["api_overhead"]:
        row = _at(results, overhead["mode"], overhead["concurrency"])
        if row is not None and overhead["raw"] in results["raw"]:
            gap = row["p50_ms"] - results["raw"][overhead["raw"]]["batch1_p50_ms"]
            add(
                f"{overhead['mode']}: c={overhead['concurrency']} p50 <= raw batch-1 p50 + "
                f"{overhead['max_ms']} ms",
                round(gap, 2),
                gap <= overhead["max_ms"],
            )
    for target in targets["startup"]:
        mode = target["mode"]
        entry = results["modes"].get(mode)
        if entry is None:
            continue
        ready, limit = entry["ready_s"], target["max_ready_s"]
        add(f"{mode}: start to /ready <= {limit} s", ready, ready <= limit)
        if "max_rss_mib" in target:
            rss, limit = entry["rss_idle_mib"], target["max_rss_mib"]
            add(f"{mode}: RSS at ready <= {limit:.0f} MiB", rss, rss <= limit)
    obs = targets["instrumentation"]
    cost = results.get("instrumentation", {}).get("cost", {})
    for key in obs["figures"]:
        if key in cost:
            value = cost[key]
            ok = value is not None and value <= obs["max_pct"]
            add(f"instrumentation {key} <= {obs['max_pct']}", value, ok)
    log = targets["prediction_log"]
    for database, cost in results.get("prediction_log", {}).get("cost", {}).items():
        for key in log["figures"]:
            if key in cost:
                value = cost[key]
                ok = value is not None and value <= log["max_pct"]
                add(f"inference log ({database}) {key} <= {log['max_pct']}", value, ok)
    shadow = targets["shadow"]
    cost = results.get("shadow", {}).get("cost", {})
    for key in shadow["figures"]:
        if key in cost:
            value = cost[key]
            ok = value is not None and value <= shadow["max_pct"]
            add(f"shadow candidate {key} <= {shadow['max_pct']}", value, ok)
    return checks


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "load_average_at_end": os.getloadavg(),
    }


def now() -> str:
    """The time a result was made, UTC, to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def save(result: dict[str, Any], out: Path, prefix: str, *also: str) -> Path:
    """Write ``result`` as ``out/<prefix>-<UTC time>.json`` (and under each name in ``also``,
    such as ``latest.json``); the timestamped file's path."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, indent=2) + "\n"
    path = out / f"{prefix}-{stamp}.json"
    for name in (path.name, *also):
        (out / name).write_text(text)
    return path


def print_table(results: dict[str, Any]) -> None:
    """The raw figures, the API's per mode and level, memory and start-up, the instrumentation's
    cost, then each check as PASS or FAIL."""
    print("\nraw model, in-process (tokenization included):")
    print(
        f"{'runtime':<12} {'threads':>7} {'b1 p50 ms':>10} {'b1 p95 ms':>10} {'b32 titles/s':>13}"
    )
    for name, raw in results["raw"].items():
        print(
            f"{name:<12} {raw['threads']:>7} {raw['batch1_p50_ms']:>10.2f} "
            f"{raw['batch1_p95_ms']:>10.2f} {raw['batch32_titles_per_s']:>13.1f}"
        )
    header = (
        f"{'API mode':<12} {'conc':>5} {'req/s':>8} {'x raw32':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'errors':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    for mode, entry in results["modes"].items():
        base = results["raw"][entry["raw"]]
        for row in entry["levels"]:
            ratio = row["throughput"] / base["batch32_titles_per_s"]
            print(
                f"{mode:<12} {row['concurrency']:>5} {row['throughput']:>8.1f} {ratio:>8.2f} "
                f"{row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['p99_ms']:>8.2f} "
                f"{row['errors']:>7}"
            )
    print()
    for mode, entry in results["modes"].items():
        swap = entry["swap"]
        print(
            f"{mode}: start to /ready {entry['ready_s']} s; RSS at ready {entry['rss_idle_mib']} "
            f"MiB, after the load {entry['rss_loaded_mib']} MiB; hot swap peak "
            f"{swap['rss_peak_mib']} MiB, new version served {swap['swap_seen_after_s']} s after "
            "LATEST moved"
        )
    instrumentation = results.get("instrumentation")
    if instrumentation:
        print(
            f"\ninstrumentation ({instrumentation['rounds']} rounds of fresh processes, "
            f"{instrumentation['duration_s']} s a level; on = metrics + JSON access log, off and"
            " off2 = API_METRICS=false, log level warning); medians:"
        )
        print(f"{'':<5} {'conc':>5} {'req/s':>8} {'p50 ms':>8}")
        for name, by_level in instrumentation["medians"].items():
            for level, row in by_level.items():
                print(f"{name:<5} {level:>5} {row['throughput']:>8.1f} {row['p50_ms']:>8.2f}")
        print(f"cost, on vs off (median of the rounds' ratios): {instrumentation['cost']}")
        if "control" in instrumentation:
            print(f"control, off2 vs off (the noise floor): {instrumentation['control']}")
    if results.get("prediction_log"):
        print_prediction_log(results["prediction_log"])
    if results.get("shadow"):
        print_shadow(results["shadow"])
    for c in results["checks"]:
        print(f"{'PASS' if c['ok'] else 'FAIL'}  {c['check']}: {c['value']}")


def print_prediction_log(result: dict[str, Any]) -> None:
    """The inference log experiment: medians per server and level, then the cost of each
    database and the control."""
    print(
        f"\ninference log ({result['rounds']} rounds of fresh processes, {result['duration_s']} s "
        "a level; off = API_PREDICTION_LOG_SAMPLE=0 and API_LIVE_REFRESH_S=0, off2 the same "
        "again); medians:"
    )
    print(f"{'':<9} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'errors':>7}")
    for name, by_level in result["medians"].items():
        for level, row in by_level.items():
            print(
                f"{name:<9} {level:>5} {row['throughput']:>8.1f} {row['p50_ms']:>8.2f} "
                f"{row['errors']:>7}"
            )
    for name, cost in result["cost"].items():
        print(
            f"log on ({name}) vs off, median of the rounds' ratios: {cost}; rows logged "
            f"{result['rows_logged'][name]}, dropped {result['rows_dropped'].get(name, 0):.0f}"
        )
    if "control" in result:
        print(f"control, off2 vs off (the noise floor): {result['control']}")


def print_shadow(result: dict[str, Any]) -> None:
    """The shadow experiment: medians per server and level, the texts the candidate scored and
    shed per level, the cost and the control, the memory of one and two loaded versions."""
    print(
        f"\nshadow candidate ({result['rounds']} rounds of fresh processes, {result['duration_s']}"
        f" s a level; on = a copy of the version as the shadow candidate at sample "
        f"{result['sample']}, off and off2 = no candidate); medians:"
    )
    print(f"{'':<5} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'errors':>7}")
    for name, by_level in result["medians"].items():
        for level, row in by_level.items():
            print(
                f"{name:<5} {level:>5} {row['throughput']:>8.1f} {row['p50_ms']:>8.2f} "
                f"{row['errors']:>7}"
            )
    for level, texts in result["shadow_texts"].items():
        print(f"c={level}: shadow texts scored {texts['scored']:.0f}, shed {texts['shed']:.0f}")
    print(f"cost, on vs off (median of the rounds' ratios): {result['cost']}")
    if "control" in result:
        print(f"control, off2 vs off (the noise floor): {result['control']}")
    rss = result["rss_mib"]
    print(
        f"RSS, one version loaded: {rss['one_ready']} MiB at ready, {rss['one']} MiB after the "
        f"load; two (with the candidate): {rss['two_ready']} MiB, {rss['two']} MiB"
    )
