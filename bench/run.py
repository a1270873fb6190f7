"""``make bench``: the served model against its own in-process limit, on this machine.

1. the raw predictor in-process, on each runtime (torch fp32, ONNX Runtime fp32 and int8):
   batch-1 latency and batch-32 throughput on real titles;
2. the real API (``python -m api`` under uvicorn) on 127.0.0.1 with the same artefact, on each
   backend (and optionally with micro-batching off), driven by ``wrk`` (another process) at
   several concurrencies, one title per request;
3. memory (resident with one model, peak during a hot swap) and start-up time to ``/ready``;
4. the cost of the instrumentation: an API process with it (metrics on, JSON access log at
   info, as in production), one without (``API_METRICS=false``, log level warning) and a
   second one without as a control, driven in turn at concurrency 1 and 32, in rounds of fresh
   processes; the cost is the median of the rounds' on/off ratios, the control's the noise.
Prints a table, writes the same as JSON under data/bench/, and checks the targets
(exit code 1 if one is missed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "wrk_post.lua"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def raw_model(
    folder: Path,
    titles: list[str],
    threads: int,
    precision: str = "fp32",
    backend: str = "torch",
    n_singles: int = 300,
    reps: int = 5,
) -> dict[str, float]:
    """In-process limits of the predictor: batch-1 latency, batch-32 throughput."""
    from shared.backends import load_predictor

    predictor = load_predictor(folder, backend=backend, precision=precision, threads=threads)
    for title in titles[:20]:
        predictor.predict([title])
    singles = []
    for title in titles[:n_singles]:
        start = time.perf_counter()
        predictor.predict([title])
        singles.append((time.perf_counter() - start) * 1000)
    batches = [titles[i : i + 32] for i in range(0, min(len(titles), 32 * 50), 32)]
    predictor.predict(batches[0])
    rates = []
    for rep in range(reps):  # the median of runs of 10 batches: this VM's speed wanders
        chunk = batches[rep * 10 : rep * 10 + 10]
        start = time.perf_counter()
        for batch in chunk:
            predictor.predict(batch)
        rates.append(sum(len(b) for b in chunk) / (time.perf_counter() - start))
    return {
        "batch1_p50_ms": round(statistics.median(singles), 2),
        "batch1_p95_ms": round(statistics.quantiles(singles, n=20)[18], 2),
        "batch32_titles_per_s": round(statistics.median(rates), 1),
        "threads": threads or os.cpu_count() or 0,
    }


def raw_in_subprocess(
    folder: Path,
    data: Path,
    threads: int,
    precision: str = "fp32",
    backend: str = "torch",
    singles: int = 300,
    reps: int = 5,
) -> dict[str, float]:
    """Run :func:`raw_model` in a fresh process, so the parent holds no model or threads."""
    code = (
        "import json, sys; from pathlib import Path; from bench.run import raw_model; "
        "from shared.data import read_dataset; "
        "print(json.dumps(raw_model(Path(sys.argv[1]), read_dataset(sys.argv[2]).titles, "
        "int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7]))))"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            *map(str, (folder, data, threads, precision, backend, singles, reps)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


class Server:
    """``python -m api`` on a free loopback port, with its start-up time and memory."""

    def __init__(self, artefacts: Path, env: dict[str, str], cwd: Path = REPO) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api"],
            cwd=cwd,
            env={
                **os.environ,
                "API_ARTEFACTS_DIR": str(artefacts),
                "API_PORT": str(self.port),
                "API_LOG_LEVEL": "warning",
                "API_POLL_INTERVAL_S": "0.2",
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while http_status(f"{self.url}/ready") != 200:
            if self.proc.poll() is not None or time.monotonic() - started > 120:
                raise RuntimeError("the API did not become ready")
            time.sleep(0.02)
        self.ready_s = round(time.monotonic() - started, 2)

    def rss(self) -> float:
        return rss_mib(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def drive(url: str, bodies: Path, concurrency: int, duration: int) -> dict[str, Any]:
    """One wrk run; throughput, latency percentiles in ms, error count."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
            "--",
            str(bodies),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    return {
        "concurrency": concurrency,
        "throughput": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p95_ms": round(raw["p95_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "errors": raw["errors"] + raw["non_2xx"],
        "requests": raw["requests"],
    }


def swap_peak(server: Server, store_root: Path, version: str) -> dict[str, float]:
    """Publish a copy of the served version, move LATEST, sample RSS until it is served."""
    from shared.artefacts import MANIFEST_FILE, ArtefactStore

    store = ArtefactStore(store_root)
    with store.staging() as (new_version, folder):
        for path in (store_root / version).iterdir():
            if path.name != MANIFEST_FILE:
                shutil.copy(path, folder / path.name)
    before = server.rss()
    peak = before
    store.set_latest(new_version)
    started = time.monotonic()
    served_at = None
    while time.monotonic() - started < 30:
        peak = max(peak, server.rss())
        if served_at is None:
            with urllib.request.urlopen(f"{server.url}/model", timeout=5) as response:
                if json.load(response)["version"] == new_version:
                    served_at = time.monotonic() - started
        elif time.monotonic() - started > served_at + 2:
            break
        time.sleep(0.01)
    return {
        "rss_before_mib": round(before, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_after_mib": round(server.rss(), 1),
        "swap_seen_after_s": round(served_at or -1, 2),
    }


INSTRUMENTED = {"API_METRICS": "true", "API_LOG_FORMAT": "json", "API_LOG_LEVEL": "info"}
UNINSTRUMENTED = {"API_METRICS": "false", "API_LOG_LEVEL": "warning"}


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
    (``control``) on a second uninstrumented one ("off2"), to show what the comparison reads
    when nothing differs. Each round starts fresh processes (a process's own placement moves
    its speed by a few per cent, which would otherwise stay with one side for the whole run),
    warms them up, then drives each level on each of them in a rotating order. The cost is the
    median over rounds of each round's own on/off ratio, so a machine that drifts between
    rounds does not move it."""
    envs = {"on": INSTRUMENTED, "off": UNINSTRUMENTED}
    if control:
        envs["off2"] = UNINSTRUMENTED
    extra = {"API_POLL_INTERVAL_S": "2"}
    if threads:
        extra["API_TORCH_THREADS"] = str(threads)
    orders = list(itertools.permutations(envs))
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        name: {level: [] for level in levels} for name in envs
    }
    for rep in range(rounds):
        order = orders[rep % len(orders)]
        servers: dict[str, Server] = {}
        try:
            for name in order:
                servers[name] = Server(store_root, {**envs[name], **extra})
            for name in order:
                for level in levels:
                    drive(servers[name].url, bodies, level, 2)  # warm-up
            for level in levels:
                for name in order:
                    row = drive(servers[name].url, bodies, level, duration)
                    runs[name][level].append(row)
                    print(json.dumps({"instrumentation": name, "round": rep, **row}), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    medians = {
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
    result: dict[str, Any] = {"rounds": rounds, "duration_s": duration, "medians": medians}
    for key, name in (("cost", "on"), ("control", "off2")):
        if name in runs:
            result[key] = relative_cost(runs[name], runs["off"], levels)
    result["runs"] = runs
    return result


def relative_cost(
    runs: dict[int, list[dict[str, Any]]], base: dict[int, list[dict[str, Any]]], levels: list[int]
) -> dict[str, float | None]:
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


# API modes: the environment of the server, and the raw run its throughput is compared with.
MODES: dict[str, tuple[dict[str, str], str]] = {
    "torch": ({"API_BACKEND": "torch", "API_BATCHING": "true"}, "torch-fp32"),
    "onnx": ({"API_BACKEND": "onnx", "API_BATCHING": "true"}, "onnx-fp32"),
    "onnx-int8": (
        {"API_BACKEND": "onnx", "API_BATCHING": "true", "API_PRECISION": "int8"},
        "onnx-int8",
    ),
    "torch-int8": (
        {"API_BACKEND": "torch", "API_BATCHING": "true", "API_PRECISION": "int8"},
        "torch-int8",
    ),
    "no-batching": ({"API_BACKEND": "torch", "API_BATCHING": "false"}, "torch-fp32"),
}
RAW = {  # name: (backend, precision)
    "torch-fp32": ("torch", "fp32"),
    "onnx-fp32": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "torch-int8": ("torch", "int8"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="titles to send (any format)")
    parser.add_argument("--artefacts-dir", type=Path, default=REPO / "data" / "artefacts")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load level")
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--threads", type=int, default=0, help="runtime threads (0: default)")
    parser.add_argument(
        "--raw-singles", type=int, default=300, help="batch-1 calls per raw measurement"
    )
    parser.add_argument(
        "--raw-reps", type=int, default=5, help="runs of 10 batches of 32 per raw measurement"
    )
    parser.add_argument(
        "--modes",
        default="torch,onnx,onnx-int8",
        help=f"API modes to drive (comma-separated) of: {', '.join(MODES)}",
    )
    parser.add_argument(
        "--obs-rounds",
        type=int,
        default=9,
        help="rounds of the instrumentation on/off comparison, fresh processes each (0: skip it)",
    )
    parser.add_argument("--obs-levels", default="1,32", help="its concurrency levels")
    parser.add_argument(
        "--obs-duration", type=int, default=3, help="its seconds per level, server and round"
    )
    parser.add_argument(
        "--obs-no-control",
        action="store_true",
        help="leave out its control (a second uninstrumented API, to show the noise)",
    )
    args = parser.parse_args(argv)

    from shared.artefacts import ArtefactStore
    from shared.data import read_dataset

    if shutil.which("wrk") is None:
        print("error: wrk is not installed (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        print(f"error: unknown mode(s) {unknown}; known: {', '.join(MODES)}", file=sys.stderr)
        return 2
    source = ArtefactStore(args.artefacts_dir)
    version = source.latest()
    if version is None:
        print(
            f"error: no model in {args.artefacts_dir}: run make train-quick first", file=sys.stderr
        )
        return 2
    titles = read_dataset(args.data).titles
    levels = [int(x) for x in args.levels.split(",")]
    folder = source.root / version
    raw_names = list(dict.fromkeys(["torch-fp32", *(MODES[m][1] for m in modes)]))

    def raw_pass() -> dict[str, dict[str, float]]:
        found = {}
        for name in raw_names:
            backend, precision = RAW[name]
            found[name] = raw_in_subprocess(
                folder, args.data, args.threads, precision, backend, args.raw_singles, args.raw_reps
            )
            print(f"raw {name}:", json.dumps(found[name]), flush=True)
        return found

    print(f"raw model in-process ({version}) ...", flush=True)
    raw_before = raw_pass()

    workdir = Path(tempfile.mkdtemp(prefix="tagger-bench-"))
    results: dict[str, Any] = {"modes": {}}
    try:
        bodies = workdir / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"text": t}) + "\n" for t in titles))
        store_root = workdir / "artefacts"
        store_root.mkdir()
        shutil.copytree(folder, store_root / version)
        (store_root / "LATEST").write_text(version + "\n")

        for mode in modes:
            env, raw_name = MODES[mode]
            if args.threads:
                env = {**env, "API_TORCH_THREADS": str(args.threads)}
            print(f"API, {mode} ...", flush=True)
            served = (store_root / "LATEST").read_text().strip()
            server = Server(store_root, env)
            try:
                idle_rss = server.rss()
                drive(server.url, bodies, 8, 3)  # warm-up
                rows = []
                for concurrency in levels:
                    row = drive(server.url, bodies, concurrency, args.duration)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                results["modes"][mode] = {
                    "raw": raw_name,
                    "ready_s": server.ready_s,
                    "rss_idle_mib": round(idle_rss, 1),
                    "levels": rows,
                    "rss_loaded_mib": round(server.rss(), 1),
                    "swap": swap_peak(server, store_root, served),
                }
            finally:
                server.stop()
        if args.obs_rounds > 0:
            print("API, instrumentation on vs off ...", flush=True)
            obs_levels = [int(x) for x in args.obs_levels.split(",")]
            results["instrumentation"] = instrumentation_cost(
                store_root,
                bodies,
                obs_levels,
                args.obs_rounds,
                args.obs_duration,
                args.threads,
                control=not args.obs_no_control,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    raw_after = raw_pass()
    raw = {}
    for name in raw_names:
        raw[name] = {
            key: round((raw_before[name][key] + raw_after[name][key]) / 2, 2)
            for key in ("batch1_p50_ms", "batch1_p95_ms", "batch32_titles_per_s")
        }
        raw[name]["threads"] = raw_before[name]["threads"]
    results.update(
        raw=raw,
        raw_runs=[raw_before, raw_after],
        version=version,
        data=str(args.data),
        duration_s=args.duration,
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "load_average_at_end": os.getloadavg(),
        },
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    checks = check(results)
    results["checks"] = checks
    print_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"bench-{stamp}.json", "latest.json"):
        (args.out / name).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}/bench-{stamp}.json")
    return 0 if all(c["ok"] for c in checks) else 1


def _at(results: dict[str, Any], mode: str, concurrency: int) -> dict[str, Any] | None:
    entry = results["modes"].get(mode)
    if entry is None:
        return None
    return next((r for r in entry["levels"] if r["concurrency"] == concurrency), None)


def check(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets (issue 12): each backend near its own raw rate, ONNX well above torch."""
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float, ok: bool) -> None:
        checks.append({"check": name, "value": value, "ok": ok})

    for mode, entry in results["modes"].items():
        raw = results["raw"][entry["raw"]]
        row32 = _at(results, mode, 32)
        if row32 is not None and entry["raw"] and mode != "no-batching":
            ratio = row32["throughput"] / raw["batch32_titles_per_s"]
            add(f"{mode}: c=32 >= 0.85 x its raw batch-32", round(ratio, 3), ratio >= 0.85)
        if mode != "no-batching":
            errors = sum(r["errors"] for r in entry["levels"])
            add(f"{mode}: zero errors", errors, errors == 0)
        swap = entry.get("swap")
        if swap:
            ratio = swap["rss_peak_mib"] / entry["rss_loaded_mib"]
            add(f"{mode}: hot-swap peak RSS < 2.2 x one-model RSS", round(ratio, 2), ratio < 2.2)
    torch32 = _at(results, "torch", 32)
    for mode, factor in (("onnx", 1.3), ("onnx-int8", 2.5)):
        row = _at(results, mode, 32)
        if row is not None and torch32 is not None:
            ratio = row["throughput"] / torch32["throughput"]
            add(f"{mode}: c=32 >= {factor} x torch API c=32", round(ratio, 2), ratio >= factor)
    for mode, limit in (("onnx", 7.0), ("onnx-int8", 5.0)):
        row = _at(results, mode, 1)
        if row is not None:
            add(f"{mode}: c=1 p50 <= {limit} ms", row["p50_ms"], row["p50_ms"] <= limit)
    torch1 = _at(results, "torch", 1)
    if torch1 is not None:
        gap = torch1["p50_ms"] - results["raw"]["torch-fp32"]["batch1_p50_ms"]
        add("torch: c=1 p50 <= raw batch-1 p50 + 3 ms", round(gap, 2), gap <= 3.0)
    for mode, ready_limit, rss_limit in (("onnx", 1.5, 300.0), ("torch", 5.0, None)):
        entry = results["modes"].get(mode)
        if entry is None:
            continue
        ready = entry["ready_s"]
        add(f"{mode}: start to /ready <= {ready_limit} s", ready, ready <= ready_limit)
        if rss_limit is not None:
            rss = entry["rss_idle_mib"]
            add(f"{mode}: RSS at ready <= {rss_limit:.0f} MiB", rss, rss <= rss_limit)
    cost = results.get("instrumentation", {}).get("cost", {})
    for key in ("c1_p50_slower_pct", "c32_throughput_lower_pct"):
        if key in cost:
            value = cost[key]
            add(f"instrumentation {key} <= 3", value, value is not None and value <= 3)
    return checks


def print_table(results: dict[str, Any]) -> None:
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
    for c in results["checks"]:
        print(f"{'PASS' if c['ok'] else 'FAIL'}  {c['check']}: {c['value']}")


if __name__ == "__main__":
    sys.exit(main())
