"""The monitoring profile: promtool accepts the scrape config and the alerting rules, the
rules' unit tests pass, and every tagger metric the rules use is one the API exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, make_client

PROMETHEUS_DIR = REPO / "monitoring" / "prometheus"
IMAGE = "tagger-prometheus:latest"


def promtool_command() -> list[str] | None:
    """promtool on this machine (Debian: apt-get install prometheus), else in the built image."""
    if found := shutil.which("promtool"):
        return [found]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
        if probe.returncode == 0:
            return [
                *("docker", "run", "--rm", "--entrypoint", "promtool", "-w", "/cfg"),
                *("-v", f"{PROMETHEUS_DIR}:/cfg:ro", IMAGE),
            ]
    return None


INSTALL_HINT = (
    "install it (Debian/Ubuntu: apt-get install prometheus, as .ci/run does) or build the "
    "image (docker compose --profile monitoring build)"
)


@pytest.fixture(scope="module")
def promtool() -> list[str]:
    """promtool's command line. Without one, CI (which sets CI) fails: its checks of the
    alerting rules must run there; elsewhere they are skipped, saying how to run them."""
    command = promtool_command()
    if command is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"promtool not found, and CI is set: {INSTALL_HINT}", pytrace=False)
        pytest.skip(f"promtool not found: {INSTALL_HINT}")
    return command


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(promtool: list[str], args: list[str]) -> None:
    result = subprocess.run(
        [*promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_api_replica_is_scraped_through_docker_dns() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "tagger-api"]
    assert job["dns_sd_configs"] == [
        {"names": ["api"], "type": "A", "port": 8000, "refresh_interval": "10s"}
    ]
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert prometheus["ports"] == ["127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"]
    assert compose["services"]["api"]["environment"]["API_LOG_FORMAT"] == "${API_LOG_FORMAT:-json}"


def test_alerts_use_only_metrics_the_api_exports(tmp_path: Path) -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "TaggerApiDown",
        "TaggerApiErrorRatioHigh",
        "TaggerPredictLatencyP99High",
        "TaggerModelReloadFailed",
        "TaggerNoModelLoaded",
        "TaggerInputDrift",
        "TaggerLiveQualityDrop",
        "TaggerPredictionLogDropping",
    }
    used = {m for expr in alerts.values() for m in re.findall(r"\btagger_[a-z0-9_]+", expr)}
    with make_client(tmp_path / "empty") as c:
        c.get("/health")
        text = c.get("/metrics").text
    families = list(text_string_to_metric_families(text))
    exported = {s.name for f in families for s in f.samples}
    # Families with no series yet (the live gauges before any version has figures) still count.
    exported |= {f.name for f in families if f.type == "gauge"}
    assert used and used <= exported, used - exported
