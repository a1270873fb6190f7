"""The e2e rollout stages' own logic (tests/e2e/rollout.py), without Docker: its copy of the
canary hash is the API's, and its verdict on a load client's phases fails where it must."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from shared.live import canary_share
from tests.e2e import rollout

STABLE, CANDIDATE = "20261207T060000000Z-aaaaaa", "20261207T061000000Z-bbbbbb"


def test_the_scripts_canary_share_is_the_apis() -> None:
    keys = ["", "e2e-key-0", "a" * 128, "ключ", *(f"e2e-r-canary-{i}-{i * 7}" for i in range(200))]
    assert [rollout.canary_share(k) for k in keys] == [canary_share(k) for k in keys]


def _phase(versions: dict[str, int], p99: float = 100.0, failed: int = 0) -> dict[str, Any]:
    return {
        "ok": sum(versions.values()),
        "failed": failed,
        "errors": [],
        "versions": versions,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
    }


def _load() -> dict[str, Any]:
    """A run that passes: steady and shadow on the stable version, 10% canary, then the
    candidate everywhere; the moves at most 2x the steady p99 (the CLI's own start is not a
    move)."""
    return {
        "now": 60.0,
        "phases": {
            "steady": _phase({STABLE: 1000}),
            "shadow": _phase({STABLE: 1000}),
            "canary-move": _phase({STABLE: 100}, p99=150.0),
            "canary": _phase({STABLE: 900, CANDIDATE: 100}),
            "promote-move": _phase({STABLE: 50, CANDIDATE: 50}, p99=200.0),
            "promoted": _phase({CANDIDATE: 500}),
            "shadow-old-move": _phase({CANDIDATE: 100}),
            "abort-cli": _phase({CANDIDATE: 100}, p99=500.0),  # the CLI's start: printed only
            "abort-move": _phase({CANDIDATE: 100}),
            "aborted": _phase({CANDIDATE: 400}),
        },
    }


def _summary(tmp_path: Path, load: dict[str, Any]) -> int:
    path = tmp_path / "load.json"
    path.write_text(json.dumps(load))
    return rollout.summary(str(path), STABLE, CANDIDATE, 0.1)


def test_summary_passes_a_clean_rollout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _summary(tmp_path, _load()) == 0
    out = capsys.readouterr().out
    assert "0 failed; canary share 10.0% of 1000" in out
    assert "p99 during the moves 200.0 ms (worst move), steady 100.0 ms: 2.00x" in out
    assert "while the CLI started: 500.0 ms (5.00x)" in out


@pytest.mark.parametrize(
    ("phase", "change", "message"),
    [
        ("abort-move", {"failed": 1}, "failed requests"),
        ("canary", {"versions": {STABLE: 840, CANDIDATE: 160}}, "canary share"),
        ("promoted", {"versions": {CANDIDATE: 499, "20261207T050000000Z-cccccc": 1}}, "promoted"),
        ("shadow", {"versions": {STABLE: 990, CANDIDATE: 10}}, "shadow"),
        ("aborted", {"versions": {STABLE: 1, CANDIDATE: 399}}, "aborted"),
        ("promote-move", {"p99_ms": 200.1}, "p99 during the moves"),
    ],
)
def test_summary_fails_each_broken_promise(
    tmp_path: Path, phase: str, change: dict[str, Any], message: str
) -> None:
    load = copy.deepcopy(_load())
    load["phases"][phase].update(change)
    with pytest.raises(AssertionError, match=message):
        _summary(tmp_path, load)
