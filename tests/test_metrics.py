"""Tagging metrics against figures worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from shared.decision import decide
from trainer.metrics import Truth, tagging_metrics, tune_threshold

LABELS = ["a", "b", "c"]


def test_decide_always_keeps_the_top_tag() -> None:
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    assert decide(scores, 0.9).tolist() == [[True, False, False], [False, False, True]]
    assert decide(scores, 0.25).tolist() == [[True, True, False], [False, False, True]]


def test_metrics_by_hand() -> None:
    scores = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    truth = [["a", "b"], ["c"], ["c", "zzz"]]  # zzz: unknown to the model
    m = tagging_metrics(scores, 0.3, truth, LABELS, k=2, per_tag=True)
    # predicted: {a,b}, {b,c}, {c}; tp = a,b,c,c = 4; fp = b (row 2) = 1; fn = zzz = 1
    assert m["micro_f1"] == pytest.approx(round(8 / 10, 4))
    # per tag f1: a 1.0, b 2/3, c 1.0, unknown zzz 0 -> mean 0.6667
    assert m["macro_f1"] == pytest.approx(round((1 + 2 / 3 + 1 + 0) / 4, 4))
    assert m["p_at_1"] == pytest.approx(round(2 / 3, 4))  # rows 1 and 3 right, row 2 wrong
    # recall@2: row1 {a,b} 2/2, row2 {b,c} 1/1, row3 {c,a|b} 1/2
    assert m["recall_at_2"] == pytest.approx(round((1 + 1 + 0.5) / 3, 4))
    assert m["n"] == 3 and m["unknown_tags"] == 1
    assert m["per_tag"]["b"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": 0.6667,
        "recall_at_2": 1.0,
        "support": 1,
    }


def test_tune_threshold_maximises_micro_f1() -> None:
    scores = np.array([[0.6, 0.35, 0.05], [0.7, 0.2, 0.1]])
    truth = Truth.build([["a", "b"], ["a"]], LABELS)
    # any threshold in (0.2, 0.35] gives the perfect answer; the highest such is chosen
    assert tune_threshold(scores, truth) == pytest.approx(0.35)
