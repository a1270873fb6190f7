"""End to end over real HTTP: trainer CLI publishes, uvicorn serves, a retrain is picked up
while a client polls, with zero failed requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from api.healthcheck import check as healthcheck
from shared.store import LATEST_FILE, ArtefactStore, new_version_name
from tests.conftest import REPO, free_port, run_cli, wait_for

pytestmark = pytest.mark.integration


def failed_versions(url: str) -> list[str]:
    return [f["version"] for f in httpx.get(f"{url}/model").json()["failed_versions"]]


def train_cli(config: Path, data: Path, artefacts: Path) -> str:
    result = run_cli(
        "-m",
        "trainer",
        "--config",
        str(config),
        "--dataset",
        str(data),
        "--artefacts-dir",
        str(artefacts),
    )
    assert result.returncode == 0, result.stderr
    version = ArtefactStore(artefacts).latest()
    assert version is not None
    return version


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    artefacts = tmp_path / "artefacts"
    port = free_port()
    env = {
        **os.environ,
        "TAGGER_ARTEFACTS_DIR": str(artefacts),
        # Its own inference log: a test never writes rows into the checkout's data/inference.db.
        "API_DATABASE_URL": f"sqlite:///{tmp_path / 'inference.db'}",
        "API_PORT": str(port),
        "API_POLL_INTERVAL_S": "0.2",
        "API_LOG_LEVEL": "info",
        "API_LOG_FORMAT": "json",
    }
    # A file, not a pipe: one access line per request would fill a pipe nobody reads yet.
    log_file = (tmp_path / "api.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api"],
        cwd=REPO,
        env=env,
        text=True,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, (tmp_path / "api.log").read_text()
        assert time.monotonic() < deadline, "API did not start"
        time.sleep(0.2)
    yield url, artefacts, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log_file.close()


def test_retrain_is_served_without_restart_or_failed_requests(
    api_server: tuple[str, Path, subprocess.Popen[str]],
    tiny_model_dir: Path,
    fixture_data: dict[str, Path],
    tmp_path: Path,
) -> None:
    url, artefacts, proc = api_server
    assert httpx.get(f"{url}/ready").status_code == 503  # started with nothing published
    # The orchestrators' healthcheck: nothing published is healthy (no restart loop before
    # the first training); a port nobody answers on is not.
    assert healthcheck(url) == (True, "no version published yet: nothing to serve")
    assert healthcheck(f"http://127.0.0.1:{free_port()}")[0] is False

    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_model_dir),
                "freeze_layers": 0,
                "epochs": 1,
                "batch_size": 16,
                "max_length": 24,
                "lr_encoder": 1e-3,
                "lr_head": 1e-2,
                "threads": 1,
            }
        )
    )
    # LATEST names a version and none is loaded: not healthy, so a rollout waits for this
    # replica. A version being loaded is a moment too short to catch; one that cannot be
    # loaded (here: not there at all) stays in that state and looks the same from outside.
    missing = new_version_name()
    artefacts.mkdir(parents=True, exist_ok=True)
    (artefacts / LATEST_FILE).write_text(missing + "\n")
    wait_for(lambda: missing in failed_versions(url), 15, "the missing version not tried")
    healthy, why = healthcheck(url)
    assert not healthy, why
    assert why.startswith(f"not ready: LATEST names {missing}, none loaded yet; failed: "), why
    (artefacts / LATEST_FILE).unlink()  # back to nothing published
    wait_for(lambda: httpx.get(f"{url}/model").json()["latest"] is None, 15, "LATEST not re-read")
    assert healthcheck(url) == (True, "no version published yet: nothing to serve")

    first = train_cli(config, fixture_data["train"], artefacts)
    wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, 15, "first model not served")
    assert healthcheck(url) == (True, f"ready: serving {first}")

    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post("/predict", json={"texts": ["pandas numpy", "spring maven"]})
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    seen.append((r.status_code, version))
                except httpx.HTTPError as exc:
                    seen.append((0, repr(exc)))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        second = train_cli(config, fixture_data["train"], artefacts)
        published_at = time.monotonic()
        while httpx.get(f"{url}/model").json()["version"] != second:
            assert time.monotonic() - published_at < 5, "new version not served within 5 s"
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        poller.join()

    failures = [s for s in seen if s[0] != 200]
    assert not failures, failures[:5]
    versions = [v for _, v in seen]
    assert set(versions) == {first, second}
    switch = versions.index(second)
    assert all(v == second for v in versions[switch:])  # no flip-flopping back

    # SIGTERM: uvicorn finishes in-flight work, runs the lifespan's shutdown, then re-raises
    # the signal, so the exit status is "terminated by SIGTERM" after a clean shutdown.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    log = (artefacts.parent / "api.log").read_text()
    assert "Application shutdown complete" in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]
    # API_LOG_FORMAT=json: every line, uvicorn's own included, is one JSON object.
    lines = [json.loads(line) for line in log.splitlines()]
    assert {"uvicorn.error", "api.model_manager", "api.access"} <= {r["logger"] for r in lines}
    assert not [r for r in lines if "color_message" in r]  # uvicorn's terminal copy dropped
    predicts = [r for r in lines if r.get("route") == "/predict"]
    assert len(predicts) == len(seen)
    assert all(r["status"] == 200 and r["texts"] == 2 and r["request_id"] for r in predicts)
    assert {r["model_version"] for r in predicts} == {first, second}
