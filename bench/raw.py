"""The raw model, in-process: batch-1 latency and batch-32 throughput of the predictor on one
runtime, the limit the API's figures are read against.

``python -m bench.raw --folder VERSION_FOLDER --data FILE`` measures one runtime and prints
one JSON line; :func:`raw_pass` runs it in a fresh process per runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.harness import run_fresh

# The raw runs an API mode can be compared with: name -> (backend, precision).
RUNTIMES: dict[str, tuple[str, str]] = {
    "torch-fp32": ("torch", "fp32"),
    "onnx-fp32": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "torch-int8": ("torch", "int8"),
}
FIGURES = ("batch1_p50_ms", "batch1_p95_ms", "batch32_titles_per_s")


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
    from shared.predictor import load_predictor

    # ONNX Runtime's idle threads spin (ONNX Runtime's own default): the runtime at its limit,
    # what the API's single requests are read against.
    predictor = load_predictor(
        folder, backend=backend, precision=precision, threads=threads, spinning="on"
    )
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


def raw_pass(
    names: list[str], folder: Path, data: Path, threads: int, singles: int, reps: int
) -> dict[str, dict[str, float]]:
    """Each named runtime measured in its own fresh process (so the caller holds no model or
    threads), printed as it comes."""
    found = {}
    for name in names:
        backend, precision = RUNTIMES[name]
        found[name] = run_fresh(
            "bench.raw",
            *("--folder", folder, "--data", data, "--threads", threads),
            *("--backend", backend, "--precision", precision),
            *("--singles", singles, "--reps", reps),
        )
        print(f"raw {name}:", json.dumps(found[name]), flush=True)
    return found


def average_passes(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """The mean of a pass before and one after the API runs, per runtime (this VM's speed
    wanders over a run)."""
    raw: dict[str, dict[str, float]] = {}
    for name in before:
        raw[name] = {key: round((before[name][key] + after[name][key]) / 2, 2) for key in FIGURES}
        raw[name]["threads"] = before[name]["threads"]
    return raw


def main(argv: list[str] | None = None) -> int:
    """Measure one runtime on one published version; print the figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.raw", description=__doc__)
    parser.add_argument("--folder", type=Path, required=True, help="a published version")
    parser.add_argument("--data", type=Path, required=True, help="titles (any format)")
    parser.add_argument("--threads", type=int, default=0, help="runtime threads (0: default)")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--singles", type=int, default=300, help="batch-1 calls")
    parser.add_argument("--reps", type=int, default=5, help="runs of 10 batches of 32")
    args = parser.parse_args(argv)
    from shared.data import read_dataset

    titles = read_dataset(args.data).titles
    figures: dict[str, Any] = raw_model(
        args.folder, titles, args.threads, args.precision, args.backend, args.singles, args.reps
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
