"""``python -m bench.threads``: does loading a model on another thread slow later inference?

The API used to load every version on its one inference thread, because "torch work on two
threads made later forward passes about 3.5 ms slower". This checks that claim with the
newest published version: batch-1 latency on a serving thread of a model built (and warmed
up) on that same thread, against one built and warmed up on a separate loader thread, and
the serving thread's latency while the loader thread builds another copy. Each arm runs in a
fresh process, alternating, ``--rounds`` times; prints medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.harness import DEFAULT_ARTEFACTS, newest_version, run_fresh

ARMS = ("same", "loader")  # where the model is built: the serving thread, or a loader


def arm(folder: Path, titles: list[str], where: str, n: int) -> dict[str, float]:
    """One arm, in this process: build the model on the ``where`` thread, time on "serve"."""
    from shared.predictor import Predictor
    from shared.predictor.torch_runner import load_torch_predictor

    serve = ThreadPoolExecutor(1, thread_name_prefix="serve")
    loader = ThreadPoolExecutor(1, thread_name_prefix="loader")

    def build() -> Predictor:
        predictor = load_torch_predictor(folder, verify_checksums=False)
        predictor.predict([titles[0]], 1)
        return predictor

    predictor = (serve if where == "same" else loader).submit(build).result()

    def timed(count: int) -> list[float]:
        out = []
        for title in (titles * 10)[:count]:
            start = time.perf_counter()
            predictor.predict([title])
            out.append((time.perf_counter() - start) * 1000)
        return out

    serve.submit(timed, 30).result()  # warm the serving thread either way
    steady = serve.submit(timed, n).result()
    # The serving thread's latency while the loader builds another copy of the model.
    during: list[float] = []
    done = threading.Event()

    def load_again() -> None:
        build()
        done.set()

    def serve_while_loading() -> None:
        while not done.is_set():
            during.extend(timed(1))

    started = time.perf_counter()
    pending = loader.submit(load_again)
    serve.submit(serve_while_loading).result()
    pending.result()
    load_s = time.perf_counter() - started
    after = serve.submit(timed, n).result()
    return {
        "steady_p50_ms": round(statistics.median(steady), 2),
        "during_load_p50_ms": round(statistics.median(during), 2) if during else 0.0,
        "during_load_max_ms": round(max(during), 2) if during else 0.0,
        "load_s": round(load_s, 2),
        "after_load_p50_ms": round(statistics.median(after), 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Both arms, alternating, each in a fresh process (``--arm``), ``--rounds`` times."""
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--artefacts-dir", type=Path, default=DEFAULT_ARTEFACTS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=200, help="timed predictions per phase")
    parser.add_argument(
        "--arm",
        choices=ARMS,
        help="run this one arm here and print it as JSON (what each round"
        " starts in a fresh process)",
    )
    parser.add_argument("--folder", type=Path, help="the version to load (default: the newest)")
    args = parser.parse_args(argv)
    folder = args.folder or args.artefacts_dir / newest_version(args.artefacts_dir)
    if args.arm:
        from shared.data import read_dataset

        print(json.dumps(arm(folder, read_dataset(args.data).titles, args.arm, args.n)))
        return 0
    results: dict[str, list[dict[str, float]]] = {where: [] for where in ARMS}
    for _ in range(args.rounds):
        for where in ARMS:
            row = run_fresh(
                "bench.threads",
                *("--data", args.data, "--folder", folder, "-n", args.n, "--arm", where),
            )
            print(where, json.dumps(row), flush=True)
            results[where].append(row)
    print(f"\nmodel {folder.name}; medians over {args.rounds} rounds (ms, batch 1)")
    print(f"{'built on':<10} {'steady p50':>11} {'during load p50':>16} {'after load p50':>15}")
    for where, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"{where:<10} {med['steady_p50_ms']:>11.2f} {med['during_load_p50_ms']:>16.2f} "
            f"{med['after_load_p50_ms']:>15.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
