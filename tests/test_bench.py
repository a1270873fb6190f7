"""The benchmarks' pure parts, without a server or wrk: parsing wrk's output, the targets file,
the report's pass/fail logic, the instrumentation's median of ratios, the rounds' order."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from bench import harness, instrumentation, prediction_log, report, shadow
from bench.api_modes import MODES, raw_runtimes
from bench.raw import RUNTIMES, average_passes
from bench.run import parse_args
from shared.store import SHADOW, ArtefactStore
from tests.conftest import publish

OUT = harness.REPO / "data" / "bench"

WRK_OUT = """Running 3s test @ http://127.0.0.1:8000
  1 threads and 32 connections
WRK_JSON {"requests": 1500, "duration_us": 3000000, "errors": 2, "non_2xx": 1, \
"p50_us": 12345, "p95_us": 20000, "p99_us": 31999, "mean_us": 13000.5}
"""


def test_parse_wrk_reads_the_scripts_summary_line() -> None:
    assert harness.parse_wrk(WRK_OUT, 32) == {
        "concurrency": 32,
        "throughput": 500.0,
        "p50_ms": 12.35,  # rounded to 0.01 ms
        "p95_ms": 20.0,
        "p99_ms": 32.0,
        "errors": 3,  # socket errors and non-2xx answers together
        "requests": 1500,
    }


def test_parse_wrk_without_the_summary_line_says_so() -> None:
    with pytest.raises(ValueError, match="WRK_JSON"):
        harness.parse_wrk("Running 3s test\n", 1)


def test_last_json_line_skips_what_a_library_printed_before() -> None:
    assert harness.last_json_line('a warning\n{"x": 1}\n\n') == {"x": 1}


def test_round_orders_rotate_through_every_permutation() -> None:
    orders = harness.round_orders(["on", "off", "off2"], 8)
    assert len(set(orders[:6])) == 6  # each side goes first, middle and last in turn
    assert orders[6:] == orders[:2]


def test_fresh_servers_stops_every_started_one_when_a_start_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[str] = []
    stopped: list[str] = []

    class FakeServer:
        def __init__(self, root: Path, env: dict[str, str]) -> None:
            if env["name"] == "broken":
                raise RuntimeError("the API did not become ready")
            self.name = env["name"]
            started.append(self.name)

        def stop(self) -> None:
            stopped.append(self.name)

    monkeypatch.setattr(harness, "Server", FakeServer)
    envs = {name: {"name": name} for name in ("a", "b", "broken")}
    with (
        pytest.raises(RuntimeError),
        harness.fresh_servers(Path("/nowhere"), envs, ("a", "b", "broken")),
    ):
        pass
    assert started == stopped == ["a", "b"]


def test_shipped_targets_load() -> None:
    targets = report.load_targets()
    assert targets["raw_rate"]["min_ratio"] == 0.85
    assert [t["mode"] for t in targets["startup"]] == ["onnx", "torch"]


def test_targets_file_with_a_misspelt_or_missing_table_is_refused(tmp_path: Path) -> None:
    text = report.TARGETS.read_text().replace("[swap_peak]", "[swap_peek]")
    (tmp_path / "targets.toml").write_text(text)
    with pytest.raises(ValueError, match=r"missing \['swap_peak'\], unknown \['swap_peek'\]"):
        report.load_targets(tmp_path / "targets.toml")


def _row(concurrency: int, throughput: float, p50: float, errors: int = 0) -> dict[str, Any]:
    return {"concurrency": concurrency, "throughput": throughput, "p50_ms": p50, "errors": errors}


def _results() -> dict[str, Any]:
    """A full run where every target passes."""

    def mode(raw: str, c1_p50: float, c32_rate: float, ready: float) -> dict[str, Any]:
        return {
            "raw": raw,
            "ready_s": ready,
            "rss_idle_mib": 250.0,
            "rss_loaded_mib": 300.0,
            "levels": [_row(1, 100.0, c1_p50), _row(32, c32_rate, 20.0)],
            "swap": {"rss_peak_mib": 500.0},
        }

    return {
        "raw": {
            "torch-fp32": {"batch1_p50_ms": 8.0, "batch32_titles_per_s": 100.0},
            "onnx-fp32": {"batch1_p50_ms": 5.5, "batch32_titles_per_s": 150.0},
            "onnx-int8": {"batch1_p50_ms": 3.5, "batch32_titles_per_s": 300.0},
        },
        "modes": {
            "torch": mode("torch-fp32", 10.0, 100.0, 4.0),
            "onnx": mode("onnx-fp32", 6.0, 140.0, 1.0),
            "onnx-int8": mode("onnx-int8", 4.0, 280.0, 1.0),
            "no-batching": mode("torch-fp32", 9.0, 40.0, 4.0),
        },
        "instrumentation": {
            "cost": {"c1_p50_slower_pct": 1.5, "c32_throughput_lower_pct": -0.2},
        },
    }


def _by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in report.check(results, report.load_targets())}


def test_check_names_and_order_are_those_make_bench_always_printed() -> None:
    checks = report.check(_results(), report.load_targets())
    assert [c["check"] for c in checks] == [
        "torch: c=32 >= 0.85 x its raw batch-32",
        "torch: zero errors",
        "torch: hot-swap peak RSS < 2.2 x one-model RSS",
        "onnx: c=32 >= 0.85 x its raw batch-32",
        "onnx: zero errors",
        "onnx: hot-swap peak RSS < 2.2 x one-model RSS",
        "onnx-int8: c=32 >= 0.85 x its raw batch-32",
        "onnx-int8: zero errors",
        "onnx-int8: hot-swap peak RSS < 2.2 x one-model RSS",
        "no-batching: hot-swap peak RSS < 2.2 x one-model RSS",
        "onnx: c=32 >= 1.3 x torch API c=32",
        "onnx-int8: c=32 >= 2.5 x torch API c=32",
        "onnx: c=1 p50 <= 7.0 ms",
        "onnx-int8: c=1 p50 <= 5.0 ms",
        "torch: c=1 p50 <= raw batch-1 p50 + 3 ms",
        "onnx: c=1 p50 <= raw batch-1 p50 + 0.7 ms",
        "onnx-int8: c=1 p50 <= raw batch-1 p50 + 0.7 ms",
        "onnx: start to /ready <= 1.5 s",
        "onnx: RSS at ready <= 300 MiB",
        "torch: start to /ready <= 5.0 s",
        "instrumentation c1_p50_slower_pct <= 3",
        "instrumentation c32_throughput_lower_pct <= 3",
    ]
    assert all(c["ok"] for c in checks)
    assert checks[0]["value"] == 1.0 and checks[10]["value"] == 1.4


RAW32 = "onnx: c=32 >= 0.85 x its raw batch-32"
SWAP = "onnx: hot-swap peak RSS < 2.2 x one-model RSS"
P50, GAP = "onnx: c=1 p50 <= 7.0 ms", "torch: c=1 p50 <= raw batch-1 p50 + 3 ms"
C1, C32 = "instrumentation c1_p50_slower_pct <= 3", "instrumentation c32_throughput_lower_pct <= 3"


@pytest.mark.parametrize(
    ("where", "value", "name", "ok"),
    [
        # on the limit: "at least" and "at most" pass, "below" fails
        (("modes", "onnx", "levels", 1, "throughput"), 127.5, RAW32, True),
        (("modes", "onnx", "levels", 1, "throughput"), 127.4, RAW32, False),
        (("modes", "onnx", "swap", "rss_peak_mib"), 660.0, SWAP, False),
        (("modes", "onnx", "levels", 0, "p50_ms"), 7.0, P50, True),
        (("modes", "onnx", "levels", 0, "p50_ms"), 7.01, P50, False),
        (("modes", "torch", "levels", 0, "p50_ms"), 11.0, GAP, True),
        (("modes", "torch", "levels", 0, "p50_ms"), 11.5, GAP, False),
        (("modes", "onnx", "rss_idle_mib"), 300.5, "onnx: RSS at ready <= 300 MiB", False),
        (("modes", "torch", "ready_s"), 5.2, "torch: start to /ready <= 5.0 s", False),
        (("modes", "onnx-int8", "levels", 0, "errors"), 1, "onnx-int8: zero errors", False),
        (("instrumentation", "cost", "c1_p50_slower_pct"), 3.01, C1, False),
        # a level that measured nothing is a miss, not a pass
        (("instrumentation", "cost", "c32_throughput_lower_pct"), None, C32, False),
    ],
)
def test_check_passes_and_fails_on_the_limits(
    where: tuple[Any, ...], value: Any, name: str, ok: bool
) -> None:
    results = _results()
    parent = results
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    assert _by_name(results)[name]["ok"] is ok


def test_no_batching_is_held_to_no_rate_or_error_target_and_a_missing_mode_is_left_out() -> None:
    results = _results()
    results["modes"]["no-batching"]["levels"][0]["errors"] = 5
    del results["modes"]["onnx-int8"], results["instrumentation"]
    names = _by_name(results)
    assert not [n for n in names if n.startswith(("no-batching: c=", "no-batching: zero"))]
    assert not [n for n in names if "onnx-int8" in n or n.startswith("instrumentation")]
    assert all(c["ok"] for c in names.values())


def test_relative_cost_is_the_median_of_the_rounds_own_ratios() -> None:
    # The machine slows down over the rounds; each round "on" is 10% slower than "off" was in
    # that same round. The ratio of the medians would read 20%; the median of ratios reads 10%.
    off = {1: [_row(1, 100.0, 1.0), _row(1, 50.0, 2.0), _row(1, 40.0, 4.0)]}
    on = {1: [_row(1, 90.0, 1.1), _row(1, 45.0, 2.2), _row(1, 36.0, 4.4)]}
    assert instrumentation.relative_cost(on, off, [1]) == {
        "c1_p50_slower_pct": 10.0,
        "c1_throughput_lower_pct": 10.0,
    }


def test_relative_cost_is_none_at_a_level_where_a_run_measured_nothing() -> None:
    off = {1: [_row(1, 100.0, 1.0)], 32: [_row(32, 0.0, 0.0)]}
    on = {1: [_row(1, 98.0, 1.02)], 32: [_row(32, 500.0, 8.0)]}
    assert instrumentation.relative_cost(on, off, [1, 32]) == {
        "c1_p50_slower_pct": 2.0,
        "c1_throughput_lower_pct": 2.0,
        "c32_p50_slower_pct": None,
        "c32_throughput_lower_pct": None,
    }


def test_instrumentation_cost_drives_fresh_servers_each_round_and_compares_with_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The experiment's bookkeeping, with fake servers whose speed depends on their side."""
    rounds: list[tuple[str, ...]] = []
    speed = {"on": 90.0, "off": 100.0, "off2": 100.0}

    @contextlib.contextmanager
    def fake_servers(root: Path, envs: dict[str, dict[str, str]], order: tuple[str, ...]) -> Any:
        assert envs["on"]["API_METRICS"] == "true" and envs["off2"] == envs["off"]
        rounds.append(order)
        yield {name: type("S", (), {"url": name}) for name in order}

    def fake_drive(url: str, bodies: Path, level: int, duration: int) -> dict[str, Any]:
        return _row(level, speed[url], 100 / speed[url])

    monkeypatch.setattr(instrumentation, "fresh_servers", fake_servers)
    monkeypatch.setattr(harness, "drive", fake_drive)
    result = instrumentation.instrumentation_cost(Path("/s"), Path("/b"), [1, 32], 4, 3, 0)
    assert rounds == harness.round_orders(["on", "off", "off2"], 4)
    assert result["cost"]["c32_throughput_lower_pct"] == 10.0
    assert result["control"] == dict.fromkeys(result["control"], 0.0)
    assert result["medians"]["on"][1] == {"throughput": 90.0, "p50_ms": 1.11, "errors": 0}
    assert len(result["runs"]["off"][32]) == 4


def test_raw_runtimes_measure_torch_fp32_first_and_each_mode_runtime_once() -> None:
    assert raw_runtimes(["onnx", "no-batching", "onnx-int8"]) == [
        "torch-fp32",
        "onnx-fp32",
        "onnx-int8",
    ]
    assert {raw for _, raw in MODES.values()} <= RUNTIMES.keys()


def test_average_passes_is_the_mean_of_before_and_after() -> None:
    keys = ("batch1_p50_ms", "batch1_p95_ms", "batch32_titles_per_s", "threads")
    before = {"onnx-fp32": dict(zip(keys, (4.0, 6.0, 100.0, 2), strict=True))}
    after = {"onnx-fp32": dict(zip(keys, (5.0, 6.5, 90.5, 2), strict=True))}
    assert average_passes(before, after) == {
        "onnx-fp32": {
            "batch1_p50_ms": 4.5,
            "batch1_p95_ms": 6.25,
            "batch32_titles_per_s": 95.25,
            "threads": 2,
        }
    }


def test_save_writes_the_timestamped_file_and_the_extra_names(tmp_path: Path) -> None:
    path = report.save({"a": 1}, tmp_path / "out", "bench", "latest.json")
    assert path.name.startswith("bench-") and path.suffix == ".json"
    assert json.loads(path.read_text()) == json.loads((path.parent / "latest.json").read_text())


def test_make_bench_defaults_are_unchanged() -> None:
    args = parse_args(["--data", "titles.tsv"])
    assert (args.duration, args.levels, args.out, args.threads) == (10, "1,8,32,64", OUT, 0)
    assert (args.raw_singles, args.raw_reps, args.artefacts_dir) == (
        300,
        5,
        OUT.parent / "artefacts",
    )
    assert (args.modes, args.obs_rounds, args.obs_levels, args.obs_duration) == (
        "torch,onnx,onnx-int8",
        9,
        "1,32",
        3,
    )
    assert not args.obs_no_control and args.targets == report.TARGETS
    assert args.shadow_rounds == 6


def test_log_cost_compares_each_database_with_off_in_fresh_rounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The inference log experiment's bookkeeping, with fake servers: a fresh SQLite file per
    round, PostgreSQL when given, "off" without any database work, the control like "off"."""
    rounds: list[tuple[str, ...]] = []
    speed = {"off": 100.0, "off2": 100.0, "sqlite": 98.0, "postgres": 96.0}
    sqlite_files: list[str] = []

    @contextlib.contextmanager
    def fake_servers(root: Path, envs: dict[str, dict[str, str]], order: tuple[str, ...]) -> Any:
        assert envs["off"] == envs["off2"] == {**prediction_log.OFF, **envs["off"]}
        assert envs["off"]["API_LIVE_REFRESH_S"] == "0"
        assert envs["postgres"]["API_DATABASE_URL"] == "postgresql+psycopg://t@h/t"
        assert envs["postgres"]["API_DATABASE_PASSWORD_FILE"] == "/pw"
        sqlite_files.append(envs["sqlite"]["API_DATABASE_URL"])
        rounds.append(order)
        yield {name: type("S", (), {"url": name}) for name in order}

    def fake_drive(url: str, bodies: Path, level: int, duration: int) -> dict[str, Any]:
        return _row(level, speed[url], 100 / speed[url])

    counts = iter([1000, 50, 60, 70, 1750])  # postgres before, sqlite per round, postgres after
    monkeypatch.setattr(prediction_log, "fresh_servers", fake_servers)
    monkeypatch.setattr(harness, "drive", fake_drive)
    monkeypatch.setattr(prediction_log, "dropped_rows", lambda url: 1.0)
    monkeypatch.setattr(prediction_log, "logged_rows", lambda url, pw: next(counts))
    result = prediction_log.log_cost(
        Path("/s"), Path("/b"), [1, 32], 3, 3, 0, "postgresql+psycopg://t@h/t", Path("/pw")
    )
    assert rounds == harness.round_orders(["off", "sqlite", "postgres", "off2"], 3)
    assert len(set(sqlite_files)) == 3 and all(f.startswith("sqlite:////") for f in sqlite_files)
    assert result["cost"]["sqlite"]["c32_throughput_lower_pct"] == 2.0
    assert result["cost"]["postgres"]["c32_throughput_lower_pct"] == 4.0
    assert result["control"] == dict.fromkeys(result["control"], 0.0)
    assert result["rows_logged"] == {"sqlite": 180, "postgres": 750}
    assert result["rows_dropped"] == {"sqlite": 3.0, "postgres": 3.0}


def test_inference_log_targets_are_checked_per_database() -> None:
    results = _results()
    results["prediction_log"] = {
        "cost": {
            "sqlite": {"c1_p50_slower_pct": 1.0, "c32_throughput_lower_pct": 2.9},
            "postgres": {"c1_p50_slower_pct": 3.5, "c32_throughput_lower_pct": None},
        }
    }
    names = _by_name(results)
    assert names["inference log (sqlite) c32_throughput_lower_pct <= 3"]["ok"]
    assert not names["inference log (postgres) c1_p50_slower_pct <= 3"]["ok"]
    assert not names["inference log (postgres) c32_throughput_lower_pct <= 3"]["ok"]


def test_shadow_cost_compares_a_shadow_candidate_with_none_in_fresh_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shadow experiment's bookkeeping on a real store, with fake servers: "on" serves a
    store whose candidate is a copy of the version in shadow at 0.2, "off" and "off2" one
    without; the shadow counters are counted per level from the moment the servers are warm."""
    store = ArtefactStore(tmp_path / "artefacts")
    version = publish(store)
    store.set_latest(version)
    rounds: list[tuple[str, ...]] = []
    speed = {"off": 100.0, "off2": 100.0, "on": 97.0}
    counters = {"scored": 0.0, "shed": 0.0}

    class FakeServer:
        def __init__(self, name: str) -> None:
            self.url = name

        def rss(self) -> float:
            return 400.0 if self.url == "on" else 250.0

    @contextlib.contextmanager
    def fake_servers(root: Path, envs: dict[str, dict[str, str]], order: tuple[str, ...]) -> Any:
        candidate = ArtefactStore(Path(envs["on"]["TAGGER_ARTEFACTS_DIR"])).candidate()
        assert candidate is not None and candidate.mode == SHADOW and candidate.sample == 0.2
        assert candidate.version != version and candidate.stable == version
        assert ArtefactStore(Path(envs["off"]["TAGGER_ARTEFACTS_DIR"])).candidate() is None
        assert envs["off2"] == envs["off"]
        rounds.append(order)
        yield {name: FakeServer(name) for name in order}

    def fake_drive(url: str, bodies: Path, level: int, duration: int) -> dict[str, Any]:
        if url == "on":  # warm-ups too: they must not be counted
            counters["scored"] += 10 if level == 1 else 2
            counters["shed"] += 0 if level == 1 else 50
        return _row(level, speed[url], 100 / speed[url])

    monkeypatch.setattr(shadow, "fresh_servers", fake_servers)
    monkeypatch.setattr(harness, "drive", fake_drive)
    monkeypatch.setattr(shadow, "wait_candidate_loaded", lambda server: 0.1)
    monkeypatch.setattr(shadow, "shadow_texts", lambda url: dict(counters))
    result = shadow.shadow_cost(store.root, Path("/b"), [1, 32], 3, 3, 0)
    assert rounds == harness.round_orders(["off", "on", "off2"], 3)
    assert result["cost"]["c32_throughput_lower_pct"] == 3.0
    assert result["control"] == dict.fromkeys(result["control"], 0.0)
    assert result["shadow_texts"] == {1: {"scored": 30, "shed": 0}, 32: {"scored": 6, "shed": 150}}
    assert result["rss_mib"] == {"one_ready": 250.0, "two_ready": 400.0, "one": 250.0, "two": 400.0}
    assert store.candidate() is None  # the experiment's stores are copies


def test_shadow_targets_are_checked() -> None:
    results = _results()
    results["shadow"] = {"cost": {"c1_p50_slower_pct": 5.0, "c32_throughput_lower_pct": 5.01}}
    names = _by_name(results)
    assert names["shadow candidate c1_p50_slower_pct <= 5"]["ok"]
    assert not names["shadow candidate c32_throughput_lower_pct <= 5"]["ok"]


def test_shadow_counters_are_read_by_outcome_from_the_exposition() -> None:
    exposition = (
        "# TYPE tagger_shadow_texts_total counter\n"
        'tagger_shadow_texts_total{outcome="scored"} 12.0\n'
        'tagger_shadow_texts_total{outcome="shed"} 3.0\n'
        'tagger_shadow_texts_created{outcome="shed"} 1.7e9\n'
    )
    assert shadow.parse_shadow_texts(exposition) == {"scored": 12.0, "shed": 3.0}
    assert shadow.parse_shadow_texts("") == {"scored": 0.0, "shed": 0.0}
