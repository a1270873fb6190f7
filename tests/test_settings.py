"""Settings: each service's settings classes are its only reader of the environment, one
variable names the artefact store, and Compose and the Swarm stack can pass every setting."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field
from pydantic_settings import BaseSettings

from api.settings import ApiSettings
from shared.settings import STORE_ENV, SettingsError, env_name, load
from tests.conftest import REPO
from trainer.config import TrainConfig, TrainerSettings

COMPOSE = REPO / "compose.yaml"
STACK = REPO / "deploy" / "swarm" / "stack.yaml"
SERVICES: dict[str, tuple[type[BaseSettings], ...]] = {
    "api": (ApiSettings,),
    "trainer": (TrainConfig, TrainerSettings),
}
# Settings a container fixes, at the value it needs.
FIXED = {
    "API_HOST": "0.0.0.0",  # reachable from outside the container
    "API_PORT": "8000",  # the port inside; compose's ${API_PORT} is the host's
    STORE_ENV: "/artefacts",  # where the artefacts volume is mounted
    # where the container gets the secret postgres-password (the password is never in the file)
    "API_DATABASE_PASSWORD_FILE": "/run/secrets/postgres-password",
    "TRAINER_DATABASE_PASSWORD_FILE": "/run/secrets/postgres-password",
}
# What the Swarm stack fixes besides: keys on (the secret api-keys), internal routes on 9000.
# compose.yaml, the laptop's, leaves both to the code's default: no key, one port.
STACK_FIXED = FIXED | {
    "API_KEYS_FILE": "/run/secrets/api-keys",
    "API_INTERNAL_PORT": "9000",
}
# Settings taken under the names .env has always had (the stack cannot build a path from a
# file name: docker stack deploy has no ${VAR:+...}).
RENAMED = {
    "TRAINER_CONFIG": "TRAIN_CONFIG",
    "TRAINER_DATASET": "DATASET_FILE",
    "TRAINER_VALID": "VALID_PATH",
}
STACK_RENAMED = {"TRAINER_CONFIG": "TRAIN_CONFIG"}
# Defaults the deployment files write that are not the code's, on purpose.
CHOSEN = {
    "API_BACKEND": "onnx",  # the API image has no torch
    "API_LOG_FORMAT": "json",  # one JSON object per line in production
    "TRAINER_LOG_FORMAT": "json",
    "API_TORCH_THREADS": {COMPOSE: "0", STACK: "1"},  # the stack's replicas are CPU-limited
    # the db service (the code's default is a SQLite file, for runs without Docker)
    "API_DATABASE_URL": "postgresql+psycopg://tagger@db:5432/tagger",
    "TRAINER_DATABASE_URL": "postgresql+psycopg://tagger@db:5432/tagger",
}
DEPLOYMENTS = [
    (COMPOSE, "api", {}),
    (COMPOSE, "trainer", RENAMED),
    (STACK, "api", {}),
    (STACK, "trainer", STACK_RENAMED),
]
IDS = [f"{path.name}-{service}" for path, service, _ in DEPLOYMENTS]


def settings_env(classes: tuple[type[BaseSettings], ...]) -> dict[str, tuple[Any, str]]:
    """Every environment variable the classes read -> (class, field)."""
    return {env_name(cls, field): (cls, field) for cls in classes for field in cls.model_fields}


def environment(path: Path, service: str) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())["services"][service]["environment"]
    assert isinstance(env, dict), f"{path.name}: {service}'s environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def unpassable(
    env: dict[str, str],
    classes: tuple[type[BaseSettings], ...],
    renamed: dict[str, str],
    fixed: dict[str, str] = FIXED,
) -> list[str]:
    """The entries ``env`` lacks for the settings of ``classes`` to be settable from outside."""
    missing = []
    for name in settings_env(classes):
        value = env.get(name)
        if name in fixed:
            if value != fixed[name]:
                missing.append(f"{name}: {fixed[name]!r}")
        elif value is None or not re.search(rf"\$\{{{renamed.get(name, name)}[:}}]", value):
            missing.append(f"{name}: ${{{name}:-}}")
    return missing


@pytest.mark.parametrize(("path", "service", "renamed"), DEPLOYMENTS, ids=IDS)
def test_every_setting_can_be_set_through_the_deployment_file(
    path: Path, service: str, renamed: dict[str, str]
) -> None:
    env = environment(path, service)
    missing = unpassable(env, SERVICES[service], renamed, STACK_FIXED if path == STACK else FIXED)
    assert missing == [], f"add to {path.name}, services.{service}.environment: {missing}"
    assert set(env) <= set(settings_env(SERVICES[service])), "a variable no setting reads"


def test_the_check_fails_for_a_setting_compose_cannot_pass() -> None:
    class Grown(ApiSettings):
        new_knob: int = Field(1, description="a setting added later")

    env = environment(COMPOSE, "api")
    assert unpassable(env, (Grown,), {}) == ["API_NEW_KNOB: ${API_NEW_KNOB:-}"]
    del env["API_QUEUE_DEPTH"]
    env["API_PORT"] = "${API_PORT:-8000}"  # the host's port, not the one inside
    assert unpassable(env, (ApiSettings,), {}) == [
        "API_PORT: '8000'",
        "API_QUEUE_DEPTH: ${API_QUEUE_DEPTH:-}",
    ]


@pytest.mark.parametrize(("path", "service", "renamed"), DEPLOYMENTS, ids=IDS)
def test_written_defaults_are_the_code_s_unless_chosen(
    path: Path, service: str, renamed: dict[str, str]
) -> None:
    fields = settings_env(SERVICES[service])
    for name, value in environment(path, service).items():
        match = re.fullmatch(rf"\$\{{{name}:-(.+)\}}", value)
        if not match:
            continue
        chosen = CHOSEN.get(name)
        if chosen is not None:
            assert match.group(1) == (chosen if isinstance(chosen, str) else chosen[path]), name
            continue
        cls, field = fields[name]
        written = getattr(cls(**{field: match.group(1)}), field)
        assert written == cls.model_fields[field].default, f"{path.name}: {name}"


def docker_stack_can_interpolate(text: str) -> bool:
    """Whether docker stack deploy (docker/cli's compose loader, not Compose v2) reads every
    ``$`` in ``text``: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, no nesting."""
    for match in re.finditer(r"\$(?:\$|\{([^}]*)\}|[_A-Za-z])", text):
        braced = match.group(1)
        if braced is not None and not re.fullmatch(r"[_A-Za-z]\w*(?::?[-?][^$]*)?", braced):
            return False
    return "$" not in re.sub(r"\$(?:\$|\{[^}]*\}|[_A-Za-z]\w*)", "", text)


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in strings(key) + strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def test_the_stack_uses_only_what_docker_stack_deploy_interpolates() -> None:
    assert docker_stack_can_interpolate("${A:-1} ${B:-} $$C ${D}")
    assert not docker_stack_can_interpolate("${A:+/data/${A}}")  # compose.yaml's DATASET_FILE
    assert not docker_stack_can_interpolate("${A:-${B}}")
    bad = [
        s for s in strings(yaml.safe_load(STACK.read_text())) if not docker_stack_can_interpolate(s)
    ]
    assert bad == []


# ---- the environment is read by the settings classes only --------------------------------

ENV_READ = re.compile(r"os\.environ(?!\.setdefault)|getenv\(")
# Reads that are not settings, and why.
OTHER_READS = {
    "shared/settings.py": "the settings base class's check of former variable names",
    "trainer/config.py": "an error message says whether a bad value came from the environment",
    "trainer/compute.py": "torchrun's WORLD_SIZE, RANK, LOCAL_RANK: the launcher's, not ours",
    "trainer/publish.py": "GIT_COMMIT: the image's build provenance, recorded in the manifest",
    "tagger/quickstart.py": "hands its whole environment on to the trainer and the API it starts",
}


def product_modules() -> list[Path]:
    return sorted(
        p for pkg in ("shared", "api", "trainer", "tagger") for p in (REPO / pkg).rglob("*.py")
    )


def test_only_the_settings_classes_read_the_environment() -> None:
    readers = {
        str(path.relative_to(REPO))
        for path in product_modules()
        if ENV_READ.search(path.read_text(encoding="utf-8"))
    }
    assert readers <= set(OTHER_READS)


def test_the_store_default_is_written_once() -> None:
    found = [
        str(p.relative_to(REPO))
        for p in product_modules()
        for _ in re.finditer(r"[\"']data/artefacts[\"']", p.read_text(encoding="utf-8"))
    ]
    assert found == ["shared/settings.py"]


@pytest.mark.parametrize("cls", [ApiSettings, TrainerSettings, TrainConfig])
def test_every_setting_has_a_one_line_description(cls: type[BaseSettings]) -> None:
    """The settings reference is generated from these."""
    for name, field in cls.model_fields.items():
        assert field.description and "\n" not in field.description, name


# ---- one variable names the store ----------------------------------------------------------

FORMER = ("API_ARTEFACTS_DIR", "TRAINER_ARTEFACTS_DIR")


@pytest.fixture
def clean_store_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (STORE_ENV, *FORMER):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_one_variable_names_the_store_of_both_services(clean_store_env: pytest.MonkeyPatch) -> None:
    assert ApiSettings().artefacts_dir == TrainerSettings().artefacts_dir == Path("data/artefacts")
    clean_store_env.setenv(STORE_ENV, "/srv/store")
    assert ApiSettings().artefacts_dir == TrainerSettings().artefacts_dir == Path("/srv/store")
    assert ApiSettings.deprecations() == TrainerSettings.deprecations() == []


def test_former_names_still_work_with_a_warning(clean_store_env: pytest.MonkeyPatch) -> None:
    clean_store_env.setenv("API_ARTEFACTS_DIR", "/a")
    clean_store_env.setenv("TRAINER_ARTEFACTS_DIR", "/t")
    assert ApiSettings().artefacts_dir == Path("/a")
    assert TrainerSettings().artefacts_dir == Path("/t")
    assert ApiSettings.deprecations() == [
        f"API_ARTEFACTS_DIR is deprecated: set {STORE_ENV} instead"
    ]
    # The current name wins where both agree; where they disagree, nothing is guessed.
    clean_store_env.setenv(STORE_ENV, "/a")
    assert ApiSettings().artefacts_dir == Path("/a")
    with pytest.raises(SettingsError, match=f"TRAINER_ARTEFACTS_DIR=/t and {STORE_ENV}=/a"):
        load(TrainerSettings)
    # A command-line flag wins over both.
    assert load(TrainerSettings, artefacts_dir="/flag").artefacts_dir == Path("/flag")


def test_settings_errors_name_the_variable(clean_store_env: pytest.MonkeyPatch) -> None:
    clean_store_env.setenv("API_PORT", "http")
    clean_store_env.setenv("API_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError) as info:
        load(ApiSettings)
    assert [line.split(":")[0] for line in info.value.lines] == ["API_PORT", "API_LOG_FORMAT"]


def test_the_commands_take_the_store_from_the_settings(
    clean_store_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.predict import main as predict
    from trainer.versions import main as versions

    clean_store_env.setenv(STORE_ENV, str(tmp_path))
    assert versions(["list"]) == 0
    assert f"no versions in {tmp_path}" in capsys.readouterr().out
    assert predict(["a title"]) == 2
    assert f"no model published in {tmp_path}" in capsys.readouterr().err
    other = tmp_path / "other"
    assert predict(["--artefacts-dir", str(other), "a title"]) == 2  # the flag wins
    assert f"no model published in {other}" in capsys.readouterr().err
    clean_store_env.setenv("API_ARTEFACTS_DIR", str(other))
    assert predict(["a title"]) == 2
    assert "error: API_ARTEFACTS_DIR=" in capsys.readouterr().err


def test_the_server_and_its_healthcheck_read_the_api_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import api.healthcheck
    from api.__main__ import main as serve

    monkeypatch.setenv("API_MAX_BATCH_SIZE", "0")
    assert serve([]) == 2
    assert "error: API_MAX_BATCH_SIZE: Input should be greater than or equal to 1" in (
        capsys.readouterr().err
    )
    monkeypatch.delenv("API_MAX_BATCH_SIZE")
    urls: list[str] = []
    monkeypatch.setattr(api.healthcheck, "check", lambda url, timeout: (urls.append(url), "ok"))
    monkeypatch.setenv("API_PORT", "8123")
    api.healthcheck.main([])
    api.healthcheck.main(["--url", "http://h:1"])
    assert urls == ["http://127.0.0.1:8123", "http://h:1"]
