"""The rows a run learns from and is judged on: which file, the held-out split, the tag list.

The trainer and the baseline both call :func:`prepare_split`, so both see exactly the same rows.
With feedback (:mod:`trainer.feedback_data`) the older feedback rows train with the base rows, and
the newest feedback rows validate after the base rows held out (:func:`merge_base`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.data import Dataset, DatasetError, read_dataset
from shared.text import normalize_text
from trainer.config import TrainConfig
from trainer.feedback_data import FEEDBACK_PATH, FeedbackRows

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# The full public set, where `make data` puts it (relative to the working directory).
PUBLIC_DATASET = Path("data/raw/train.tsv")
# Real Stack Overflow questions shipped with the code (and in the trainer image).
SAMPLE_DATASET = REPO_ROOT / "data" / "sample" / "train.tsv"


def default_dataset() -> Path:
    """The training file when none is given: the public set if it has been downloaded, else
    the embedded sample. Logs which, so a run never trains on a surprise."""
    if PUBLIC_DATASET.is_file():
        log.info("dataset: %s (the public set; give --dataset to use another file)", PUBLIC_DATASET)
        return PUBLIC_DATASET
    if SAMPLE_DATASET.is_file():
        log.info(
            "dataset: the embedded sample %s (21,000 real questions; `make data` downloads the "
            "full public set to %s, which is used instead once it is there)",
            SAMPLE_DATASET,
            PUBLIC_DATASET,
        )
        return SAMPLE_DATASET
    raise DatasetError(
        f"no dataset given, and neither {PUBLIC_DATASET} nor the embedded sample "
        f"{SAMPLE_DATASET} exists: pass --dataset FILE (or run make data)"
    )


@dataclass(frozen=True)
class Split:
    """Training and validation rows, the tags the model learns, and rows the reader skipped."""

    train: Dataset
    valid: Dataset
    labels: list[str]
    skipped_rows: dict[str, int]
    feedback: dict[str, Any] | None = None  # the feedback provenance, when feedback was used
    fresh_rows: int = 0  # the last rows of ``valid``: the newest feedback slice


def build_labels(tags: list[list[str]], min_count: int) -> list[str]:
    """Tags seen at least ``min_count`` times, most frequent first (ties by name)."""
    counts = Counter(t for row in tags for t in row)
    return [t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


def hold_out(
    train: Dataset, valid: Dataset | None, config: TrainConfig, rng: np.random.Generator
) -> tuple[Dataset, Dataset]:
    """Hold out ``valid_fraction`` of the training rows unless a validation file is given;
    then cap both sides at ``max_train_examples`` / ``max_valid_examples``."""
    if valid is None:
        order = rng.permutation(len(train)).tolist()
        n_valid = max(1, round(len(train) * config.valid_fraction))
        if len(train) - n_valid < 1:
            raise DatasetError(
                f"{train.path}: too few questions ({len(train)}) to hold out validation"
            )
        train, valid = train.subset(order[n_valid:]), train.subset(order[:n_valid])
    if config.max_train_examples and len(train) > config.max_train_examples:
        train = train.subset(rng.permutation(len(train))[: config.max_train_examples].tolist())
    if config.max_valid_examples and len(valid) > config.max_valid_examples:
        valid = valid.subset(rng.permutation(len(valid))[: config.max_valid_examples].tolist())
    return train, valid


def merge_base(
    base: Dataset,
    given_valid: Dataset | None,
    feedback: FeedbackRows,
    config: TrainConfig,
    rng: np.random.Generator,
) -> tuple[Dataset, Dataset]:
    """Training rows: the base rows whose titles feedback did not relabel, less a held-out
    share (``given_valid`` instead, when a validation file is given; both capped as without
    feedback), and every older feedback row. Validation: the held-out base rows, then the
    newest feedback slice, last (its length is ``len(feedback.valid)``)."""
    relabelled = {normalize_text(t) for t in feedback.train.titles + feedback.valid.titles}
    keep = [i for i, title in enumerate(base.titles) if normalize_text(title) not in relabelled]
    if len(keep) < len(base):
        log.info("feedback relabels %d question(s) of %s", len(base) - len(keep), base.path)
    base_train, base_valid = hold_out(base.subset(keep), given_valid, config, rng)
    train = Dataset(
        path=base.path,
        titles=base_train.titles + feedback.train.titles,
        tags=base_train.tags + feedback.train.tags,
    )
    valid = Dataset(
        path=FEEDBACK_PATH,
        titles=base_valid.titles + feedback.valid.titles,
        tags=base_valid.tags + feedback.valid.tags,
    )
    return train, valid


def prepare_split(
    config: TrainConfig,
    dataset_path: Path,
    valid_path: Path | None,
    feedback: FeedbackRows | None = None,
) -> Split:
    """Read the data, hold out validation (seeded; with ``feedback``, its newest rows instead),
    build the tag list from the training rows and drop training questions left with no kept
    tag."""
    rng = np.random.default_rng(config.seed)
    full = read_dataset(dataset_path, first_tag_only=config.first_tag_only)
    given_valid = read_dataset(valid_path, config.first_tag_only) if valid_path else None
    if feedback is not None:
        train_set, valid_set = merge_base(full, given_valid, feedback, config, rng)
    else:
        train_set, valid_set = hold_out(full, given_valid, config, rng)
    labels = build_labels(train_set.tags, config.min_samples_per_label)
    if not labels:
        raise DatasetError(
            f"{dataset_path}: no tag has min_samples_per_label={config.min_samples_per_label} "
            "training questions"
        )
    label_set = set(labels)
    keep = [i for i, row in enumerate(train_set.tags) if label_set & set(row)]
    if len(keep) < len(train_set):
        log.info("dropping %d training questions with only rare tags", len(train_set) - len(keep))
    return Split(
        train_set.subset(keep),
        valid_set,
        labels,
        dict(full.skipped),
        {**feedback.provenance, "base_valid_rows": len(valid_set) - len(feedback.valid)}
        if feedback
        else None,
        len(feedback.valid) if feedback else 0,
    )
