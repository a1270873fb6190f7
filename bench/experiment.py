"""The command line every on/off experiment of ``make bench`` shares (:mod:`bench.prediction_log`,
:mod:`bench.shadow`): the common flags, and one run on a private copy of the newest version
that prints the experiment's table and the targets' checks and writes the JSON."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report
from bench.harness import DEFAULT_ARTEFACTS, DEFAULT_OUT, newest_version, private_store

# (the private store, the request bodies, the concurrency levels) -> the experiment's result
Measure = Callable[[Path, Path, list[int]], dict[str, Any]]


def parser(prog: str, description: str | None, rounds: int) -> argparse.ArgumentParser:
    """The flags every experiment takes; the caller adds its own."""
    found = argparse.ArgumentParser(prog=prog, description=description)
    found.add_argument("--data", type=Path, required=True, help="titles to send (any format)")
    found.add_argument("--artefacts-dir", type=Path, default=DEFAULT_ARTEFACTS)
    found.add_argument("--rounds", type=int, default=rounds, help="rounds of fresh processes")
    found.add_argument("--levels", default="1,32", help="concurrency levels")
    found.add_argument("--duration", type=int, default=3, help="seconds per level and server")
    found.add_argument("--threads", type=int, default=0, help="runtime threads (0: default)")
    found.add_argument("--no-control", action="store_true", help="leave out the control")
    found.add_argument("--out", type=Path, default=DEFAULT_OUT)
    found.add_argument("--targets", type=Path, default=report.TARGETS)
    return found


def run(
    args: argparse.Namespace,
    key: str,
    measure: Measure,
    show: Callable[[dict[str, Any]], None],
    stem: str,
    latest: str,
) -> int:
    """``measure`` on a private copy of the newest version in ``args.artefacts_dir``; its result
    under ``key`` in the JSON written to ``args.out`` (``stem``-timestamp and ``latest``), the
    table ``show`` prints and the targets' checks; 1 if one is missed, 2 without wrk."""
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    targets = report.load_targets(args.targets)
    from shared.data import read_dataset

    version = newest_version(args.artefacts_dir)
    workdir = Path(tempfile.mkdtemp(prefix="tagger-bench-"))
    try:
        bodies = workdir / "bodies.jsonl"
        titles = read_dataset(args.data).titles
        bodies.write_text("".join(json.dumps({"text": t}) + "\n" for t in titles))
        store_root = private_store(args.artefacts_dir, version, workdir / "artefacts")
        result = measure(store_root, bodies, [int(x) for x in args.levels.split(",")])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results: dict[str, Any] = {
        key: result,
        "modes": {},
        "version": version,
        "machine": report.machine(),
        "created": report.now(),
    }
    results["checks"] = report.check(results, targets)
    show(result)
    for c in results["checks"]:
        print(f"{'PASS' if c['ok'] else 'FAIL'}  {c['check']}: {c['value']}")
    path = report.save(results, args.out, stem, latest)
    print(f"\nwritten to {path}")
    return 0 if all(c["ok"] for c in results["checks"]) else 1
