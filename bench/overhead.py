"""``python -m bench.overhead``: CPU time the instrumentation adds per request, in-process.

The request middleware (request id, HTTP metrics, access log) around an endpoint that answers
at once, and the batcher's per-forward-pass recording, are timed by the process's own CPU
clock with the instrumentation on (metrics + JSON access log at info, written to /dev/null
in batches as the API does, and, for comparison, line by line) and off (no metrics, log level
warning). CPU time, unlike wrk's latencies, does not move with what else runs on the machine,
but here the code runs hot in the CPU's caches: in the API, right after a forward pass, the
same work takes several times as long (an unbuffered access line: about 20 us here, 80-90 us
timed inside the API). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from api.metrics import ApiMetrics
from api.middleware import ACCESS_LOGGER, RequestMiddleware
from shared.logs import flush_logs, setup_logging
from shared.predictor import Prediction, TagScore

REQUESTS = 20_000
REPEATS = 5
SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/predict",
    "headers": [(b"content-type", b"application/json"), (b"x-request-id", b"bench-1")],
}


class _Route:
    path = "/predict"


async def _endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = _Route()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> Message:
    return {"type": "http.request", "body": b""}


async def _send(_: Message) -> None:
    return None


async def _requests(app: RequestMiddleware, n: int) -> None:
    for _ in range(n):
        await app(dict(SCOPE), _receive, _send)


def per_request_us(instrumented: bool, buffered: bool = True) -> float:
    """Median CPU microseconds per request through the middleware; with ``buffered`` access
    lines (the API's default), writing the buffered lines is counted too."""
    with open(os.devnull, "w") as devnull:
        setup_logging(
            "info" if instrumented else "warning",
            "json",
            stream=devnull,
            buffered=(ACCESS_LOGGER,) if buffered else (),
        )
        app = RequestMiddleware(_endpoint, ApiMetrics() if instrumented else None)
        runs = []
        for _ in range(REPEATS):
            start = time.process_time()
            asyncio.run(_requests(app, REQUESTS))
            flush_logs()
            runs.append((time.process_time() - start) / REQUESTS * 1e6)
        logging.getLogger().handlers.clear()
    return statistics.median(runs)


def per_batch_us(texts: int) -> float:
    """Median CPU microseconds to record one forward pass of ``texts`` texts."""
    metrics = ApiMetrics()
    predictions = [
        Prediction([TagScore("python", 0.9), TagScore("pandas", 0.5)], ["python"], tokens=14)
    ] * texts
    runs = []
    for _ in range(REPEATS):
        start = time.process_time()
        for _ in range(2000):
            metrics.observe_batch([0.003] * texts, 0.05, predictions)
        runs.append((time.process_time() - start) / 2000 * 1e6)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    """Time the middleware and the batch recording, on and off; print one JSON line."""
    argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__).parse_args(argv)
    on, off = per_request_us(True), per_request_us(False)
    unbuffered = per_request_us(True, buffered=False)
    result = {
        "middleware_us_per_request_on": round(on, 1),
        "middleware_us_per_request_on_unbuffered": round(unbuffered, 1),
        "middleware_us_per_request_off": round(off, 1),
        "instrumentation_us_per_request": round(on - off, 1),
        "batch_record_us_1_text": round(per_batch_us(1), 1),
        "batch_record_us_32_texts": round(per_batch_us(32), 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
