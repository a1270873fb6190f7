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
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.run import REPO


def arm(folder: Path, titles: list[str], where: str, n: int) -> dict[str, float]:
    """One arm, in this process: build the model on the ``where`` thread, time on "serve"."""
    from shared.predictor import Predictor

    serve = ThreadPoolExecutor(1, thread_name_prefix="serve")
    loader = ThreadPoolExecutor(1, thread_name_prefix="loader")

    def build() -> Predictor:
        predictor = Predictor.from_folder(folder, verify_checksums=False)
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
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--artefacts-dir", type=Path, default=REPO / "data" / "artefacts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=200, help="timed predictions per phase")
    args = parser.parse_args(argv)
    from shared.artefacts import ArtefactStore

    version = ArtefactStore(args.artefacts_dir).latest()
    if version is None:
        print("error: no model published: make train-quick", file=sys.stderr)
        return 2
    folder = args.artefacts_dir / version
    code = (
        "import json, sys; from pathlib import Path; from bench.threads import arm; "
        "from shared.data import read_dataset; "
        "print(json.dumps(arm(Path(sys.argv[1]), read_dataset(sys.argv[2]).titles, "
        "sys.argv[3], int(sys.argv[4]))))"
    )
    results: dict[str, list[dict[str, float]]] = {"same": [], "loader": []}
    for _ in range(args.rounds):
        for where in ("same", "loader"):
            out = subprocess.run(
                [sys.executable, "-c", code, str(folder), str(args.data), where, str(args.n)],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(where, json.dumps(row), flush=True)
            results[where].append(row)
    print(f"\nmodel {version}; medians over {args.rounds} rounds (ms, batch 1)")
    print(f"{'built on':<10} {'steady p50':>11} {'during load p50':>16} {'after load p50':>15}")
    for where, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"{where:<10} {med['steady_p50_ms']:>11.2f} {med['during_load_p50_ms']:>16.2f} "
            f"{med['after_load_p50_ms']:>15.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
