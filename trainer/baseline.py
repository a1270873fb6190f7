"""The classic baseline: TF-IDF features + one-vs-rest logistic regression.

Each training run fits it on the same split as the transformer and records its figures
beside the model's (``metrics.json``, the model card). ``python -m trainer.baseline`` (``make
baseline``) fits it alone and prints the same metrics JSON as ``trainer.evaluate``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from shared.data import Dataset
from trainer.metrics import Truth, tagging_metrics, tune_threshold


@dataclass
class Baseline:
    """A fitted TF-IDF + one-vs-rest logistic regression over ``labels``."""

    vectorizer: TfidfVectorizer
    classifier: OneVsRestClassifier
    labels: list[str]

    @classmethod
    def fit(cls, train: Dataset, labels: list[str]) -> Baseline:
        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2),
            min_df=2,
            max_df=0.9,
            sublinear_tf=True,
            token_pattern=r"(?u)[\w#+.]+",  # keep c#, c++, .net as words
        )
        features = vectorizer.fit_transform(train.titles)
        features.sort_indices()
        targets = Truth.build(train.tags, labels).known.astype(np.int8)
        classifier = OneVsRestClassifier(
            LogisticRegression(C=10, max_iter=1000, solver="liblinear")
        )
        classifier.fit(features, targets)
        return cls(vectorizer, classifier, labels)

    def scores(self, titles: list[str]) -> np.ndarray:
        """Per-tag probabilities, columns in ``labels`` order."""
        return np.asarray(self.classifier.predict_proba(self.vectorizer.transform(titles)))


def baseline_metrics(
    train: Dataset, valid: Dataset, labels: list[str], per_tag: bool = False
) -> dict[str, Any]:
    """Fit on ``train``, tune the threshold on ``valid`` and score ``valid`` (as the trainer
    does for its own model, so the figures compare)."""
    started = time.monotonic()
    model = Baseline.fit(train, labels)
    scores = model.scores(valid.titles)
    threshold = tune_threshold(scores, Truth.build(valid.tags, labels))
    metrics = tagging_metrics(scores, threshold, valid.tags, labels, per_tag=per_tag)
    metrics["fit_seconds"] = round(time.monotonic() - started, 1)
    return metrics


def main(argv: list[str] | None = None) -> int:
    from trainer.cli import setup_logging
    from trainer.config import load_config
    from trainer.split import default_dataset, prepare_split

    parser = argparse.ArgumentParser(prog="python -m trainer.baseline", description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("conf/train.yaml"))
    parser.add_argument(
        "--dataset",
        type=Path,
        help="training file (default: data/raw/train.tsv if it is there, else the embedded sample)",
    )
    parser.add_argument("--valid", type=Path, help="validation file (default: carved as trainer)")
    parser.add_argument(
        "--eval", type=Path, help="also score this file with the threshold tuned on validation"
    )
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    config = load_config(args.config)
    split = prepare_split(config, args.dataset or default_dataset(), args.valid)
    model = Baseline.fit(split.train, split.labels)
    threshold = tune_threshold(
        model.scores(split.valid.titles), Truth.build(split.valid.tags, split.labels)
    )
    target = split.valid
    if args.eval:
        from shared.data import read_dataset

        target = read_dataset(args.eval, first_tag_only=config.first_tag_only)
    metrics = tagging_metrics(model.scores(target.titles), threshold, target.tags, split.labels)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    from trainer.cli import run_main

    run_main(main)
