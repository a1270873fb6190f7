"""The `tagger` command and the trainer's choice of dataset when none is given."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import yaml

from shared.data import read_dataset
from shared.store import ArtefactError, ArtefactStore
from tests.conftest import REPO, SAMPLE_DATA, publish, run_command
from trainer.split import PUBLIC_DATASET, SAMPLE_DATASET, default_dataset

TAGGER = Path(sys.executable).parent / "tagger"  # installed by `make setup` (pip install -e .)


def tagger(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None):
    return run_command([str(TAGGER), *args], cwd=cwd, env=env)


def test_the_sample_is_real_data_in_the_trainers_format() -> None:
    assert SAMPLE_DATASET == SAMPLE_DATA / "train.tsv"
    train, valid = read_dataset(SAMPLE_DATA / "train.tsv"), read_dataset(SAMPLE_DATA / "valid.tsv")
    assert (len(train), len(valid)) == (21_000, 3_000)
    assert not train.skipped and not valid.skipped
    assert len({t for row in train.tags for t in row}) == 100
    assert "CC BY-SA" in (SAMPLE_DATA / "README.md").read_text()


def test_default_dataset_is_the_public_set_when_there_else_the_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="trainer.split"):
        assert default_dataset() == SAMPLE_DATASET
    assert "embedded sample" in caplog.text

    (tmp_path / PUBLIC_DATASET).parent.mkdir(parents=True)
    (tmp_path / PUBLIC_DATASET).write_text("title\ttags\nx\t['a']\n")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainer.split"):
        assert default_dataset() == PUBLIC_DATASET
    assert "the public set" in caplog.text


def test_tagger_lists_its_commands_and_refuses_unknown_ones() -> None:
    assert TAGGER.is_file(), "the tagger command is not installed: run make setup"
    listing = tagger("--help")
    assert listing.returncode == 0
    for command in ("train", "evaluate", "versions", "feedback", "report", "serve", "predict"):
        assert f"  {command}" in listing.stdout
    unknown = tagger("fly")
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr
    # Each subcommand is its module's own command line, options and all.
    assert "--artefacts-dir" in tagger("train", "--help").stdout
    assert "--port" in tagger("serve", "--help").stdout


def test_tagger_train_without_a_dataset_trains_on_the_sample(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """From a folder with no data/raw/, as on a fresh clone: the sample is used and logged,
    and the other subcommands work on what it published."""
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_model_dir),
                "freeze_layers": 0,
                "epochs": 1,
                "max_train_examples": 64,
                "max_valid_examples": 32,
                "baseline": False,
            }
        )
    )
    art = tmp_path / "art"
    trained = tagger("train", "--config", str(config), "--artefacts-dir", str(art), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert f"embedded sample {SAMPLE_DATASET}" in trained.stderr
    version = ArtefactStore(art).latest()
    assert version and f"published {version}" in trained.stdout
    resolved = yaml.safe_load((art / version / "train_config.yaml").read_text())
    assert resolved["dataset"] == str(SAMPLE_DATASET)

    listing = tagger("versions", "--artefacts-dir", str(art), "list")
    assert listing.returncode == 0 and f"* {version}" in listing.stdout
    predicted = tagger("predict", "--artefacts-dir", str(art), "--json", "How to sort a list?")
    assert predicted.returncode == 0, predicted.stderr
    assert f'"model_version": "{version}"' in predicted.stdout
    scored = tagger(
        "evaluate", "--artefact", str(art / version), "--dataset", str(SAMPLE_DATA / "valid.tsv")
    )
    assert scored.returncode == 0 and '"n": 3000' in scored.stdout
    bad = tagger("versions", "--artefacts-dir", str(art), "use", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_tagger_versions_rolls_a_candidate_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.versions import main as versions_main

    store = ArtefactStore(tmp_path)
    stable, new = publish(store, "stable weights"), publish(store, "new weights")
    store.set_latest(stable)
    where = ["--artefacts-dir", str(tmp_path)]

    def versions(*args: str) -> str:
        assert versions_main([*where, *args]) == 0
        return capsys.readouterr().out

    shadowed = tagger("versions", *where, "shadow", new, "--sample", "0.3")
    assert shadowed.returncode == 0, shadowed.stderr
    assert f"CANDIDATE -> {new} (shadow, sample 0.3, since" in shadowed.stdout
    assert f"beside {stable})" in shadowed.stdout
    assert f"~ {new}" in versions("list") and f"* {stable}" in versions("list")
    assert "shadow" in versions("list").split(new)[1].splitlines()[0]  # its status column
    out = versions("canary", new, "--fraction", "0.1")
    assert f"{new} (canary, sample 0.2, fraction 0.1" in out
    status = versions("status")
    assert f"LATEST    {stable} (promoted)" in status
    assert f"CANDIDATE {new} (canary, sample 0.2, fraction 0.1" in status
    assert "reason: set by hand (versions canary)" in status
    with pytest.raises(ArtefactError, match=f"the candidate is {new} \\(canary\\), not {stable}"):
        versions_main([*where, "promote", stable])
    assert f"LATEST -> {new} (was {stable}); no candidate" in versions("promote", new)
    assert "CANDIDATE none" in versions("status")
    assert store.promotion(new).history[-1]["status"] == "canary"

    versions("shadow", stable)  # the former one, to compare or to roll back to
    assert f"aborted {stable}; LATEST unchanged" in versions("abort", "--reason", "looked worse")
    assert store.promotion(stable).reason == "looked worse" and store.latest() == new
    nothing = tagger("versions", *where, "abort")
    assert nothing.returncode == 2
    assert nothing.stderr == "error: there is no candidate to abort\n"


def test_versions_compare_and_decide_parse_their_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.versions import parse_args

    database = f"sqlite:///{tmp_path / 'log.db'}"
    monkeypatch.setenv("TRAINER_DATABASE_URL", database)
    compare = parse_args(["compare", "--window-s", "600"])
    assert (compare.command, compare.window_s, compare.database_url) == ("compare", 600, database)
    decide = parse_args(["decide", "--min-requests", "50", "--max-quality-drop", "0.02"])
    assert (decide.min_requests, decide.min_agreement, decide.min_feedback) == (50, 0.8, 30)
    assert decide.max_quality_drop == 0.02
    with pytest.raises(SystemExit):
        parse_args(["compare", "--window-s", "0"])
