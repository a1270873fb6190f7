"""The decision rule from scores to tags, shared by the predictor and the trainer's metrics.

Plain numpy, so code that only needs the rule (metrics, ``versions list``) does not import torch.
"""

from __future__ import annotations

import numpy as np


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean matrix of predicted tags: score >= threshold, and always the top tag."""
    chosen = scores >= threshold
    chosen[np.arange(len(scores)), scores.argmax(axis=1)] = True
    return chosen
