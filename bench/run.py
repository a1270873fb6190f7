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
   processes; the cost is the median of the rounds' on/off ratios, the control's the noise;
5. the cost of the inference log the same way (:mod:`bench.prediction_log`): logging off, on
   into SQLite, on into the PostgreSQL of ``--database-url`` when given;
6. the cost of a shadow candidate at sample 0.2 the same way (:mod:`bench.shadow`), and the
   memory of a second loaded version.
Prints a table, writes the same as JSON under data/bench/, and checks the targets of
bench/targets.toml (exit code 1 if one is missed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import report
from bench.api_modes import MODES, measure_mode, raw_runtimes
from bench.harness import DEFAULT_ARTEFACTS, DEFAULT_OUT, newest_version, private_store
from bench.instrumentation import instrumentation_cost
from bench.prediction_log import log_cost
from bench.raw import average_passes, raw_pass
from bench.shadow import shadow_cost


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``make bench`` (``BENCH_ARGS`` adds to it)."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="titles to send (any format)")
    parser.add_argument("--artefacts-dir", type=Path, default=DEFAULT_ARTEFACTS)
    parser.add_argument("--duration", type=int, default=10, help="seconds per load level")
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
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
    parser.add_argument(
        "--log-rounds",
        type=int,
        default=6,
        help="rounds of the inference log on/off comparison (0: skip it); its levels, seconds "
        "and control are the instrumentation's",
    )
    parser.add_argument(
        "--shadow-rounds",
        type=int,
        default=6,
        help="rounds of the shadow candidate on/off comparison (0: skip it); its levels, "
        "seconds and control are the instrumentation's",
    )
    parser.add_argument(
        "--database-url", default=None, help="a PostgreSQL for the inference log comparison"
    )
    parser.add_argument("--database-password-file", type=Path, default=None)
    parser.add_argument(
        "--targets", type=Path, default=report.TARGETS, help="the targets to check (TOML)"
    )
    return parser.parse_args(argv)


def measure_api(args: argparse.Namespace, folder: Path, titles: list[str]) -> dict[str, Any]:
    """The API experiments on a private copy of the version in ``folder``: each mode, then the
    instrumentation's cost, then the inference log's."""
    workdir = Path(tempfile.mkdtemp(prefix="tagger-bench-"))
    results: dict[str, Any] = {"modes": {}}
    try:
        bodies = workdir / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"text": t}) + "\n" for t in titles))
        store_root = private_store(folder.parent, folder.name, workdir / "artefacts")
        levels = [int(x) for x in args.levels.split(",")]
        for mode in args.modes.split(","):
            print(f"API, {mode} ...", flush=True)
            results["modes"][mode] = measure_mode(
                mode, store_root, bodies, levels, args.duration, args.threads
            )
        if args.obs_rounds > 0:
            print("API, instrumentation on vs off ...", flush=True)
            results["instrumentation"] = instrumentation_cost(
                store_root,
                bodies,
                [int(x) for x in args.obs_levels.split(",")],
                args.obs_rounds,
                args.obs_duration,
                args.threads,
                control=not args.obs_no_control,
            )
        if args.log_rounds > 0:
            print("API, inference log off vs on ...", flush=True)
            results["prediction_log"] = log_cost(
                store_root,
                bodies,
                [int(x) for x in args.obs_levels.split(",")],
                args.log_rounds,
                args.obs_duration,
                args.threads,
                args.database_url,
                args.database_password_file,
                control=not args.obs_no_control,
            )
        if args.shadow_rounds > 0:
            print("API, shadow candidate off vs on ...", flush=True)
            results["shadow"] = shadow_cost(
                store_root,
                bodies,
                [int(x) for x in args.obs_levels.split(",")],
                args.shadow_rounds,
                args.obs_duration,
                args.threads,
                control=not args.obs_no_control,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Raw pass, the API experiments, raw pass again; the report; 1 if a target is missed."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    unknown = [m for m in args.modes.split(",") if m not in MODES]
    if unknown:
        print(f"error: unknown mode(s) {unknown}; known: {', '.join(MODES)}", file=sys.stderr)
        return 2
    targets = report.load_targets(args.targets)
    from shared.data import read_dataset

    version = newest_version(args.artefacts_dir)
    folder = args.artefacts_dir / version
    titles = read_dataset(args.data).titles
    names = raw_runtimes(args.modes.split(","))
    raw = (folder, args.data, args.threads, args.raw_singles, args.raw_reps)
    print(f"raw model in-process ({version}) ...", flush=True)
    raw_before = raw_pass(names, *raw)
    results = measure_api(args, folder, titles)
    raw_after = raw_pass(names, *raw)
    results.update(
        raw=average_passes(raw_before, raw_after),
        raw_runs=[raw_before, raw_after],
        version=version,
        data=str(args.data),
        duration_s=args.duration,
        machine=report.machine(),
        created=report.now(),
    )
    results["checks"] = report.check(results, targets)
    report.print_table(results)
    path = report.save(results, args.out, "bench", "latest.json")
    print(f"\nwritten to {path}")
    return 0 if all(c["ok"] for c in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
