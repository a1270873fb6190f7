"""``python -m tests.attack.slow``: slow clients against a real API process on the tiny model.

1,500 connections each send the headers of a ``POST /predict`` declaring a 512,000-byte body,
then the body at a trickle (1 KiB every 0.5 s for a few seconds), then stall. Meanwhile a
normal client sends small ``/predict`` requests one after another, as it did for a few seconds
before the attack. Prints the API's idle and peak memory (VmRSS, sampled), how each slow
connection ended (408, 503, refused or reset), and the normal client's success and p50/p99
during the attack against before it.

Exits non-zero when the peak is more than 200 MiB over idle, when a slow connection ends any
other way (a 200, another status) or is still open 10 s past the body deadline, or when the
normal client's success is under 99 %. Finishes in about a minute (well under 3).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.serving import ApiProcess, publish_tiny_model

CONNECTIONS = 1500
DECLARED_BYTES = 512_000
CHUNK_BYTES = 1024
CHUNK_EVERY_S = 0.5
TRICKLE_S = 6.0  # then the client stalls, its body never complete
REQUEST_TIMEOUT_S = 10.0  # the API's default API_REQUEST_TIMEOUT_S, set explicitly below
GRACE_S = 10.0  # a slow connection still open this long past the deadline has hung
BASELINE_S = 5.0
ENDED_WELL = ("408", "503", "refused", "reset")
MAX_GROWTH_MIB = 200.0
MIN_SUCCESS = 0.99
TEXT = {"text": "how to merge two dictionaries in python"}


@dataclass
class Client:
    """The normal client's answers (status, seconds) between ``start`` and ``stop``."""

    url: str
    results: list[tuple[int, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    status = http.post(f"{self.url}/predict", json=TEXT).status_code
                except httpx.HTTPError:
                    status = 0
                self.results.append((status, time.perf_counter() - started))

    def summary(self) -> tuple[str, float]:
        """One line (count, success, p50, p99) and the success share."""
        n = len(self.results)
        ok = sum(1 for status, _ in self.results if status == 200)
        times = sorted(seconds for _, seconds in self.results)
        share = ok / n if n else 0.0
        return (
            f"{n} requests, {100 * share:.1f} % ok, p50 {1000 * percentile(times, 0.5):.1f} ms, "
            f"p99 {1000 * percentile(times, 0.99):.1f} ms",
            share,
        )


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_client_for(url: str, seconds: float) -> Client:
    client = Client(url)
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    time.sleep(seconds)
    client.stop.set()
    thread.join()
    return client


async def slow_connection(port: int, chunk: bytes) -> tuple[str, float]:
    """One slow upload; how it ended (``408``, ``503``, ``refused``, ``reset``, ``hung`` or
    ``other NNN``) and when, in seconds from its start."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "refused", loop.time() - started
    head = (
        "POST /predict HTTP/1.1\r\nHost: attack\r\nContent-Type: application/json\r\n"
        f"Content-Length: {DECLARED_BYTES}\r\n\r\n"
    )
    answer = asyncio.ensure_future(reader.read())  # the whole response, up to the close
    try:
        writer.write(head.encode())
        sent = 0.0
        while sent < TRICKLE_S and not answer.done():
            writer.write(chunk)
            await writer.drain()
            await asyncio.wait({answer}, timeout=CHUNK_EVERY_S)
            sent += CHUNK_EVERY_S
        remaining = started + REQUEST_TIMEOUT_S + GRACE_S - loop.time()
        data = await asyncio.wait_for(answer, timeout=max(remaining, 0.1))
    except TimeoutError:
        return "hung", loop.time() - started
    except OSError:
        data = answer.result() if answer.done() and not answer.exception() else b""
        if not data.startswith(b"HTTP/"):
            return "reset", loop.time() - started
    finally:
        if not answer.done():
            answer.cancel()
        writer.close()
    ended = loop.time() - started
    if not data.startswith(b"HTTP/"):
        return "reset", ended  # closed without an answer
    status = data.split(b" ", 2)[1].decode()
    return (status if status in ("408", "503") else f"other {status}"), ended


async def attack(port: int, chunk_bytes: int) -> list[tuple[str, float]]:
    chunk = b"x" * chunk_bytes
    return await asyncio.gather(*(slow_connection(port, chunk) for _ in range(CONNECTIONS)))


def sample_rss(api: ApiProcess, stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], api.rss_mib())
        except (OSError, RuntimeError):
            return
        time.sleep(0.05)


def raise_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.attack.slow", description=__doc__)
    parser.add_argument(
        "--chunk-bytes",
        type=int,
        default=CHUNK_BYTES,
        help="bytes each slow client sends every 0.5 s (4096: 48 KiB each, 72 MiB in all, "
        "past the 64 MiB body budget, so some end in 503)",
    )
    args = parser.parse_args(argv)
    raise_open_files(CONNECTIONS + 1024)  # the API inherits it and raises its own further
    work = Path(tempfile.mkdtemp(prefix="tagger-attack-slow-"))
    try:
        print("slow: training the tiny test model ...", flush=True)
        artefacts = publish_tiny_model(work)
        with ApiProcess(work, artefacts, API_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S)) as api:
            return measure(api, args.chunk_bytes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(api: ApiProcess, chunk_bytes: int) -> int:
    run_client_for(api.url, 1.0)  # warm up: first passes, caches
    idle = api.rss_mib()
    before = run_client_for(api.url, BASELINE_S)

    peak = [idle]
    stop_sampling = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(api, stop_sampling, peak), daemon=True)
    sampler.start()
    during = Client(api.url)
    normal = threading.Thread(target=during.run, daemon=True)
    started = time.monotonic()
    normal.start()
    outcomes = asyncio.run(attack(api.port, chunk_bytes))
    took = time.monotonic() - started
    during.stop.set()
    normal.join()
    stop_sampling.set()
    sampler.join()

    counts = Counter(kind for kind, _ in outcomes)
    latest_end = max(seconds for _, seconds in outcomes)
    growth = peak[0] - idle
    before_line, _ = before.summary()
    during_line, success = during.summary()
    ended_badly = sum(n for kind, n in counts.items() if kind not in ENDED_WELL)
    p99_before = percentile(sorted(s for _, s in before.results), 0.99)
    p99_during = percentile(sorted(s for _, s in during.results), 0.99)
    failures = []
    if growth > MAX_GROWTH_MIB:
        failures.append(f"memory grew {growth:.0f} MiB (limit {MAX_GROWTH_MIB:.0f})")
    if ended_badly:
        failures.append(f"{ended_badly} slow connections ended another way or hung")
    if success < MIN_SUCCESS:
        failures.append(f"the normal client's success {100 * success:.1f} % < 99 %")

    print(
        f"slow: {CONNECTIONS} connections declaring {DECLARED_BYTES} bytes, {chunk_bytes} bytes "
        f"every {CHUNK_EVERY_S:g} s for {TRICKLE_S:g} s then stalled; API_REQUEST_TIMEOUT_S="
        f"{REQUEST_TIMEOUT_S:g}; attack over in {took:.1f} s"
    )
    print(
        f"slow: API memory idle {idle:.1f} MiB, peak {peak[0]:.1f} MiB during the attack "
        f"(+{growth:.1f} MiB; limit +{MAX_GROWTH_MIB:.0f} MiB)"
    )
    print(
        f"slow: slow connections: 408 {counts['408']}, 503 {counts['503']}, refused "
        f"{counts['refused']}, reset {counts['reset']}, hung {counts['hung']}, other "
        f"{sum(n for kind, n in counts.items() if kind.startswith('other'))}; the last ended "
        f"{latest_end:.1f} s after its start (deadline {REQUEST_TIMEOUT_S:g} s + {GRACE_S:g} s)"
    )
    print(f"slow: normal client before: {before_line}")
    print(f"slow: normal client during: {during_line} (p99 x{p99_during / p99_before:.1f})")
    if failures:
        print("slow: FAILED: " + "; ".join(failures))
        return 1
    print("slow: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
