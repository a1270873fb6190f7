"""The rows a run learns from and is judged on: which file, the held-out split, the tag list.

The trainer and the baseline both call :func:`prepare_split`, so both see exactly the same rows.
With feedback (:mod:`trainer.feedback_data`) the base file is not split: it trains, with the
older feedback rows, and the newest feedback rows validate.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.data import Dataset, DatasetError, read_dataset
from trainer.config import TrainConfig
from trainer.feedback_data import FeedbackRows, merge_base

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
    if feedback is not None:
        if valid_path:
            log.info("%s is not used: the newest feedback rows validate", valid_path)
        train_set, valid_set = merge_base(full, feedback, config, rng)
    else:
        given_valid = read_dataset(valid_path, config.first_tag_only) if valid_path else None
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
        feedback.provenance if feedback else None,
    )
