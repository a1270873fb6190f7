"""Experiment: the API's resident memory during a hot swap, against its memory with one model.

A copy of the served version is published and ``LATEST`` moved to it while the API process's
resident memory is sampled, until the new version is served and two seconds more have passed.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from bench.harness import Server, clone_version


def swap_peak(server: Server, store_root: Path, version: str) -> dict[str, float]:
    """Publish a copy of the served version, move LATEST, sample RSS until it is served."""
    from shared.store import ArtefactStore

    new_version = clone_version(store_root, version)
    before = server.rss()
    peak = before
    ArtefactStore(store_root).set_latest(new_version)
    started = time.monotonic()
    served_at = None
    while time.monotonic() - started < 30:
        peak = max(peak, server.rss())
        if served_at is None:
            with urllib.request.urlopen(f"{server.url}/model", timeout=5) as response:
                if json.load(response)["version"] == new_version:
                    served_at = time.monotonic() - started
        elif time.monotonic() - started > served_at + 2:
            break
        time.sleep(0.01)
    return {
        "rss_before_mib": round(before, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_after_mib": round(server.rss(), 1),
        "swap_seen_after_s": round(served_at or -1, 2),
    }
