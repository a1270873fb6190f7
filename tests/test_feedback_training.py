"""``tagger train --with-feedback``: which feedback rows train and which validate (held-out base
rows, then the newest feedback slice, deduplicated by title), the provenance a version records,
a second run reading only newer rows, and the refusal with too few rows; real SQLite files, the
tiny model."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from shared.data import DatasetError, read_dataset
from shared.inference_log import (
    PredictionLog,
    PredictionRow,
    connect,
    import_feedback,
    record_feedback,
    title_hash,
    upgrade,
)
from shared.store import ArtefactStore, read_manifest
from tests.conftest import run_cli, tiny_config, trainer_args
from trainer.config import TrainConfig
from trainer.feedback_data import FeedbackSource, load_feedback
from trainer.split import prepare_split
from trainer.train import train

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'inference.db'}"


def add_feedback(url: str, rows: list[tuple[str, list[str]]], start: datetime) -> None:
    """Import ``rows`` one minute apart from ``start``."""
    engine = connect(url)
    upgrade(engine)
    for i, (title, tags) in enumerate(rows):
        import_feedback(engine, [title], [tags], now=start + timedelta(minutes=i))
    engine.dispose()


def zorblax_rows(n: int, first: int = 0) -> list[tuple[str, list[str]]]:
    return [(f"Zorblax widget {i} will not render", ["zorblax"]) for i in range(first, first + n)]


def add_hash_only_feedback(url: str, now: datetime) -> None:
    """A prediction logged with its title as a hash only, and a report for it."""
    engine = connect(url)
    writer = PredictionLog(engine, flush_s=0.05)
    writer.start()
    writer.add(
        [
            PredictionRow(
                request_id="hashed",
                position=0,
                created_at=now,
                version="v",
                title=None,
                title_hash=title_hash("secret title"),
                tokens=5,
                unknown_tokens=0,
                top_tags=[("python", 0.9)],
                predicted=["python"],
            )
        ]
    )
    assert writer.flush()
    writer.close()
    record_feedback(engine, "hashed", 0, ["python"], now=now)


def test_feedback_split_is_deduplicated_and_validates_on_the_newest_slice(
    tmp_path: Path, fixture_data: dict[str, Path]
) -> None:
    url = sqlite_url(tmp_path)
    base_title = read_dataset(fixture_data["train"]).titles[0]
    add_feedback(url, zorblax_rows(20), T0)  # minutes 0..19
    add_feedback(url, [(base_title, ["zorblax"])], T0 + timedelta(minutes=21))
    add_hash_only_feedback(url, T0 + timedelta(minutes=22))
    # A newer report of row 5's title wins, and moves it to its own time.
    add_feedback(
        url,
        [("Zorblax  widget 5 will not render", ["zorblax", "python"])],
        T0 + timedelta(minutes=25),
    )

    config = TrainConfig(valid_fraction=0.2, max_train_examples=50)
    feedback = load_feedback(FeedbackSource(url), ArtefactStore(tmp_path / "art"), config)
    split = prepare_split(config, fixture_data["train"], None, feedback)

    # 21 titles in time order; the newest round(21 * 0.2) = 4 validate, after the base rows
    # held out (valid_fraction of the base rows feedback did not relabel).
    base = read_dataset(fixture_data["train"])
    held_out = round((len(base) - 1) * 0.2)
    assert split.fresh_rows == 4 and len(split.valid) == held_out + 4
    assert not set(split.valid.titles[:held_out]) & set(split.train.titles)
    assert split.valid.titles[-4:] == [
        "Zorblax widget 18 will not render",
        "Zorblax widget 19 will not render",
        base_title,
        "Zorblax widget 5 will not render",
    ]
    assert split.valid.tags[-4:] == [["zorblax"], ["zorblax"], ["zorblax"], ["zorblax", "python"]]
    # Training: 50 base rows (the cap applies to them only, the relabelled one left out) and
    # the 17 older feedback rows.
    feedback_titles = [t for t in split.train.titles if t.startswith("Zorblax")]
    assert len(feedback_titles) == 17 and len(split.train) == 67
    assert base_title not in split.train.titles
    assert "zorblax" in split.labels
    assert split.feedback == {
        "rows": 21,
        "train_rows": 17,
        "valid_rows": 4,
        "from": split.feedback["from"],
        "until": split.feedback["until"],
        "left_out_hash_only": 1,
        "base_valid_rows": held_out,
    }
    assert datetime.fromisoformat(split.feedback["from"]) == T0
    assert datetime.fromisoformat(split.feedback["until"]) == T0 + timedelta(minutes=25)


def test_train_with_feedback_learns_the_tag_and_a_second_run_reads_only_newer_rows(
    store_copy: ArtefactStore, tiny_model_dir: Path, fixture_data: dict[str, Path], tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path)
    add_feedback(url, zorblax_rows(30), T0)
    config = tiny_config(tiny_model_dir, epochs=1, baseline=False, promotion_tolerance=1.0)
    source = FeedbackSource(url)
    first = train(config, fixture_data["train"], None, store_copy.root, feedback=source)
    assert first is not None and first.promoted
    labels = json.loads((first.path / "config.json").read_text())["id2label"].values()
    assert "zorblax" in labels
    recorded = read_manifest(first.path)["feedback"]
    assert (recorded["rows"], recorded["train_rows"], recorded["valid_rows"]) == (30, 27, 3)
    assert datetime.fromisoformat(recorded["from"]) == T0
    assert datetime.fromisoformat(recorded["until"]) == T0 + timedelta(minutes=29)
    metrics = json.loads((first.path / "metrics.json").read_text())
    assert metrics["n_valid"] == 3 + recorded["base_valid_rows"] and metrics["feedback"] == recorded
    assert metrics["valid_fresh_slice"]["n"] == 3
    assert "the newest 3 feedback rows" in metrics["promotion"]["reason"]
    assert metrics["promotion"]["reason"].count("micro-F1") == 1

    later = T0 + timedelta(hours=2)
    add_feedback(url, zorblax_rows(12, first=100), later)
    second = train(config, fixture_data["train"], None, store_copy.root, feedback=source)
    assert second is not None
    recorded = read_manifest(second.path)["feedback"]
    assert recorded["rows"] == 12 and datetime.fromisoformat(recorded["from"]) == later

    # Nothing newer than what the served model learned from: refused before any training.
    with pytest.raises(DatasetError, match="0 labelled feedback row"):
        train(config, fixture_data["train"], None, store_copy.root, feedback=source)


def test_with_feedback_and_too_few_rows_exits_2_before_training(
    tmp_path: Path, tiny_model_dir: Path, fixture_data: dict[str, Path]
) -> None:
    url = sqlite_url(tmp_path)
    add_feedback(url, zorblax_rows(9), T0)
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"base_model": str(tiny_model_dir), "freeze_layers": 0, "epochs": 1})
    )
    artefacts = tmp_path / "art"
    result = run_cli(
        *trainer_args(config, fixture_data, artefacts), "--with-feedback", "--database-url", url
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "9 labelled feedback row(s)" in errors[0], result.stderr
    assert "train without --with-feedback" in errors[0]
    assert "epoch" not in result.stderr
    assert not artefacts.exists() or not any(artefacts.iterdir())
