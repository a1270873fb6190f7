"""``make chaos``: fault injection against the artefact store, the trainer and the API at once.

A real API (``python -m api``, uvicorn, on a free 127.0.0.1 port, polling ``LATEST`` every
0.1 s) serves the store while a client thread polls ``POST /predict``. Trainers (a tiny random
BERT, seconds per run) are SIGKILLed at random moments, weighted towards publishing; two train
at once; a rollback races a publish; published versions are corrupted (a byte flipped, a file
truncated, a file deleted); ``LATEST`` is broken (garbage, not UTF-8, naming a missing
version, broken during a run); the disk fills up during staging (a real tmpfs when running as
root, else an injected ENOSPC); the API is killed and restarted during a swap; the API's
inference log (SQLite, on a small tmpfs of its own when running as root) fills its disk under a
load of concurrent predictions, then gets the space back.

After each scenario: ``LATEST`` names a version that verifies and is recorded as promoted,
and so did every value it took meanwhile; the API serves that version; every version the
client was answered by is a promoted one; the client saw zero failed requests (it pauses only
while the suite itself has the API down); and after each run that ended by itself no staging
folder, staging lock or temporary file is left. One line per scenario, then a summary; exit
status 1 if any scenario failed or fewer than ``--kills`` trainers were killed.

Trainer processes come from :mod:`tests.chaos.zygote` (forked after the imports; each is a
whole ``python -m trainer`` run and the process that gets killed).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from shared.store import (
    LATEST_FILE,
    PROMOTED,
    STAGING_PREFIX,
    ArtefactError,
    ArtefactStore,
    new_version_name,
    verify,
)
from tests.chaos import rollout
from tests.chaos.checks import ChaosFailure, expect
from tests.conftest import REPO, free_port, tiny_config, write_wide_tsv

PY = sys.executable
TITLES = [
    "How to merge two pandas DataFrames on a column?",
    "NullPointerException in Spring bean",
    "SELECT query with a join is slow in mysql",
    "jquery click handler fires twice",
]
# The order of a trainer's log lines: the phase a run was killed in is the last one seen.
PHASES = [
    ("fitting", "training on "),
    ("staging", "publishing version "),
    ("renamed, deciding", "published version "),
    ("decided", "LATEST -> "),
    ("decided", "NOT promoted"),
]


LAST_LINE = "(valid micro-F1 "  # "published VERSION (valid micro-F1 ...) in N s", logged last


# ---- trainer processes ----------------------------------------------------------------------
@dataclass
class Job:
    id: int
    log: Path
    pid: int | None = None
    exit: int | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    has_pid: threading.Event = field(default_factory=threading.Event)

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self, offset: int) -> tuple[str, int]:
        try:
            with self.log.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return "", offset
        return data.decode(errors="replace"), offset + len(data)

    def wait_for_line(self, marker: str, timeout: float) -> bool:
        """Wait until the job's log holds ``marker`` (True) or the job ends first (False)."""
        deadline = time.monotonic() + timeout
        seen, offset = "", 0
        while time.monotonic() < deadline:
            new, offset = self._tail(offset)
            seen = seen[-len(marker) :] + new  # a marker may straddle two reads
            if marker in seen:
                return True
            if self.done.is_set():
                return marker in self.text()
            time.sleep(0.005)
        return False

    def wait(self, timeout: float = 120) -> int:
        if not self.done.wait(timeout):
            raise ChaosFailure(f"job {self.id} did not end within {timeout:.0f} s")
        assert self.exit is not None
        return self.exit

    def kill(self) -> bool:
        """SIGKILL the job if it is still running; True if the signal was sent."""
        self.has_pid.wait(30)
        if self.done.is_set() or self.pid is None:
            return False
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def phase(self) -> str:
        text, reached = self.text(), "start-up"
        for name, marker in PHASES:
            if marker in text:
                reached = name
        return reached


class Zygote:
    """The fork server's client: submit jobs, learn their pids and exit codes."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.proc = subprocess.Popen(
            [PY, "-m", "tests.chaos.zygote"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        self.jobs: dict[int, Job] = {}
        self.lock = threading.Lock()
        self.next_id = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            job = self.jobs[message["id"]]
            if "pid" in message:
                job.pid = message["pid"]
                job.has_pid.set()
            else:
                job.exit = message["exit"]
                job.ended = time.monotonic()
                job.done.set()

    def submit(self, module: str, argv: list[str], inject: str | None = None) -> Job:
        with self.lock:
            self.next_id += 1
            job = Job(self.next_id, self.logs / f"job-{self.next_id:03d}.log")
            self.jobs[job.id] = job
            request = {
                "id": job.id,
                "module": module,
                "argv": argv,
                "log": str(job.log),
                "inject": inject,
            }
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        return job

    def close(self) -> None:
        for job in self.jobs.values():
            if not job.done.is_set():
                job.kill()
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- the API and its client ---------------------------------------------------------------
class Api:
    def __init__(self, store: Path, logs: Path, database: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = store
        self.logs = logs
        self.database = database
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        self.starts += 1
        self.log = self.logs / f"api-{self.starts}.log"
        env = {
            **os.environ,
            "TAGGER_ARTEFACTS_DIR": str(self.store),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            "API_POLL_INTERVAL_S": "0.1",
            "API_TORCH_THREADS": "1",
            "API_LOG_LEVEL": "info",
            "API_DATABASE_URL": f"sqlite:///{self.database}",
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [PY, "-m", "api"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        if wait:
            self.wait("/health")

    def wait(self, route: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + route, timeout=2).status_code == 200:
                    return
            assert self.proc is not None
            expect(self.proc.poll() is None, f"the API exited: see {self.log}")
            time.sleep(0.1)
        raise ChaosFailure(f"the API did not answer {route} within {timeout:.0f} s")

    def model(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/model", timeout=10).json())

    def dropped_rows(self) -> float:
        """The inference log rows it dropped since it started (every reason)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("tagger_prediction_log_dropped_total")
        )

    def serves(self, version: str | None, timeout: float = 30) -> str | None:
        """Wait until ``/model`` names ``version``; return what it names in the end."""
        deadline = time.monotonic() + timeout
        served = None
        while time.monotonic() < deadline:
            served = self.model().get("version")
            if served == version:
                break
            time.sleep(0.05)
        return served

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class Client(threading.Thread):
    """Polls POST /predict; counts answers and failures and the versions that answered."""

    def __init__(self, api: Api) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.ok = 0
        self.failures: list[str] = []
        self.versions: set[str] = set()
        self.versions_lock = threading.Lock()
        self.stop_event = threading.Event()
        self.pause_requested = threading.Event()
        self.idle = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            i = 0
            while not self.stop_event.is_set():
                if self.pause_requested.is_set():
                    self.idle.set()
                    time.sleep(0.01)
                    continue
                self.idle.clear()
                i += 1
                try:
                    response = http.post(
                        self.api.url + "/predict", json={"text": TITLES[i % len(TITLES)]}
                    )
                    if response.status_code == 200:
                        self.ok += 1
                        with self.versions_lock:
                            self.versions.add(response.json()["model_version"])
                    else:
                        self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No requests in flight or sent while the suite itself takes the API down."""
        self.pause_requested.set()
        self.idle.wait(60)
        try:
            yield
        finally:
            self.pause_requested.clear()


class LogLoad:
    """Concurrent clients posting batches of long titles, each request with the id
    ``chaos-log-PHASE-CLIENT-N``; answers and failures counted per phase."""

    PREFIX = "chaos-log"
    TITLE = "Why does my long-running job " + "keep writing rows to a full disk " * 40

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.phase = "before"
        self.ok: Counter[str] = Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self, n: int) -> None:
        texts = [f"{self.TITLE[:1800]} ({n})"] * 8
        with httpx.Client(timeout=30) as http:
            i = 0
            while not self.stop_event.is_set():
                phase, i = self.phase, i + 1
                try:
                    response = http.post(
                        self.url + "/predict",
                        json={"texts": texts},
                        headers={"X-Request-ID": f"{self.PREFIX}-{phase}-{n}-{i}"},
                    )
                    failure = None
                    if response.status_code != 200:
                        failure = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                with self.lock:
                    if failure is None:
                        self.ok[phase] += 1
                    else:
                        self.failures.append(failure)


def _logged(database: Path, prefix: str) -> int:
    """Distinct requests whose id starts with ``prefix`` in the inference log at ``database``."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        (count,) = conn.execute(
            "SELECT count(DISTINCT request_id) FROM predictions WHERE request_id LIKE ?",
            (prefix + "%",),
        ).fetchone()
    return int(count)


class LatestWatcher(threading.Thread):
    """Records every value ``LATEST`` takes (read every 10 ms, lock-free like the API)."""

    def __init__(self, store: ArtefactStore) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.seen: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.01):
            with contextlib.suppress(ArtefactError):
                name = self.store.latest()
                if name and (not self.seen or self.seen[-1] != name):
                    self.seen.append(name)


# ---- the suite ------------------------------------------------------------------------------
class Chaos:
    def __init__(
        self,
        work: Path,
        store_dir: Path,
        rng: random.Random,
        tmpfs: bool,
        log_dir: Path | None = None,
        log_tmpfs: bool = False,
    ) -> None:
        self.work = work
        self.rng = rng
        self.tmpfs = tmpfs
        self.log_dir = log_dir or work
        self.log_tmpfs = log_tmpfs
        self.logs = work / "logs"
        self.logs.mkdir()
        self.store = ArtefactStore(store_dir)
        self.results: list[tuple[str, bool, str]] = []
        self.kills: list[tuple[str, str, float]] = []  # (mode, phase, seconds into the run)
        self.zygote = Zygote(self.logs)
        self.api = Api(store_dir, self.logs, self.log_dir / "inference.db")
        self.client = Client(self.api)
        self.watcher = LatestWatcher(self.store)
        self.failures_before = 0  # client failures before the current scenario
        self.corrupted: set[str] = set()  # versions the suite damaged on purpose
        self.known_promoted: set[str] = set()
        self.candidates: set[str] = set()  # verified versions the suite made candidates
        self.watched = 0
        self.run_seconds: dict[str, list[float]] = {}  # per config, of runs left alone
        self.publish_seconds: list[float] = []
        self.after_rename_seconds: list[float] = []

    # -- setting up
    def prepare(self) -> None:
        data = self.work / "data"
        data.mkdir()
        self.train_file = write_wide_tsv(data / "train.tsv", 64, seed=1)
        self.valid_file = write_wide_tsv(data / "valid.tsv", 32, seed=2)
        tiny = self.work / "tiny-bert"
        tiny.mkdir()
        job = self.zygote.submit("build-tiny-bert", [str(tiny)])
        expect(job.wait(300) == 0, f"building the tiny model failed: {job.text()[-2000:]}")
        # good: promoted whenever it ties (same data and seed give the same model, micro-F1
        # about 0.59 here); strict: the same without tolerance; medium: one epoch (0.56), to
        # see which of two wins; weak: hardly trained (0.51), always rejected.
        learn = {"head_init": "random", "lr_encoder": 3e-3, "lr_head": 5e-2}
        self.configs = {
            "good": self._config(tiny, "good", promotion_tolerance=0.02, epochs=2, **learn),
            "strict": self._config(tiny, "strict", epochs=2, **learn),
            "medium": self._config(tiny, "medium", epochs=1, **learn),
            "weak": self._config(
                tiny, "weak", epochs=1, head_init="random", lr_encoder=1e-9, lr_head=1e-9
            ),
        }

    def _config(self, tiny: Path, name: str, **overrides: Any) -> Path:
        values = tiny_config(tiny, **overrides).public_dict()
        values["baseline"] = False  # not under test here; a second per run on a busy machine
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def train(self, config: str = "good", *extra: str, inject: str | None = None) -> Job:
        argv = [
            "--config",
            str(self.configs[config]),
            "--dataset",
            str(self.train_file),
            "--valid",
            str(self.valid_file),
            "--artefacts-dir",
            str(self.store.root),
            *extra,
        ]
        return self.zygote.submit("trainer", argv, inject=inject)

    def versions_cli(self, *argv: str) -> Job:
        job = self.zygote.submit(
            "trainer.versions", ["--artefacts-dir", str(self.store.root), *argv]
        )
        job.wait(60)
        return job

    def completed_run(self, config: str = "good", *extra: str) -> Job:
        """A run left alone; also measures how long runs and their publish phase take."""
        job = self.train(config, *extra)
        job.wait_for_line("publishing version ", 120)
        publishing_at = time.monotonic()
        job.wait_for_line("published version ", 120)
        renamed_at = time.monotonic()
        # The trainer's last log line; the process still has to exit and be reaped after it.
        job.wait_for_line(LAST_LINE, 120)
        finished_at = time.monotonic()
        code = job.wait()
        expect(code in (0, 3), f"a trainer run exited {code}: {job.text()[-1500:]}")
        self.run_seconds.setdefault(config, []).append(finished_at - job.started)
        self.publish_seconds.append(finished_at - publishing_at)
        self.after_rename_seconds.append(finished_at - renamed_at)
        return job

    # -- the invariants
    def check(self, clean_expected: bool) -> str:
        """Raise ChaosFailure unless the store, the API and the client are as they must be."""
        latest = self.store.latest()
        expect(latest is not None, "LATEST names nothing")
        assert latest is not None
        try:
            verify(self.store.root / latest)
        except ArtefactError as exc:
            raise ChaosFailure(f"LATEST names an unverified version: {exc}") from exc
        expect(self.store.promotion(latest).status == PROMOTED, f"LATEST {latest} not promoted")
        self.known_promoted.add(latest)
        for name in self.watcher.seen[self.watched :]:
            if name in self.corrupted or not (self.store.root / name).exists():
                continue  # damaged on purpose later, or pruned since
            try:
                verify(self.store.root / name)
            except ArtefactError as exc:
                raise ChaosFailure(f"LATEST named an unverified version: {exc}") from exc
            expect(
                self.store.promotion(name).status == PROMOTED,
                f"LATEST named {name}, not recorded as promoted",
            )
            self.known_promoted.add(name)
        self.watched = len(self.watcher.seen)
        served = self.api.serves(latest)
        expect(served == latest, f"the API serves {served}, LATEST names {latest}")
        with self.client.versions_lock:
            answered = set(self.client.versions)
        for version in answered - self.known_promoted - self.candidates:
            expect(
                (self.store.root / version).exists()
                and self.store.promotion(version).status == PROMOTED,
                f"the client was answered by {version}, never promoted",
            )
            self.known_promoted.add(version)
        failures = self.client.failures[self.failures_before :]
        expect(not failures, f"{len(failures)} failed requests: {failures[:3]}")
        if clean_expected:
            leftovers = sorted(
                p.name
                for pattern in (f"{STAGING_PREFIX}*", ".*.tmp-*", ".write-probe-*")
                for p in self.store.root.glob(pattern)
            )
            expect(not leftovers, f"left over after a finished run: {leftovers}")
        return latest

    def scenario(self, name: str, body: Callable[[], str]) -> None:
        started = time.monotonic()
        self.failures_before = len(self.client.failures)
        try:
            detail = body()
            ok = True
        except (ChaosFailure, ArtefactError, httpx.HTTPError) as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        if self.api.proc is not None and self.api.proc.poll() is not None:
            # Not one of the suite's own kills (those restart it at once): say so, restart it
            # so that one outside event does not fail every later scenario too.
            detail = f"the API process ended by itself (exit {self.api.proc.returncode}); {detail}"
            ok = False
            with self.client.paused():
                self.api.start()
                self.api.wait("/ready")
        line = (
            f"{'PASS' if ok else 'FAIL'}  {name:<34} {time.monotonic() - started:5.1f} s  {detail}"
        )
        print(line, flush=True)
        self.results.append((name, ok, detail))

    # -- scenarios
    def first_model(self) -> str:
        job = self.completed_run("good")
        expect(job.exit == 0, "the first model was not promoted")
        self.api.wait("/ready", 60)
        self.client.start()
        return f"first model served: {self.check(True)}"

    def kill_trainer(self) -> str:
        """One run SIGKILLed at a random moment, weighted towards publishing: half of the runs
        at a uniform moment of the publish phase (from the run's own 'publishing version' log
        line, over the median length of that phase in runs left alone, up to their last log
        line), one in six after the rename (from its 'published version' line, over the
        median rest of a run: promotion and pruning), one in three at a uniform moment of a
        whole run (median run length). A run that ends first does not count as killed."""
        draw = self.rng.random()
        mode = "publish" if draw < 1 / 2 else "after rename" if draw < 2 / 3 else "anytime"
        config = self.rng.choice(["medium", "medium", "weak"])  # one epoch: quicker to publish
        job = self.train(config)
        job.has_pid.wait(30)
        if mode == "publish":
            job.wait_for_line("publishing version ", 120)
            window = statistics.median(self.publish_seconds)
        elif mode == "after rename":
            job.wait_for_line("published version ", 120)
            window = statistics.median(self.after_rename_seconds)
        else:
            runs = self.run_seconds.get(config) or [
                t for ts in self.run_seconds.values() for t in ts
            ]
            window = statistics.median(runs)
        delay = self.rng.uniform(0, window)
        time.sleep(delay)
        at = time.monotonic() - job.started
        killed = job.kill()
        code = job.wait()
        phase = job.phase()
        if killed and code == -signal.SIGKILL:
            self.kills.append((mode, phase, at))
            outcome = f"killed {at:4.1f} s into the run ({mode}: +{delay:.3f} s), in {phase}"
        else:
            outcome = f"ran to the end ({code}) before the kill at +{delay:.2f} s ({mode})"
        self.check(clean_expected=not killed)
        return f"{config}: {outcome}"

    def two_trainers(self) -> str:
        weak = self.completed_run("weak", "--force")
        expect(weak.exit == 0, "--force did not promote")
        before = {v.name for v in self.store.versions()}
        jobs = {"strict": self.train("strict"), "medium": self.train("medium")}
        codes = {name: job.wait() for name, job in jobs.items()}
        expect(all(c in (0, 3) for c in codes.values()), f"exit codes {codes}")
        new = {v.name: v for v in self.store.versions() if v.name not in before}
        expect(len(new) == 2, f"{len(new)} of the two runs published")
        latest = self.store.latest()
        expect(latest in new, f"LATEST {latest} is neither new version")
        f1 = {name: info.metrics["micro_f1"] for name, info in new.items()}
        assert latest is not None
        expect(f1[latest] >= max(f1.values()) - 1e-9, f"LATEST is not the better one: {f1}")
        regated = sum("re-running the gate" in job.text() for job in jobs.values())
        self.check(True)
        scores = ", ".join(f"{v:.3f}" for v in sorted(f1.values()))
        return f"exits {codes}; micro-F1 {scores}; LATEST on the better; CAS retries: {regated}"

    def rollback_race(self) -> str:
        """Rollbacks to two older promoted versions, alternately every 50 ms, plus a prune
        now and then, from this process, for the whole of a trainer run."""
        latest = self.store.latest()
        targets = [
            n for n in self.store.fallback_candidates(before=latest) if n not in self.corrupted
        ][:2]
        expect(len(targets) == 2, "fewer than two older promoted versions to roll back to")
        rollbacker = ArtefactStore(self.store.root)
        job = self.train("good")
        job.wait_for_line("training on ", 120)
        rollbacks = prunes = 0
        while not job.done.is_set():
            with contextlib.suppress(ArtefactError):  # a target pruned meanwhile: refused
                target = targets[rollbacks % 2]
                rollbacker.set_latest(target, reason="chaos: rollback racing a publish")
                rollbacks += 1
            if rollbacks % 10 == 0:
                rollbacker.prune(keep=10)
                prunes += 1
            time.sleep(0.05)
        code = job.wait()
        expect(code in (0, 3), f"the trainer exited {code}: {job.text()[-1500:]}")
        regates = job.text().count("re-running the gate")
        final = self.check(True)
        where = "a rollback target" if final in targets else "the new version"
        return (
            f"{rollbacks} rollbacks, {prunes} prunes during the run; trainer exit {code} after "
            f"{regates} gate re-runs; LATEST ends on {where}"
        )

    def flip_byte_in_latest_then_restart_api(self) -> str:
        victim = self.store.latest()
        assert victim is not None
        weights = self.store.root / victim / "model.safetensors"
        with weights.open("r+b") as handle:
            handle.seek(weights.stat().st_size // 2)
            byte = handle.read(1)
            handle.seek(-1, 1)
            handle.write(bytes([byte[0] ^ 0xFF]))
        self.corrupted.add(victim)
        fallback = next(
            name
            for name in self.store.fallback_candidates(before=victim)
            if _verifies(self.store, name)
        )
        with self.client.paused():
            self.api.kill()
            self.api.start()
            self.api.wait("/ready")
        served = self.api.serves(fallback, timeout=10)
        expect(served == fallback, f"after restart the API serves {served}, not {fallback}")
        job = self.completed_run("good")
        expect(job.exit == 0, f"not promoted over a corrupted LATEST: {job.text()[-800:]}")
        served = self.check(True)
        return f"restart served fallback {fallback}; the next run replaced {victim}: {served}"

    def truncate_file_then_try_use(self) -> str:
        latest = self.store.latest()
        victim = next(
            n for n in self.store.fallback_candidates(before=latest) if n not in self.corrupted
        )
        weights = self.store.root / victim / "model.safetensors"
        with weights.open("r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)
        self.corrupted.add(victim)
        job = self.versions_cli("use", victim)
        expect(job.exit == 2, f"`versions use` of a truncated version exited {job.exit}")
        expect(self.store.latest() == latest, "LATEST moved to a truncated version")
        return f"`versions use {victim}` refused (exit 2); {self.check(True)} still served"

    def delete_file_in_latest(self) -> str:
        victim = self.store.latest()
        assert victim is not None
        (self.store.root / victim / "tokenizer.json").unlink()
        self.corrupted.add(victim)
        job = self.completed_run("good")
        expect(job.exit == 0, f"not promoted over a damaged LATEST: {job.text()[-800:]}")
        return f"the next run replaced {victim}: {self.check(True)}"

    def break_latest(self, content: bytes, label: str) -> str:
        good = self.store.latest()
        assert good is not None
        _replace(self.store.root / LATEST_FILE, content)
        time.sleep(0.5)  # a few API polls: it keeps serving what it had
        info = self.api.model()
        expect(info["version"] == good, f"the API dropped {good} for a broken LATEST")
        listing = self.versions_cli("list")
        expect(listing.exit == 0, f"`versions list` exited {listing.exit}")
        expect("LATEST is broken" in listing.text(), "`versions list` did not say LATEST is broken")
        job = self.train("good")
        code = job.wait()
        if label == "a missing version":
            # The gate cannot load what LATEST names: the new model mends it.
            expect(code == 0, f"the trainer exited {code}: {job.text()[-800:]}")
            return (
                f"served {good} meanwhile; list warned; the next run mended it: {self.check(True)}"
            )
        errors = [line for line in job.text().splitlines() if line.startswith("error:")]
        expect(code == 2 and len(errors) == 1, f"trainer exit {code}, error lines {errors}")
        expect("training on " not in job.text(), "the trainer trained before checking the store")
        expect(info["latest_error"] is not None, "/model does not say why LATEST is unreadable")
        mend = self.versions_cli("use", good)
        expect(mend.exit == 0, "`versions use` could not mend LATEST")
        return (
            f"served {good} meanwhile; list warned; trainer refused before training (exit 2): "
            f"{errors[0][:70]}...; mended"
        )

    def break_latest_during_run(self) -> str:
        good = self.store.latest()
        assert good is not None
        job = self.train("good")
        expect(job.wait_for_line("training on ", 120), "the run never started training")
        _replace(self.store.root / LATEST_FILE, b"garbage\n")
        code = job.wait()
        text = job.text()
        expect(code == 3, f"exit {code}, not 3: {text[-800:]}")
        expect("LATEST cannot be read" in text, "the run did not say why it did not promote")
        mine = [line.split()[1] for line in text.splitlines() if line.startswith("published ")]
        expect(len(mine) == 1 and _verifies(self.store, mine[0]), "the finished model was lost")
        expect(self.store.promotion(mine[0]).status == "rejected", "not recorded as rejected")
        expect(self.versions_cli("use", good).exit == 0, "could not mend LATEST")
        return f"published {mine[0]} unpromoted (exit 3, says why); mended: {self.check(True)}"

    def disk_full(self, stage: str) -> str:
        """The disk fills up while staging the weights, or later, just before the int8
        quantization (whose scratch copy onnx's writer would truncate without a word)."""
        before = {v.name for v in self.store.versions()}
        latest = self.store.latest()
        assert latest is not None
        ballast = self.store.root / "ballast"
        if self.tmpfs:
            if stage == "weights":
                room = 1 << 20  # the weights need about 9 MiB
            else:  # room for the weights, the fp32 graph and the tokenizer, not for the scratch
                files = ("model.safetensors", "model.onnx", "tokenizer.json")
                room = sum((self.store.root / latest / f).stat().st_size for f in files)
                room += 3 << 20
            stat = os.statvfs(self.store.root)
            free = stat.f_bavail * stat.f_frsize
            with ballast.open("wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, max(free - room, 1))
            job = self.train("good")
        else:
            job = self.train("good", inject="enospc" if stage == "weights" else "truncate-scratch")
        try:
            code = job.wait()
        finally:
            ballast.unlink(missing_ok=True)
        text = job.text()
        expect(code == 1, f"exit {code} on a full disk: {text[-800:]}")
        expect("No space left on device" in text, "no word of the full disk")
        expect(text.strip().splitlines()[-1].startswith("error:"), "not one error line at the end")
        expect({v.name for v in self.store.versions()} == before, "a version appeared")
        expect(self.store.latest() == latest, "LATEST moved")
        how = "real tmpfs" if self.tmpfs else "injected ENOSPC"
        if not self.tmpfs and stage == "quantization":
            how = "injected truncated scratch copy"
        if stage == "quantization":
            expect("quantiz" in text, f"not stopped at the quantization: {text[-800:]}")
        return f"{how}: exit 1, one line, nothing published; {self.check(True)} still served"

    def log_disk_full(self) -> str:
        """The inference log's SQLite file on a full disk (its own small tmpfs) while 16
        clients send predictions with known request ids; then the space comes back."""
        dropped_before = self.api.dropped_rows()
        load = LogLoad(self.api.url, clients=16)
        load.start()
        ballast = self.log_dir / "ballast"
        try:
            time.sleep(1)
            stat = os.statvfs(self.log_dir)
            with ballast.open("wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, stat.f_bavail * stat.f_frsize)
            load.phase = "full"
            full_at = time.monotonic()
            # The WAL takes writes into the room it already has: wait for the first failed
            # write (the clients' long titles use that room up in seconds).
            while self.api.dropped_rows() == dropped_before:
                expect(time.monotonic() - full_at < 60, "no row dropped 60 s into a full disk")
                time.sleep(0.2)
            first_drop_s = time.monotonic() - full_at
            time.sleep(3)
            dropped = self.api.dropped_rows() - dropped_before
        except BaseException:
            load.stop()
            raise
        finally:
            ballast.unlink(missing_ok=True)
        load.phase = "freed"
        freed_at = time.monotonic()
        time.sleep(8)  # the writer waits at most 5 s between tries while the disk is full
        load.stop()
        expect(not load.failures, f"{len(load.failures)} failed predictions: {load.failures[:3]}")
        answered = load.ok.get("freed", 0)
        expect(answered > 0, "no prediction answered after the space was freed")
        written = 0
        while time.monotonic() - freed_at < 30:
            written = _logged(self.log_dir / "inference.db", f"{LogLoad.PREFIX}-freed-")
            if written >= answered:
                break
            time.sleep(0.5)
        expect(written == answered, f"{written} rows logged of {answered} answered once freed")
        return (
            f"{sum(load.ok.values())} predictions from 16 clients, 0 failed; first row dropped "
            f"{first_drop_s:.1f} s into the full disk, {dropped:.0f} dropped (counted); freed: "
            f"all {written} requests of the next 8 s logged (8 rows each)"
        )

    def kill_api_during_swap(self) -> str:
        before = self.store.latest()
        job = self.train("good")
        deadline = time.monotonic() + 120
        while self.store.latest() == before and not job.done.is_set():
            expect(time.monotonic() < deadline, "LATEST never moved")
            time.sleep(0.002)
        new = self.store.latest()
        expect(new != before, f"the run was not promoted: {job.text()[-800:]}")
        time.sleep(self.rng.uniform(0, 0.3))
        with self.client.paused():
            swapped = f"now serving version {new}" in self.api.log.read_text(errors="replace")
            self.api.kill()
            job.wait()
            self.api.start()
            self.api.wait("/ready")
        moment = "after its swap" if swapped else "before its swap finished"
        return f"API killed {moment} to {new}; restarted: {self.check(True)}"


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the API's process before exec: SIGTERM when this suite dies, even by SIGKILL, so
    that no server outlives it (the fork server ends when its stdin closes)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _verifies(store: ArtefactStore, name: str) -> bool:
    try:
        verify(store.root / name)
    except ArtefactError:
        return False
    return True


def _replace(path: Path, content: bytes) -> None:
    tmp = path.with_name(".chaos-tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


@contextlib.contextmanager
def tmpfs_folder(folder: Path, size: str, tmpfs: bool) -> Iterator[tuple[Path, bool]]:
    """A small tmpfs of ``size`` at ``folder`` when this process may mount one (root), else a
    plain folder; whether it is a tmpfs."""
    folder.mkdir()
    mounted = False
    if tmpfs and os.geteuid() == 0 and shutil.which("mount"):
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        mounted = result.returncode == 0
    try:
        yield folder, mounted
    finally:
        if mounted and subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__)
    parser.add_argument("--kills", type=int, default=30, help="trainer runs to SIGKILL")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--budget-s", type=float, default=570, help="stop starting scenarios after")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument(
        "--no-tmpfs", action="store_true", help="inject ENOSPC even where a tmpfs can be mounted"
    )
    parser.add_argument(
        "--only", default="", help="run only the later scenarios whose name contains this"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="tagger-chaos-"))
    print(f"chaos: seed {args.seed}, work folder {work}", flush=True)
    ok = False
    with (
        tmpfs_folder(work / "store", "384m", not args.no_tmpfs) as (store_dir, tmpfs),
        tmpfs_folder(work / "log", "64m", not args.no_tmpfs) as (log_dir, log_tmpfs),
    ):
        chaos = Chaos(work, store_dir, random.Random(args.seed), tmpfs, log_dir, log_tmpfs)
        try:
            ok = run_all(chaos, args, started)
        finally:
            chaos.client.stop_event.set()
            chaos.watcher.stop_event.set()
            chaos.api.stop()
            chaos.zygote.close()
    if not args.keep and ok:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def run_all(chaos: Chaos, args: argparse.Namespace, started: float) -> bool:
    chaos.api.start(wait=False)  # its imports overlap with building the tiny model
    chaos.prepare()
    chaos.api.wait("/health")
    chaos.watcher.start()
    chaos.scenario("first model, API serving", chaos.first_model)
    chaos.completed_run("good")  # a second measured run, and an older version to fall back on
    scenarios: list[tuple[str, Callable[[], str]]] = [
        ("two trainers at once (1)", chaos.two_trainers),
        ("two trainers at once (2)", chaos.two_trainers),
        ("rollback racing a publish", chaos.rollback_race),
        ("byte flipped in LATEST, API restart", chaos.flip_byte_in_latest_then_restart_api),
        ("file truncated, versions use", chaos.truncate_file_then_try_use),
        ("file deleted in LATEST", chaos.delete_file_in_latest),
        ("LATEST garbage", lambda: chaos.break_latest(b"garbage\n", "garbage")),
        ("LATEST not UTF-8", lambda: chaos.break_latest(b"\xff\xfe\xfd\n", "not UTF-8")),
        (
            "LATEST names a missing version",
            lambda: chaos.break_latest((new_version_name() + "\n").encode(), "a missing version"),
        ),
        ("LATEST broken during a run", chaos.break_latest_during_run),
        ("disk full during staging", lambda: chaos.disk_full("weights")),
        ("disk full before int8 quantization", lambda: chaos.disk_full("quantization")),
        *((name, lambda body=body: body(chaos)) for name, body in rollout.SCENARIOS),
        ("API killed during a swap", chaos.kill_api_during_swap),
    ]
    if chaos.log_tmpfs:
        scenarios.insert(-1, ("inference log: SQLite on a full disk", chaos.log_disk_full))
    else:
        print("SKIP  inference log: SQLite on a full disk (needs root to mount a tmpfs)")
    skipped = 0
    for name, body in scenarios:
        if args.only.lower() not in name.lower():
            continue
        if time.monotonic() - started > args.budget_s:
            skipped += 1
            print(f"SKIP  {name:<34} (time budget of {args.budget_s:.0f} s spent)", flush=True)
            continue
        chaos.scenario(name, body)
    attempts = 0
    # Runs that finish before their kill moment do not count: go on until enough were killed.
    while len(chaos.kills) < args.kills and attempts < 3 * args.kills:
        if time.monotonic() - started > args.budget_s:
            print(f"STOP  SIGKILL runs: time budget of {args.budget_s:.0f} s spent", flush=True)
            break
        attempts += 1
        killed_before = len(chaos.kills)
        chaos.scenario(f"trainer SIGKILL, attempt {attempts:2d}", chaos.kill_trainer)
        if len(chaos.kills) > killed_before and len(chaos.kills) % 5 == 0:
            # Finished runs between kills: they clean up after the dead and move LATEST.
            chaos.scenario(
                f"finished run after kill {len(chaos.kills)}", _finished(chaos, len(chaos.kills))
            )
    failed = [name for name, ok, _ in chaos.results if not ok]
    by_mode = Counter(mode for mode, _, _ in chaos.kills)
    by_phase = Counter(phase for _, phase, _ in chaos.kills)
    print(
        f"chaos: {len(chaos.results) - len(failed)}/{len(chaos.results)} scenarios passed, "
        f"{skipped} skipped; {len(chaos.kills)} trainers SIGKILLed "
        f"({', '.join(f'{n} {m}' for m, n in sorted(by_mode.items()))}; in "
        f"{', '.join(f'{p} {n}' for p, n in by_phase.most_common())}); "
        f"client {chaos.client.ok} requests, {len(chaos.client.failures)} failed; "
        f"API started {chaos.api.starts} times; {time.monotonic() - started:.0f} s",
        flush=True,
    )
    return not failed and not skipped and len(chaos.kills) >= args.kills


def _finished(chaos: Chaos, i: int) -> Callable[[], str]:
    def body() -> str:
        config = "weak" if i % 2 else "good"
        job = chaos.completed_run(config)
        served = chaos.check(True)
        verdict = "promoted" if job.exit == 0 else "not promoted"
        return f"{config}: {verdict} (exit {job.exit}); serving {served}"

    return body


if __name__ == "__main__":
    sys.exit(main())
