"""``make bench-body``: the API's memory under a stream of oversized request bodies.

Starts ``python -m api`` on 127.0.0.1 with the newest published version, then sends
``--count`` bodies of ``--size-mb`` MB each to POST /predict, ``--concurrency`` at a time
(a JSON ``{"text": "xxx..."}``; half declare their Content-Length, half are sent chunked),
while sampling the API process's resident memory every 10 ms. Prints the resident memory
before, the peak, the answers' statuses and the time taken, and writes them as JSON under
data/bench/.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import report
from bench.harness import (
    DEFAULT_ARTEFACTS,
    DEFAULT_OUT,
    REPO,
    Server,
    newest_version,
    private_store,
)

CHUNK = b"x" * (1 << 20)


def send_oversized(port: int, size: int, chunked: bool) -> int:
    """One oversized POST; the status the API answered (0: none, the connection was cut)."""
    head = b'{"text": "'
    tail = b'"}'
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + framing
            + b"\r\n\r\n"
        )
        try:
            parts = [head] + [CHUNK] * ((size - len(head) - len(tail)) // len(CHUNK)) + [tail]
            for part in parts:
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the API answered early and closed: read what it said
        try:
            first = sock.recv(64)
        except OSError:
            return 0
        return int(first.split()[1]) if first.startswith(b"HTTP/") else 0


def flood(server: Server, size: int, count: int, concurrency: int) -> dict[str, Any]:
    """Send ``count`` bodies of ``size`` bytes, ``concurrency`` at a time, while sampling the
    API's resident memory every 10 ms; the answers' statuses, the time taken and the memory."""
    time.sleep(1)
    before = server.rss()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.rss())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = list(
            pool.map(lambda i: send_oversized(server.port, size, chunked=i % 2 == 1), range(count))
        )
    elapsed = time.monotonic() - started
    time.sleep(0.5)
    done.set()
    sampler.join()
    alive = server.proc.poll() is None
    return {
        "statuses": dict(collections.Counter(statuses)),
        "seconds": round(elapsed, 2),
        "rss_before_mib": round(before, 1),
        "rss_peak_mib": round(peak[0], 1),
        "rss_after_mib": round(server.rss() if alive else 0.0, 1),
        "api_alive": alive,
    }


def main(argv: list[str] | None = None) -> int:
    """Serve a private copy of the newest version, flood it, print and write the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.oversized", description=__doc__)
    parser.add_argument("--artefacts-dir", type=Path, default=DEFAULT_ARTEFACTS)
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--api-dir", type=Path, default=REPO, help="run the API from here")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    version = newest_version(args.artefacts_dir)
    workdir = Path(tempfile.mkdtemp(prefix="tagger-body-"))
    try:
        store_root = private_store(args.artefacts_dir, version, workdir / "artefacts")
        server = Server(store_root, {}, cwd=args.api_dir)
        try:
            figures = flood(server, args.size_mb * 1_000_000, args.count, args.concurrency)
        finally:
            if server.proc.poll() is None:
                server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "bodies": args.count,
        "size_mb": args.size_mb,
        "concurrency": args.concurrency,
        **figures,
        "api_dir": str(args.api_dir),
        "created": report.now(),
    }
    print(json.dumps(result, indent=2))
    report.save(result, args.out, "body")
    return 0


if __name__ == "__main__":
    sys.exit(main())
