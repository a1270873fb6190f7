"""What the services' settings classes share: the artefact store's one variable and its default,
the inference log's database (its URL and password file), and the environment variables a
settings field is read from (for Compose, docs and messages).

Each service reads the environment through its own pydantic-settings class only
(``api.settings.ApiSettings``; ``trainer.config.TrainerSettings`` and ``TrainConfig``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings

# The one variable that names the artefact store, for every command of both services.
STORE_ENV = "TAGGER_ARTEFACTS_DIR"
DEFAULT_ARTEFACTS_DIR = Path("data/artefacts")
# The inference log: a SQLite file next to the artefacts, relative to the working directory.
DEFAULT_DATABASE_URL = "sqlite:///data/inference.db"

S = TypeVar("S", bound=BaseSettings)


def store_field(deprecated_env: str) -> Any:
    """The ``artefacts_dir`` field: ``TAGGER_ARTEFACTS_DIR``, else the service's former name."""
    return Field(
        DEFAULT_ARTEFACTS_DIR,
        validation_alias=AliasChoices(STORE_ENV, deprecated_env),
        description="the artefact store: the published versions and LATEST "
        f"({deprecated_env}, its former name, is still read when {STORE_ENV} is not set)",
    )


def database_url_field() -> Any:
    """The ``database_url`` field: the inference log's database, as a SQLAlchemy URL."""
    return Field(
        DEFAULT_DATABASE_URL,
        min_length=1,
        description="the inference log's database, a SQLAlchemy URL: a SQLite file "
        f"(default {DEFAULT_DATABASE_URL}, relative to the working directory) or PostgreSQL "
        "(postgresql+psycopg://user@host:5432/name); put no password in it: see "
        "database_password_file",
    )


def database_password_file_field() -> Any:
    """The ``database_password_file`` field: a file holding the database's password."""
    return Field(
        None,
        description="a file whose content (trailing newline stripped) is the database "
        "password, set on database_url (a container secret; none: the URL's own, if any)",
    )


def env_names(settings: type[BaseSettings], field: str) -> tuple[str, ...]:
    """The environment variables ``field`` of ``settings`` is read from, the current one first."""
    alias = settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    if isinstance(alias, str):
        return (alias,)
    return (f"{settings.model_config.get('env_prefix', '')}{field}".upper(),)


def env_name(settings: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``settings``."""
    return env_names(settings, field)[0]


def _environ(name: str) -> str:
    return os.environ.get(name, "")


class ServiceSettings(BaseSettings):
    """Base of the services' settings: a former variable name still works, with a warning."""

    @model_validator(mode="before")
    @classmethod
    def _former_names_agree(cls, data: Any) -> Any:
        # A field given by name (a command-line flag) wins; otherwise the current variable
        # wins over a former one, so the two naming different values is a mistake to report
        # rather than a silent choice (an image sets the current one, a deployment the old).
        for field in cls.model_fields:
            if isinstance(data, dict) and field in data:
                continue
            current, *former = env_names(cls, field)
            for name in former:
                if _environ(current) and _environ(name) and _environ(name) != _environ(current):
                    raise ValueError(
                        f"{name}={_environ(name)} and {current}={_environ(current)} disagree; "
                        f"{name} is a former name of {current}: set {current} only"
                    )
        return data

    @classmethod
    def deprecations(cls) -> list[str]:
        """One line for each former variable name set in the environment."""
        return [
            f"{name} is deprecated: set {current} instead"
            for field in cls.model_fields
            for current, *former in [env_names(cls, field)]
            for name in former
            if _environ(name)
        ]


class SettingsError(ValueError):
    """Settings that do not validate; ``lines`` has one line per problem, naming the variable."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def load(settings: type[S], **overrides: Any) -> S:
    """``settings`` from the environment, ``overrides`` (command-line flags) winning."""
    try:
        return settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(settings, exc)) from exc


def _describe(settings: type[BaseSettings], exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        # A field's loc is its name, or the variable itself when read through an alias;
        # a check of several variables has none (its message names them).
        name = env_name(settings, field) if field in settings.model_fields else field
        # A check of ours raised ValueError: its own words, without pydantic's "Value error, ".
        msg = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
        lines.append(f"{name}: {msg} (got {err['input']!r})" if name else msg)
    return lines
