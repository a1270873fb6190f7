"""What every benchmark stands on: API processes, ``wrk`` runs and their parsing, fresh-process
runs and rounds, and private copies of an artefact store.

Nothing here measures on its own; the raw measurements (:mod:`bench.raw`) and the experiments
(:mod:`bench.api_modes`, :mod:`bench.swap_memory`, :mod:`bench.instrumentation`) do.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.settings import DEFAULT_ARTEFACTS_DIR

REPO = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "wrk_post.lua"
DEFAULT_ARTEFACTS = REPO / DEFAULT_ARTEFACTS_DIR
DEFAULT_OUT = REPO / "data" / "bench"
WRK_PREFIX = "WRK_JSON "  # the line wrk_post.lua prints when a run is done


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str) -> int:
    """The status a GET of ``url`` answers; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """``python -m api`` on a free loopback port, with its start-up time and memory. Its
    inference log is a SQLite file of its own (removed on stop) unless ``env`` names a
    database: a benchmark never writes its rows into the user's log."""

    def __init__(self, artefacts: Path, env: Mapping[str, str], cwd: Path = REPO) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scratch = Path(tempfile.mkdtemp(prefix="tagger-bench-log-"))
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api"],
            cwd=cwd,
            env={
                **os.environ,
                "TAGGER_ARTEFACTS_DIR": str(artefacts),
                "API_PORT": str(self.port),
                "API_LOG_LEVEL": "warning",
                "API_POLL_INTERVAL_S": "0.2",
                "API_DATABASE_URL": f"sqlite:///{self.scratch / 'inference.db'}",
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while http_status(f"{self.url}/ready") != 200:
            if self.proc.poll() is not None or time.monotonic() - started > 120:
                self.stop()
                raise RuntimeError("the API did not become ready")
            time.sleep(0.02)
        self.ready_s = round(time.monotonic() - started, 2)

    def rss(self) -> float:
        """The API process's resident memory now, in MiB."""
        return rss_mib(self.proc.pid)

    def stop(self) -> None:
        """Terminate the API and wait for it; remove its scratch folder."""
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.scratch, ignore_errors=True)


def parse_wrk(stdout: str, concurrency: int) -> dict[str, Any]:
    """The figures of one wrk run from its output: throughput, latency percentiles in ms,
    errors (socket errors and non-2xx answers together), requests."""
    line = next((x for x in stdout.splitlines() if x.startswith(WRK_PREFIX)), None)
    if line is None:
        raise ValueError(f"wrk printed no {WRK_PREFIX.strip()} line: was {LUA.name} its script?")
    raw = json.loads(line.removeprefix(WRK_PREFIX))
    return {
        "concurrency": concurrency,
        "throughput": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p95_ms": round(raw["p95_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "errors": raw["errors"] + raw["non_2xx"],
        "requests": raw["requests"],
    }


def drive(url: str, bodies: Path, concurrency: int, duration: int) -> dict[str, Any]:
    """One wrk run (one thread, ``concurrency`` connections, ``duration`` seconds) posting the
    JSON bodies of ``bodies`` (one a line) to ``url``/predict; its figures."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
            "--",
            str(bodies),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out, concurrency)


def last_json_line(stdout: str) -> Any:
    """The JSON value on the last line of a process's output (what it printed before may be
    anything, a library's warning say)."""
    return json.loads(stdout.strip().splitlines()[-1])


def run_fresh(module: str, *args: object) -> Any:
    """``python -m module args`` in a fresh process from the repository root, so the caller
    holds no model or threads; the JSON it printed last."""
    out = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return last_json_line(out)


def round_orders(names: list[str], rounds: int) -> list[tuple[str, ...]]:
    """The order of ``names`` in each round: every permutation in turn, so no side always goes
    first or last."""
    orders = list(itertools.permutations(names))
    return [orders[rep % len(orders)] for rep in range(rounds)]


@contextmanager
def fresh_servers(
    store_root: Path, envs: Mapping[str, Mapping[str, str]], order: tuple[str, ...]
) -> Iterator[dict[str, Server]]:
    """One round's fresh API processes, one per named environment, started in ``order`` and
    stopped on leaving (a process's own placement moves its speed by a few per cent, which
    would otherwise stay with one side for the whole run)."""
    servers: dict[str, Server] = {}
    try:
        for name in order:
            servers[name] = Server(store_root, envs[name])
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def drive_round(
    servers: Mapping[str, Server],
    order: tuple[str, ...],
    bodies: Path,
    levels: list[int],
    duration: int,
    warmup_s: int,
    warmed: Callable[[], None] | None = None,
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """One round of an on/off experiment: warm every server up at every level (then call
    ``warmed``, e.g. to read counters), then drive each level on each server in ``order``;
    yields (server name, level, wrk row)."""
    for name in order:
        for level in levels:
            drive(servers[name].url, bodies, level, warmup_s)
    if warmed is not None:
        warmed()
    for level in levels:
        for name in order:
            yield name, level, drive(servers[name].url, bodies, level, duration)


def newest_version(artefacts_dir: Path) -> str:
    """The version ``LATEST`` names in ``artefacts_dir``; exits with status 2 when none."""
    from shared.store import ArtefactStore

    version = ArtefactStore(artefacts_dir).latest()
    if version is None:
        print(f"error: no model in {artefacts_dir}: run make train-quick first", file=sys.stderr)
        raise SystemExit(2)
    return version


def private_store(source_root: Path, version: str, root: Path) -> Path:
    """A store at ``root`` holding a copy of ``version`` from ``source_root`` as ``LATEST``,
    so a benchmark's swaps never touch the real store."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source_root / version, root / version)
    (root / "LATEST").write_text(version + "\n")
    return root


def clone_version(root: Path, version: str) -> str:
    """Publish a copy of ``version`` (same files, a new name) in the store at ``root``; the new
    version's name. ``LATEST`` is left to the caller."""
    from shared.store import MANIFEST_FILE, ArtefactStore

    with ArtefactStore(root).staging() as (new_version, folder):
        for path in (root / version).iterdir():
            if path.name != MANIFEST_FILE:
                shutil.copy(path, folder / path.name)
    return new_version
