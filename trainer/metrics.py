"""Tagging metrics: micro/macro F1 at the decision threshold, precision@1, recall@k.

Truth is given as tag strings; a true tag the model does not know is a miss everywhere
(a false negative for F1, never hit by precision@1 or recall@k). Macro-F1 averages over
the tags that occur in the truth, unknown ones included (their F1 is 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.decision import decide

# The figures a run is summed up by: logged per epoch, in the manifest, the model card and
# `versions list`, in this order.
HEADLINE_METRICS = ("micro_f1", "macro_f1", "p_at_1", "recall_at_5")


@dataclass(frozen=True)
class Truth:
    """Known tags as a boolean matrix over the model's labels, plus unknown tags per row."""

    known: np.ndarray  # (n, n_labels) bool
    unknown: list[list[str]]

    @classmethod
    def build(cls, tags: Sequence[Sequence[str]], labels: Sequence[str]) -> Truth:
        index = {label: i for i, label in enumerate(labels)}
        known = np.zeros((len(tags), len(labels)), dtype=bool)
        unknown: list[list[str]] = []
        for row, row_tags in enumerate(tags):
            unknown.append([t for t in row_tags if t not in index])
            for tag in row_tags:
                if tag in index:
                    known[row, index[tag]] = True
        return cls(known, unknown)

    @property
    def n_unknown(self) -> int:
        return sum(len(u) for u in self.unknown)


def micro_f1(chosen: np.ndarray, truth: Truth) -> float:
    tp = int((chosen & truth.known).sum())
    fp = int((chosen & ~truth.known).sum())
    fn = int((~chosen & truth.known).sum()) + truth.n_unknown
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def tune_threshold(scores: np.ndarray, truth: Truth) -> float:
    """The score threshold (on a 0.01 grid) that maximises micro-F1 on these rows."""
    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
    # Ties go to the highest threshold: the same F1 with fewer tags shown.
    best = max(grid, key=lambda t: (micro_f1(decide(scores, float(t)), truth), t))
    return float(best)


def tagging_metrics(
    scores: np.ndarray,
    threshold: float,
    tags: Sequence[Sequence[str]],
    labels: Sequence[str],
    k: int = 5,
    per_tag: bool = False,
) -> dict[str, Any]:
    """micro_f1, macro_f1, p_at_1, recall_at_5 and n (plus per-tag figures if asked)."""
    truth = Truth.build(tags, labels)
    chosen = decide(scores, threshold)
    n = len(scores)
    rows = np.arange(n)

    top_k = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    in_top_k = np.zeros_like(truth.known)
    in_top_k[rows[:, None], top_k] = True
    tp = (chosen & truth.known).sum(axis=0)
    hits_at_k = (in_top_k & truth.known).sum(axis=0)
    fp = (chosen & ~truth.known).sum(axis=0)
    fn = (~chosen & truth.known).sum(axis=0)
    support = truth.known.sum(axis=0)
    per_label = {}
    for i, label in enumerate(labels):
        denom = 2 * tp[i] + fp[i] + fn[i]
        per_label[label] = {
            "precision": float(tp[i] / (tp[i] + fp[i])) if tp[i] + fp[i] else 0.0,
            "recall": float(tp[i] / support[i]) if support[i] else 0.0,
            "f1": float(2 * tp[i] / denom) if denom else 0.0,
            f"recall_at_{k}": float(hits_at_k[i] / support[i]) if support[i] else 0.0,
            "support": int(support[i]),
        }
    unknown_tags = sorted({t for row in truth.unknown for t in row})
    present = [per_label[label]["f1"] for label in labels if per_label[label]["support"]]
    present += [0.0] * len(unknown_tags)

    n_true = truth.known.sum(axis=1) + np.array([len(u) for u in truth.unknown])
    hits_k = (in_top_k & truth.known).sum(axis=1)
    result: dict[str, Any] = {
        "micro_f1": round(micro_f1(chosen, truth), 4),
        "macro_f1": round(float(np.mean(present)) if present else 0.0, 4),
        "p_at_1": round(float(truth.known[rows, scores.argmax(axis=1)].mean()) if n else 0.0, 4),
        f"recall_at_{k}": round(float(np.mean(hits_k / np.maximum(n_true, 1))) if n else 0.0, 4),
        "n": n,
        "threshold": threshold,
        "unknown_tags": len(unknown_tags),
    }
    if per_tag:
        result["per_tag"] = {
            label: {key: round(v, 4) if isinstance(v, float) else v for key, v in m.items()}
            for label, m in per_label.items()
        }
    return result
