"""A real API process on a tiny model, for the scripts that attack one (fuzz, attack).

:func:`publish_tiny_model` trains the unit tests' tiny model (tests/conftest.py) into
``root/artefacts``; :class:`ApiProcess` serves a store with ``python -m api`` on a free
127.0.0.1 port, its log in a file, and stops it (``with`` or :meth:`ApiProcess.stop`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.conftest import REPO, build_tiny_bert, free_port, tiny_config, write_wide_tsv


def publish_tiny_model(root: Path) -> Path:
    """Train and publish the tiny model; returns the artefacts folder (``root/artefacts``)."""
    from trainer.train import train

    build = root / "work"
    base = build_tiny_bert(build / "tiny-bert")
    train_tsv = write_wide_tsv(build / "train.tsv", 160, seed=1)
    valid_tsv = write_wide_tsv(build / "valid.tsv", 60, seed=2)
    train(tiny_config(base), train_tsv, valid_tsv, root / "artefacts")
    return root / "artefacts"


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Wait until ``url``/ready answers 200; raise if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError("the API was not ready in time")


class ApiProcess:
    """``python -m api`` serving ``artefacts`` (SQLite inference log in ``work``)."""

    def __init__(self, work: Path, artefacts: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / f"api-{self.port}.log"
        settings = {
            "TAGGER_ARTEFACTS_DIR": str(artefacts),
            "API_DATABASE_URL": f"sqlite:///{work / 'inference.db'}",
            "API_PORT": str(self.port),
            "API_LOG_LEVEL": "warning",
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api"],
                cwd=REPO,
                env={**os.environ, **settings, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> ApiProcess:
        wait_ready(self.url, self.proc)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mib(self) -> float:
        """The process's resident memory now (VmRSS), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 30 s); returns the exit status, None if it was killed."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
