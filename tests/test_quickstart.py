"""``tagger quickstart`` end to end: real trainer and API processes on the tiny model.

A first recipe is served, the default one trained behind it is swapped in while a client
polls ``/predict`` (no request fails), Ctrl-C stops everything, and a second run reuses what is
published. Ctrl-C during the first training leaves the store empty and no process behind.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from shared.store import ArtefactStore
from tagger.quickstart import PROGRESS
from tests.conftest import REPO, free_port, write_wide_tsv

pytestmark = pytest.mark.integration


def test_progress_pattern_reads_tqdm_lines() -> None:
    line = "epoch 1.5/2:  47%|####7     | 8832/18900 [00:50<00:54, 174.56ex/s, loss=0.040]"
    match = PROGRESS.search(line)
    assert match is not None
    assert match.groups() == ("1.5", "2", "47", "00:54")


class Quickstart:
    """``python -m tagger quickstart`` with its printed lines collected as they come."""

    def __init__(self, work: Path, tiny_model_dir: Path, first: dict, full: dict) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.artefacts = work / "artefacts"
        for name, values in (("first", first), ("full", full)):
            recipe = {"base_model": str(tiny_model_dir), "freeze_layers": 0, "max_length": 24}
            recipe = {**recipe, "threads": 1, **values}
            (work / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
        train = work / "train.tsv"
        if not train.exists():
            write_wide_tsv(train, 160, seed=1)
        env = {
            **os.environ,
            "API_DATABASE_URL": f"sqlite:///{work / 'inference.db'}",
            "API_LOG_LEVEL": "warning",
        }
        argv = [sys.executable, "-m", "tagger", "quickstart"]
        argv += ["--first-config", str(work / "first.yaml"), "--config", str(work / "full.yaml")]
        argv += ["--dataset", str(train), "--artefacts-dir", str(self.artefacts)]
        argv += ["--log-dir", str(work / "logs"), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)

    def wait_for(self, text: str, timeout_s: float = 180) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            if self.proc.poll() is not None and self._queue.empty():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line with {text!r}; output:\n" + "\n".join(self.lines))

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the command, as a terminal sends it; its exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)

    def served(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.url}/ready", timeout=2) as reply:
                return str(json.load(reply)["model_version"])
        except (urllib.error.URLError, OSError):
            return None


def predict(url: str) -> int:
    body = json.dumps({"text": "How do I merge two dictionaries in Python?"}).encode()
    request = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return -1


def api_closed(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/health", timeout=2)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


def test_first_model_then_the_default_swapped_in_then_reused(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    first = {"epochs": 1, "baseline": False}
    # The default recipe trains longer (so the client polls across the swap); a tolerance of
    # 1.0 lets the gate pass whatever the tiny model scores: the swap is what is tested.
    full = {"epochs": 30, "early_stopping_patience": 30, "promotion_tolerance": 1.0}
    run = Quickstart(tmp_path, tiny_model_dir, first, full)
    run.wait_for("training the first recipe")
    run.wait_for("serving ")
    first_version = run.served()
    assert first_version is not None
    assert "first recipe" in run.wait_for(f"serving {first_version}")
    run.wait_for("training the default recipe")

    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            statuses.append(predict(run.url))

    poller = threading.Thread(target=client)
    poller.start()
    try:
        swapped = run.wait_for("now serving", timeout_s=240)
        time.sleep(1.0)  # keep polling the new version a moment
    finally:
        stop.set()
        poller.join()
    assert "default recipe" in swapped
    assert statuses and set(statuses) == {200}, f"failed requests: {statuses}"
    reader = ArtefactStore(run.artefacts)
    versions = [v.name for v in reader.versions()]
    assert len(versions) == 2 and versions[0] == first_version
    assert reader.latest() == versions[1] == run.served()

    assert run.interrupt() == 0
    assert api_closed(run.url)
    assert "stopped" in run.lines[-1]

    again = Quickstart(tmp_path, tiny_model_dir, first, full)
    again.wait_for("reusing the published model")
    again.wait_for("nothing to train")
    assert again.served() == versions[1]
    assert again.interrupt() == 0
    assert not any("training the" in line for line in again.lines)
    assert [v.name for v in ArtefactStore(again.artefacts).versions()] == versions


def test_ctrl_c_during_the_first_training_publishes_nothing_and_leaves_no_process(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    slow = {"epochs": 100, "early_stopping_patience": 100}
    run = Quickstart(tmp_path, tiny_model_dir, slow, slow)
    run.wait_for("training the first recipe")
    time.sleep(3.0)  # the trainer is importing or training
    assert run.interrupt() == 0
    assert ArtefactStore(run.artefacts).latest() is None
    assert not [v.name for v in ArtefactStore(run.artefacts).versions()]
    leftovers = subprocess.run(
        ["pgrep", "-f", str(run.artefacts)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == "", f"processes left behind: {leftovers.stdout}"
