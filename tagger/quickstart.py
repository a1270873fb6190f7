"""``tagger quickstart`` (``make quickstart``): a model served within minutes of a fresh clone,
the default one swapped in behind it.

1. With no model in the store, train the first recipe (``--first-config``,
   conf/train-first.yaml: the fastest one within 0.03 micro-F1 of the default) and publish it;
   with one, serve what is there.
2. Serve it: the API (``python -m api``), which hot-reloads whatever LATEST names.
3. Unless the store holds a version of the default recipe (``--config`` with its ``TRAINER_*``
   overrides, on the same training file), train it in the background. Its version meets the
   promotion gate like any run's, and the API swaps to it with no restart and no failed request.
4. Print a line whenever what is served, or how far the training is, changes.

Ctrl-C (or SIGTERM) stops the training and the API and exits; a stopped training publishes
nothing and the store is never half-written. Run again, it reuses what is published.

The trainer and the API run as child processes, each in a session of its own (the terminal's
Ctrl-C reaches this command alone, which stops them in order), their output in ``--log-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from shared.settings import DEFAULT_ARTEFACTS_DIR
from shared.store import ArtefactStore, sha256_file
from trainer.__main__ import EXIT_NOT_PROMOTED
from trainer.config import DEFAULT_CONFIG, ConfigError, load_config
from trainer.split import default_dataset

FIRST_CONFIG = Path("conf/train-first.yaml")
STOP_GRACE_S = 15.0
READY_TIMEOUT_S = 180.0
PROGRESS_EVERY_S = 20.0
# tqdm's line: "epoch 1/2:  47%|####   | 8832/18900 [00:50<00:54, 174.56ex/s, loss=0.040]"
PROGRESS = re.compile(r"epoch ([\d.]+)/([\d.]+):\s+(\d+)%\|[^|]*\|\s*\d+/\d+ \[[\d:]+<([\d:?]+)")
# The trainer's own lines worth repeating here.
OUTCOME = re.compile(r"(promoted \S+:.*|NOT promoted:.*|published \S+ as the .*)$")


class Stopped(Exception):
    """Ctrl-C or SIGTERM: stop everything and exit."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def say(text: str) -> None:
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass(frozen=True)
class Recipe:
    """A training recipe: its config file and what it resolves to (as manifests record it)."""

    name: str
    path: Path
    config: dict[str, Any]

    @classmethod
    def load(cls, name: str, path: Path) -> Recipe:
        return cls(name, path, load_config(path).public_dict())


class Job:
    """A child process in a session of its own, its output going to ``log``."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._out: IO[bytes] = log.open("wb")
        self.process = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self._read = 0

    def exit_code(self) -> int | None:
        return self.process.poll()

    def new_output(self) -> list[str]:
        """Lines (tqdm's \\r-separated updates included) written since the last call."""
        with self.log.open("rb") as f:
            f.seek(self._read)
            data = f.read()
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        self._read += cut
        return re.split(r"[\r\n]+", data[:cut].decode("utf-8", "replace"))

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(re.split(r"[\r\n]+", text.strip())[-lines:])

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after a grace; wait for it."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self._out.close()


class Quickstart:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.store = ArtefactStore(args.artefacts_dir)  # read only here
        self.first = Recipe.load("first recipe", args.first_config)
        self.full = Recipe.load("default recipe", args.config)
        self.dataset: Path = args.dataset or default_dataset()
        self.url = f"http://{args.host}:{args.port}"
        self.env = {
            **os.environ,
            "TAGGER_ARTEFACTS_DIR": str(args.artefacts_dir),
            "API_HOST": args.host,
            "API_PORT": str(args.port),
            "TRAINER_PROGRESS_INTERVAL_S": "5",
        }
        self.jobs: list[Job] = []
        self.served: str | None = None
        self._epoch, self._said = "", 0.0  # the progress last repeated

    # -- what the store holds ------------------------------------------------------------
    def versions_of(self, recipe: Recipe) -> list[str]:
        """Published versions trained with ``recipe`` on this training file."""
        digest = sha256_file(self.dataset)
        return [
            v.name
            for v in self.store.versions()
            if v.manifest.get("config") == recipe.config
            and (v.manifest.get("data") or {}).get("train", {}).get("sha256") == digest
        ]

    def describe(self, version: str) -> str:
        info = next((v for v in self.store.versions() if v.name == version), None)
        if info is None:
            return version
        recipe = next(
            (r.name for r in (self.full, self.first) if info.manifest.get("config") == r.config),
            "another recipe",
        )
        f1 = info.metrics.get("micro_f1")
        score = f", validation micro-F1 {f1:.3f}" if isinstance(f1, float) else ""
        return f"{version} ({recipe}{score})"

    # -- children ------------------------------------------------------------------------
    def start(self, name: str, argv: list[str]) -> Job:
        job = Job([sys.executable, *argv], self.args.log_dir / f"{name}.log", self.env)
        self.jobs.append(job)
        return job

    def train(self, recipe: Recipe, name: str) -> Job:
        argv = ["-m", "trainer", "--config", str(recipe.path)]
        argv += ["--artefacts-dir", str(self.args.artefacts_dir), "--dataset", str(self.dataset)]
        job = self.start(name, argv)
        say(f"training the {recipe.name} ({recipe.path}); its log: {job.log}")
        return job

    def report_training(self, job: Job, recipe: Recipe) -> None:
        """Repeat the trainer's progress (an epoch's start, then at most every
        PROGRESS_EVERY_S) and its verdict."""
        for line in job.new_output():
            if match := PROGRESS.search(line):
                epoch, epochs, percent, left = match.groups()
                now = time.monotonic()
                started = epoch != self._epoch
                if started or (now - self._said >= PROGRESS_EVERY_S and percent != "100"):
                    self._epoch, self._said = epoch, now
                    where = f"epoch {epoch}/{epochs}, {percent}%, {left} left"
                    say(f"training the {recipe.name}: {where}")
            elif match := OUTCOME.search(line):
                say(f"{recipe.name}: {match.group(1)}")

    def ready_version(self) -> str | None:
        """The version the API serves (GET /ready), None while it serves none."""
        try:
            with urllib.request.urlopen(f"{self.url}/ready", timeout=2) as reply:
                return str(json.load(reply)["model_version"])
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return None

    def watch_api(self, api: Job) -> None:
        if (code := api.exit_code()) is not None:
            raise RuntimeError(f"the API exited with code {code}:\n{api.tail()}")
        version = self.ready_version()
        if version and version != self.served:
            verb = "now serving" if self.served else "serving"
            self.served = version
            say(f"{verb} {self.describe(version)} at {self.url}")
            if verb == "serving":
                body = """'{"text": "Sort a dict by value"}'"""
                say(
                    f"try: curl -s {self.url}/predict -H 'content-type: application/json' -d {body}"
                )
                say(f"the API's documentation: {self.url}/docs")

    # -- the run -------------------------------------------------------------------------
    def run(self) -> int:
        if self.store.latest() is None:
            job = self.train(self.first, "train-first")
            while (code := job.exit_code()) is None:
                self.report_training(job, self.first)
                time.sleep(0.5)
            self.report_training(job, self.first)
            if code != 0:
                say(f"the first training failed (exit code {code}):\n{job.tail()}")
                return 1
        else:
            say(f"reusing the published model: LATEST names {self.store.latest()}")
        api = self.start("api", ["-m", "api"])
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.served is None:
            self.watch_api(api)
            if time.monotonic() > deadline:
                waited = f"{READY_TIMEOUT_S:.0f} s"
                raise RuntimeError(f"the API was not ready in {waited}:\n{api.tail()}")
            time.sleep(0.5)
        full: Job | None = None
        if done := self.versions_of(self.full):
            say(f"the default recipe's model is published ({done[-1]}): nothing to train")
        else:
            full = self.train(self.full, "train-default")
        say("Ctrl-C stops everything")
        while True:
            self.watch_api(api)
            if full is not None:
                self.report_training(full, self.full)
                if (code := full.exit_code()) is not None:
                    self.report_training(full, self.full)
                    if code not in (0, EXIT_NOT_PROMOTED):  # not promoted: the gate said so
                        say(f"the default training failed (exit code {code}), see {full.log}")
                    full = None
            time.sleep(1.0)

    def stop(self) -> None:
        for job in reversed(self.jobs):  # training first, then the API
            job.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tagger quickstart",
        description="Serve a first model within minutes, then the default one behind it.",
    )
    parser.add_argument("--first-config", type=Path, default=FIRST_CONFIG)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--artefacts-dir", type=Path, default=DEFAULT_ARTEFACTS_DIR)
    parser.add_argument("--log-dir", type=Path, default=Path("build/quickstart"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        quickstart = Quickstart(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return quickstart.run()
    except Stopped as why:
        say(f"{why}: stopping the training and the API")
        return 0
    except RuntimeError as exc:
        say(f"error: {exc}")
        return 1
    finally:
        quickstart.stop()
        say("stopped")


if __name__ == "__main__":
    raise SystemExit(main())
