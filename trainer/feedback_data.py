"""The feedback rows a ``--with-feedback`` run learns from and is judged on.

The labelled rows of the inference log newer than the served model's data (the ``until`` of
the ``feedback`` provenance in the manifest of the version ``LATEST`` names; every labelled row
when it has none), deduplicated by normalised title (the newest report wins), split in time
order: the newest slice validates, as production data arrives; the older rows train. The base
data set's rows whose titles feedback relabelled are replaced by the feedback.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.data import Dataset, DatasetError
from shared.inference_log import LabelledRow, connect, labelled_rows, upgrade
from shared.store import ArtefactStore, read_manifest
from shared.text import normalize_text
from trainer.config import TrainConfig

log = logging.getLogger(__name__)

FEEDBACK_KEY = "feedback"  # the manifest's provenance key written by a --with-feedback run
MIN_FEEDBACK_ROWS = 10
FEEDBACK_PATH = Path("feedback")  # what the feedback datasets are named in messages


@dataclass(frozen=True)
class FeedbackSource:
    """Where the labelled rows are: the inference log's database."""

    database_url: str
    password_file: Path | None = None


@dataclass(frozen=True)
class FeedbackRows:
    """The older feedback rows (training), the newest slice (validation), the provenance."""

    train: Dataset
    valid: Dataset
    provenance: dict[str, Any]


def served_until(store: ArtefactStore) -> tuple[str | None, dt.datetime | None]:
    """The version ``LATEST`` names and the time of the newest feedback row it learned from
    (None: nothing served, or a model trained without feedback)."""
    version = store.latest()
    if version is None:
        return None, None
    recorded = read_manifest(store.version_path(version)).get(FEEDBACK_KEY)
    if not isinstance(recorded, dict) or not recorded.get("until"):
        return version, None
    return version, dt.datetime.fromisoformat(str(recorded["until"]))


def load_feedback(
    source: FeedbackSource, store: ArtefactStore, config: TrainConfig
) -> FeedbackRows:
    """Read, deduplicate and split the labelled rows newer than the served model's data;
    DatasetError (one line) when fewer than :data:`MIN_FEEDBACK_ROWS` are left."""
    served, since = served_until(store)
    engine = connect(source.database_url, source.password_file)
    where = engine.url.render_as_string(hide_password=True)
    try:
        upgrade(engine)
        rows, hash_only = labelled_rows(engine, since)
    finally:
        engine.dispose()
    after = f"newer than {since.isoformat()} (the data of {served})" if since else "in all"
    kept = deduplicate(rows, config.first_tag_only)
    if len(kept) < MIN_FEEDBACK_ROWS:
        raise DatasetError(
            f"{len(kept)} labelled feedback row(s) {after} in {where}; --with-feedback needs at "
            f"least {MIN_FEEDBACK_ROWS}: train without --with-feedback, or collect more feedback"
        )
    n_valid = max(1, round(len(kept) * config.valid_fraction))
    if config.max_valid_examples:
        n_valid = min(n_valid, config.max_valid_examples)
    older, newest = kept[:-n_valid], kept[-n_valid:]
    provenance = {
        "rows": len(kept),
        "train_rows": len(older),
        "valid_rows": len(newest),
        "from": kept[0].created_at.isoformat(),
        "until": max(row.created_at for row in rows).isoformat(),
        "left_out_hash_only": hash_only,
    }
    log.info(
        "feedback: %d labelled rows %s (%d after deduplication; %d left out: title kept as a "
        "hash only); validating on the newest %d",
        len(rows),
        after,
        len(kept),
        hash_only,
        len(newest),
    )
    return FeedbackRows(_dataset(older), _dataset(newest), provenance)


def deduplicate(rows: list[LabelledRow], first_tag_only: bool = False) -> list[LabelledRow]:
    """One row per normalised title, the newest report's, in time order (oldest first); rows
    with a blank title or no tag are left out."""
    newest: dict[str, LabelledRow] = {}
    for row in sorted(rows, key=lambda r: r.created_at):
        title = normalize_text(row.title)
        tags = list(dict.fromkeys(t.strip() for t in row.tags if t.strip()))
        if first_tag_only:
            tags = tags[:1]
        newest.pop(title, None)
        if title and tags:
            newest[title] = LabelledRow(title, tags, row.created_at, row.source)
    return sorted(newest.values(), key=lambda r: r.created_at)


def merge_base(
    base: Dataset, feedback: FeedbackRows, config: TrainConfig, rng: np.random.Generator
) -> tuple[Dataset, Dataset]:
    """Training rows: the base rows whose titles feedback did not relabel (capped at
    ``max_train_examples``) and every older feedback row; validation: the newest slice."""
    relabelled = set(feedback.train.titles) | set(feedback.valid.titles)
    keep = [i for i, title in enumerate(base.titles) if title not in relabelled]
    if len(keep) < len(base):
        log.info("feedback relabels %d question(s) of %s", len(base) - len(keep), base.path)
    if config.max_train_examples and len(keep) > config.max_train_examples:
        keep = sorted(rng.permutation(keep)[: config.max_train_examples].tolist())
    rows = base.subset(keep)
    train = Dataset(
        path=base.path,
        titles=rows.titles + feedback.train.titles,
        tags=rows.tags + feedback.train.tags,
    )
    return train, feedback.valid


def _dataset(rows: list[LabelledRow]) -> Dataset:
    return Dataset(
        path=FEEDBACK_PATH, titles=[r.title for r in rows], tags=[list(r.tags) for r in rows]
    )
