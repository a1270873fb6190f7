"""Experiment: the real API under ``wrk`` load in each mode (backend, precision, micro-batching
on or off), with its start-up time to ``/ready``, its memory, and a hot swap's memory peak.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness import Server, drive
from bench.swap_memory import swap_peak

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
# What ONNX Runtime's idle threads do (API_ONNX_SPINNING): the ONNX modes above run the
# default, in-run; these run the other two settings, for a comparison in the same run.
MODES.update(
    {
        f"{mode}-spin-{spinning}": (
            {**MODES[mode][0], "API_ONNX_SPINNING": spinning},
            MODES[mode][1],
        )
        for mode in ("onnx", "onnx-int8")
        for spinning in ("off", "on")
    }
)
WARMUP_CONCURRENCY, WARMUP_S = 8, 3


def raw_runtimes(modes: list[str]) -> list[str]:
    """The raw runtimes to measure for ``modes``: torch fp32 always, then each mode's own."""
    return list(dict.fromkeys(["torch-fp32", *(MODES[m][1] for m in modes)]))


def measure_mode(
    mode: str, store_root: Path, bodies: Path, levels: list[int], duration: int, threads: int
) -> dict[str, Any]:
    """One fresh API in ``mode`` on the store's ``LATEST``: warmed up, driven at each level for
    ``duration`` seconds, then swapped to a copy of its version."""
    env, raw_name = MODES[mode]
    if threads:
        env = {**env, "API_TORCH_THREADS": str(threads)}
    served = (store_root / "LATEST").read_text().strip()
    server = Server(store_root, env)
    try:
        idle_rss = server.rss()
        drive(server.url, bodies, WARMUP_CONCURRENCY, WARMUP_S)
        rows = []
        for concurrency in levels:
            row = drive(server.url, bodies, concurrency, duration)
            print(json.dumps(row), flush=True)
            rows.append(row)
        return {
            "raw": raw_name,
            "ready_s": server.ready_s,
            "rss_idle_mib": round(idle_rss, 1),
            "levels": rows,
            "rss_loaded_mib": round(server.rss(), 1),
            "swap": swap_peak(server, store_root, served),
        }
    finally:
        server.stop()
