"""The db service (PostgreSQL for the inference log) in compose.yaml and the Swarm stack: built
from database/, its data on a named volume, its password a secret file that `make secrets`
writes and git ignores (never a value in a deployment file), and the URLs of the api and the
trainer naming its role and database. The image itself runs in `make e2e`."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import make_url

from tests.conftest import REPO

COMPOSE = REPO / "compose.yaml"
STACK = REPO / "deploy" / "swarm" / "stack.yaml"
SECRET = "postgres-password"
SECRET_FILE = REPO / "secrets" / SECRET
DATA = "/var/lib/postgresql/data"


def load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def default(value: str) -> str:
    """``${VAR:-default}`` -> ``default``; anything else as it is."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return match.group(1) if match else value


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes, short (``src:dst``) or long syntax."""
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
        else:
            source, target = entry.get("source", entry["type"]), entry["target"]
        mounts[target] = source
    return mounts


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=["compose.yaml", "stack.yaml"])
def test_db_service_keeps_its_data_on_a_named_volume_and_its_password_in_a_secret_file(
    path: Path,
) -> None:
    spec = load(path)
    db = spec["services"]["db"]
    assert db["image"] == "tagger-db:${TAG:-latest}"
    assert (path.parent / db["build"]["context"]).resolve() == REPO / "database"
    # A named volume (declared at the top), not a host folder.
    source = volume_mounts(db)[DATA]
    assert source in spec["volumes"], f"{path.name}: db's data on {source!r}"
    # The password: the secret's file, read by the db, the api and the trainer.
    assert (path.parent / spec["secrets"][SECRET]["file"]).resolve() == SECRET_FILE
    for name in ("db", "api", "trainer"):
        assert SECRET in spec["services"][name]["secrets"], f"{path.name}: {name}"
    assert db["environment"]["POSTGRES_PASSWORD_FILE"] == f"/run/secrets/{SECRET}"
    # No password written anywhere in the file: no *PASSWORD variable but the file ones, no
    # password in a URL.
    for name, service in spec["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert "PASSWORD" not in key or key.endswith("PASSWORD_FILE"), f"{name}: {key}"
            if "://" in str(value):
                assert make_url(default(str(value))).password is None, f"{name}: {key}"
    assert db["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert "ports" not in db  # reachable from the other services only


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=["compose.yaml", "stack.yaml"])
def test_the_services_urls_name_the_db_service_s_role_and_database(path: Path) -> None:
    services = load(path)["services"]
    db = services["db"]["environment"]
    for name, prefix in (("api", "API_"), ("trainer", "TRAINER_")):
        env = services[name]["environment"]
        url = make_url(default(env[f"{prefix}DATABASE_URL"]))
        assert (url.get_backend_name(), url.host, url.port) == ("postgresql", "db", 5432)
        assert (url.username, url.database) == (db["POSTGRES_USER"], db["POSTGRES_DB"])
        assert env[f"{prefix}DATABASE_PASSWORD_FILE"] == db["POSTGRES_PASSWORD_FILE"]


def test_the_stack_pins_the_db_to_one_node() -> None:
    deploy = load(STACK)["services"]["db"]["deploy"]
    assert deploy["replicas"] == 1
    assert deploy["placement"]["constraints"] == ["node.labels.tagger.db == true"]
    assert deploy["update_config"]["order"] == "stop-first"


def test_the_image_keeps_the_data_where_the_deployments_mount_the_volume() -> None:
    dockerfile = (REPO / "database" / "Dockerfile").read_text()
    assert f'VOLUME ["{DATA}"]' in dockerfile
    assert re.search(r"^USER postgres$", dockerfile, re.MULTILINE)
    assert subprocess.run(["sh", "-n", str(REPO / "database" / "entrypoint.sh")]).returncode == 0


def test_the_secret_folder_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", "secrets/postgres-password"]
    )
    assert ignored.returncode == 0


def test_make_secret_writes_a_random_password_once(tmp_path: Path) -> None:
    (tmp_path / "database").mkdir()
    script = tmp_path / "database" / "make-secret.sh"
    shutil.copy(REPO / "database" / "make-secret.sh", script)
    first = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True)
    assert first.stdout == "wrote secrets/postgres-password\n"
    secret = tmp_path / "secrets" / SECRET
    password = secret.read_text()
    assert re.fullmatch(r"[\w-]{32}\n", password)
    # Readable by the containers' non-root users (a bind mount keeps the mode); the folder is
    # this user's alone.
    assert stat.S_IMODE(secret.stat().st_mode) == 0o644
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    again = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True)
    assert again.stdout == "" and secret.read_text() == password
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "database", other / "database")
    subprocess.run(
        ["sh", str(other / "database" / "make-secret.sh")], capture_output=True, check=True
    )
    assert (other / "secrets" / SECRET).read_text() != password
