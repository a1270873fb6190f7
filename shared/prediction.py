"""From a score matrix to answers: the top-k tags and the decided ones, for every runtime.

Plain numpy (no torch), so the torch predictor and the ONNX Runtime predictor share one copy
of the formatting and of the decision rule (:func:`shared.decision.decide`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from shared.decision import decide


@dataclass(frozen=True)
class TagScore:
    tag: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """Tags of one text: the ``top_k`` by score, and those the model decides on; ``tokens``
    is how many tokens the model read (special tokens included, after truncation)."""

    tags: list[TagScore]
    predicted: list[str]
    tokens: int = 0


class TagPredictor(Protocol):
    """What the API and the tools need of a predictor, whatever runtime computes the scores."""

    labels: list[str]

    @property
    def threshold(self) -> float: ...

    def scores(self, texts: Sequence[str]) -> np.ndarray: ...

    def predict(self, texts: Sequence[str], top_k: int = 5) -> list[Prediction]: ...


def to_predictions(
    scores: np.ndarray,
    labels: Sequence[str],
    threshold: float,
    top_k: int,
    tokens: Sequence[int] | None = None,
) -> list[Prediction]:
    """Top ``top_k`` tags with scores (rounded to 6 places), and the decided tags, per row;
    ``tokens``: how many tokens each row's text was (for the input-length metric)."""
    chosen = decide(scores, threshold)
    top_k = max(1, min(top_k, len(labels)))
    counts = tokens if tokens is not None else [0] * len(scores)
    results = []
    for row, picked, count in zip(scores, chosen, counts, strict=True):
        order = np.argsort(-row, kind="stable")
        top, decided = order[:top_k], order[picked[order]]
        results.append(
            Prediction(
                tags=[TagScore(labels[i], round(float(row[i]), 6)) for i in top],
                predicted=[labels[i] for i in decided],
                tokens=count,
            )
        )
    return results


def length_grouped(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length (shortest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
