"""``make bench-swap``: hot swaps under load. Do swaps stall serving?

Serves a copy of the newest published version and a clone of it (two versions, same
weights) with ``python -m api`` on 127.0.0.1, drives it with ``--clients`` concurrent
keep-alive clients (an asyncio HTTP/1.1 client in this process, one real title per request),
and after a steady phase moves ``LATEST`` between the two versions ``--swaps`` times. It reports
latency percentiles of requests in the steady phase and of requests in flight during a swap
(from the moment ``LATEST`` moved to the first answer from the new version), failed requests
(anything but 200, or no answer), and how long each swap took. Prints a table and writes the
same as JSON under data/bench/; exits 1 if a request failed or the p99 during swaps is over
``--max-ratio`` times the steady p99.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.harness import (
    DEFAULT_ARTEFACTS,
    DEFAULT_OUT,
    REPO,
    Server,
    clone_version,
    newest_version,
    private_store,
)

REQUEST_TIMEOUT_S = 30.0


@dataclass
class Record:
    sent: float
    done: float
    status: int  # 0: no answer (connection error or timeout)
    version: str | None


async def _one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> tuple[int, str | None]:
    writer.write(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    answer = json.loads(await reader.readexactly(length)) if length else {}
    return status, answer.get("model_version")


async def client(
    port: int, bodies: list[bytes], stop_at: float, records: list[Record], seed: int
) -> None:
    rng = random.Random(seed)
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.monotonic() < stop_at:
        body = rng.choice(bodies)
        sent = time.monotonic()
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            status, version = await asyncio.wait_for(_one(*connection, body), REQUEST_TIMEOUT_S)
        except (OSError, ValueError, IndexError, TimeoutError, asyncio.IncompleteReadError):
            status, version = 0, None
            if connection is not None:
                connection[1].close()
            connection = None
        records.append(Record(sent, time.monotonic(), status, version))
    if connection is not None:
        connection[1].close()


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    if len(latencies_ms) < 2:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    cuts = statistics.quantiles(latencies_ms, n=100)
    return {
        "p50_ms": round(cuts[49], 1),
        "p99_ms": round(cuts[98], 1),
        "max_ms": round(max(latencies_ms), 1),
    }


def prepare_store(source_root: Path, workdir: Path) -> tuple[Path, str, str]:
    """A private artefacts folder with the newest version and a clone of it."""
    from shared.store import ArtefactStore

    first = newest_version(source_root)
    root = private_store(source_root, first, workdir / "artefacts")
    second = clone_version(root, first)
    ArtefactStore(root).set_latest(first)
    return root, first, second


async def run_load(
    server: Server, root: Path, versions: tuple[str, str], bodies: list[bytes], args: Any
) -> dict[str, Any]:
    from shared.store import ArtefactStore

    store = ArtefactStore(root)
    records: list[Record] = []
    start = time.monotonic()
    # Generous: the clients stop once the last swap has been seen and a gap has passed.
    stop_at = [start + 3600.0]
    clients = [
        asyncio.create_task(client(server.port, bodies, stop_at[0], records, seed))
        for seed in range(args.clients)
    ]

    async def stopper() -> None:
        while time.monotonic() < stop_at[0]:
            await asyncio.sleep(0.05)

    scanned = [0]

    def served_since(moment: float, version: str) -> float | None:
        """When the first answer from ``version`` to a request sent after ``moment`` came."""
        for r in records[scanned[0] :]:
            if r.sent >= moment and r.version == version:
                return r.done
        scanned[0] = len(records)
        return None

    await asyncio.sleep(args.warmup_s)
    steady = (time.monotonic(), time.monotonic() + args.steady_s)
    await asyncio.sleep(args.steady_s)
    swaps = []
    current = versions[0]
    for _ in range(args.swaps):
        target = versions[1] if current == versions[0] else versions[0]
        moved = time.monotonic()
        store.set_latest(target)
        while (seen := served_since(moved, target)) is None:
            if time.monotonic() - moved > 120:
                raise RuntimeError(f"version {target} was not served 120 s after LATEST moved")
            await asyncio.sleep(0.01)
        swaps.append((moved, seen))
        current = target
        await asyncio.sleep(args.gap_s)
    stop_at[0] = time.monotonic()
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)

    def latencies(keep: Any) -> list[float]:
        return [(r.done - r.sent) * 1000 for r in records if r.status == 200 and keep(r)]

    in_steady = latencies(lambda r: steady[0] <= r.sent and r.done <= steady[1])
    in_swap = latencies(lambda r: any(r.sent <= b and r.done >= a for a, b in swaps))
    # The longest time without a single answer: a stalled inference thread shows here even
    # when a busy machine blurs the percentiles.
    answers = sorted(r.done for r in records if r.status == 200)

    def longest_gap(start: float, end: float) -> float:
        inside = [t for t in answers if start <= t <= end]
        return max((b - a for a, b in itertools.pairwise(inside)), default=0.0)

    steady_gap = longest_gap(*steady)
    swap_gap = max(longest_gap(a, b + 0.5) for a, b in swaps)
    measured = [r for r in records if r.sent >= steady[0]]
    failed = [r for r in measured if r.status != 200]
    durations = [round(b - a, 3) for a, b in swaps]
    return {
        "steady": {"requests": len(in_steady), **percentiles(in_steady)},
        "during_swaps": {"requests": len(in_swap), **percentiles(in_swap)},
        "all": {
            "requests": len(measured),
            "req_per_s": round(len(measured) / (stop_at[0] - steady[0]), 1),
            **percentiles([(r.done - r.sent) * 1000 for r in measured if r.status == 200]),
        },
        "longest_gap_ms": {
            "steady": round(steady_gap * 1000, 1),
            "during_swaps": round(swap_gap * 1000, 1),
        },
        "failed": len(failed),
        "failed_statuses": sorted({r.status for r in failed}),
        "swap_s": durations,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``make bench-swap``."""
    parser = argparse.ArgumentParser(prog="python -m bench.swap", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="titles to send (any format)")
    parser.add_argument("--artefacts-dir", type=Path, default=DEFAULT_ARTEFACTS)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--steady-s", type=float, default=15.0)
    parser.add_argument("--gap-s", type=float, default=3.0, help="steady time after each swap")
    parser.add_argument("--poll-s", type=float, default=0.1, help="API_POLL_INTERVAL_S")
    parser.add_argument("--max-ratio", type=float, default=2.0)
    parser.add_argument(
        "--api-dir",
        type=Path,
        default=REPO,
        help="run `python -m api` from this checkout (e.g. an export of an older commit)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve two copies of the newest version, swap under load, print and write the figures;
    1 if a request failed or the p99 during swaps is over ``--max-ratio`` x steady."""
    args = parse_args(argv)

    from shared.data import read_dataset

    titles = read_dataset(args.data).titles
    bodies = [json.dumps({"text": t}).encode() for t in titles]
    workdir = Path(tempfile.mkdtemp(prefix="tagger-swap-"))
    try:
        root, first, second = prepare_store(args.artefacts_dir, workdir)
        manifest = json.loads((root / first / "manifest.json").read_text())
        server = Server(root, {"API_POLL_INTERVAL_S": str(args.poll_s)}, cwd=args.api_dir)
        try:
            result = asyncio.run(run_load(server, root, (first, second), bodies, args))
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    steady, swapping = result["steady"]["p99_ms"], result["during_swaps"]["p99_ms"]
    result.update(
        ratio_p99=round(swapping / steady, 2),
        model={"version": first, "base_model": manifest.get("base_model")},
        clients=args.clients,
        swaps=args.swaps,
        api_dir=str(args.api_dir),
        created=report.now(),
    )
    print_table(result)
    print(f"written to {report.save(result, args.out, 'swap')}")
    ok = result["failed"] == 0 and result["ratio_p99"] <= args.max_ratio
    print(
        f"{'PASS' if ok else 'FAIL'}  zero failed requests ({result['failed']}) and p99 during "
        f"swaps <= {args.max_ratio} x steady ({result['ratio_p99']})"
    )
    return 0 if ok else 1


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['clients']} clients, {result['swaps']} hot swaps, model "
        f"{result['model']['version']} ({result['model']['base_model']}), API from "
        f"{result['api_dir']}"
    )
    header = f"{'phase':<14} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    print(header)
    print("-" * len(header))
    for name in ("steady", "during_swaps", "all"):
        row = result[name]
        print(
            f"{name:<14} {row['requests']:>9} {row['p50_ms']:>8} {row['p99_ms']:>8} "
            f"{row['max_ms']:>8}"
        )
    swaps = result["swap_s"]
    print(
        f"failed requests: {result['failed']} {result['failed_statuses'] or ''}; throughput "
        f"{result['all']['req_per_s']} req/s; swap (LATEST moved -> first answer from the new "
        f"version) median {statistics.median(swaps):.2f} s, max {max(swaps):.2f} s; p99 during "
        f"swaps / steady p99 = {result['ratio_p99']}"
    )
    gaps = result["longest_gap_ms"]
    print(
        f"longest time without an answer: steady {gaps['steady']} ms, during swaps "
        f"{gaps['during_swaps']} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
