"""A version's reference profile: what the model's answers looked like on its validation rows
(each tag's predicted and true rate, the top score's and the title length's distributions, the
unknown-token rate, the share of titles no tag reached the threshold for, and the validation
metrics), written as ``profile.json`` beside the model so live traffic can be compared to it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.decision import decide

PROFILE_FILE = "profile.json"
PROFILE_FORMAT = 1
SCORE_EDGES = [round(i / 10, 1) for i in range(11)]
TOKEN_EDGES = [0, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32, 40, 48, 64, 128]
_PLACES = 6


def histogram(values: Sequence[float] | np.ndarray, edges: Sequence[float]) -> list[float]:
    """Shares of ``values`` in the bins ``[edges[i], edges[i + 1])`` (summing to 1; all zeros
    for no values); values below the first edge count in the first bin, values at or above the
    last edge in the last one."""
    bins = len(edges) - 1
    if bins < 1:
        raise ValueError(f"histogram: needs at least two edges, got {list(edges)}")
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        return [0.0] * bins
    index = np.clip(np.searchsorted(np.asarray(edges, float), data, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    return [float(c) / data.size for c in counts]


def no_tag_share(top_scores: Sequence[float] | np.ndarray, threshold: float) -> float:
    """Share of rows whose top score is under the threshold: the decision shows only the top
    tag, because no tag earned its place."""
    data = np.asarray(top_scores, dtype=np.float64)
    return round(float((data < threshold).mean()), _PLACES) if data.size else 0.0


def build_profile(
    scores: np.ndarray,
    labels: list[str],
    threshold: float,
    true_tags: list[list[str]],
    tokens: list[int],
    unknown_tokens: list[int],
    metrics: dict[str, float],
) -> dict[str, Any]:
    """The profile of a model's ``scores`` (``(rows, labels)``) on its validation rows, with
    their true tags, token counts (special tokens included) and the validation ``metrics``."""
    n = len(scores)
    if scores.ndim != 2 or scores.shape[1] != len(labels):
        raise ValueError(f"build_profile: scores of shape {scores.shape} for {len(labels)} tags")
    if not len(true_tags) == len(tokens) == len(unknown_tokens) == n:
        raise ValueError(
            f"build_profile: {n} score rows, {len(true_tags)} tag lists, {len(tokens)} token "
            f"counts and {len(unknown_tokens)} unknown-token counts"
        )
    chosen = decide(scores, threshold) if n else np.zeros(scores.shape, dtype=bool)
    predicted = chosen.mean(axis=0) if n else np.zeros(len(labels))
    index = {label: i for i, label in enumerate(labels)}
    true_counts = np.zeros(len(labels))
    for row in true_tags:
        for tag in set(row):
            if tag in index:
                true_counts[index[tag]] += 1
    top = scores.max(axis=1) if n else np.zeros(0)
    # Binned as served: the API answers scores rounded to 6 places (float32 0.9 is 0.8999...).
    top_served = np.round(top.astype(np.float64), _PLACES)
    total_tokens = sum(tokens)
    return {
        "format": PROFILE_FORMAT,
        "rows": n,
        "threshold": float(threshold),
        "tags": {
            label: {
                "predicted_rate": round(float(predicted[i]), _PLACES),
                "true_rate": round(float(true_counts[i] / n), _PLACES) if n else 0.0,
            }
            for i, label in enumerate(labels)
        },
        "top_score": {"edges": SCORE_EDGES, "shares": _rounded(histogram(top_served, SCORE_EDGES))},
        "tokens": {"edges": TOKEN_EDGES, "shares": _rounded(histogram(tokens, TOKEN_EDGES))},
        "unknown_token_rate": (
            round(sum(unknown_tokens) / total_tokens, _PLACES) if total_tokens else 0.0
        ),
        "no_tag_share": no_tag_share(top, threshold),
        "metrics": {key: float(value) for key, value in metrics.items()},
    }


def _rounded(shares: list[float]) -> list[float]:
    return [round(share, _PLACES) for share in shares]


def save_profile(folder: Path, profile: dict[str, Any]) -> None:
    """Write ``profile.json`` into a version folder (the trainer's staging folder)."""
    (folder / PROFILE_FILE).write_text(json.dumps(profile, indent=2) + "\n")


def load_profile(folder: Path) -> dict[str, Any] | None:
    """The version folder's profile, or None when it has none (versions published before
    profiles existed). ValueError naming the file when it is unreadable or malformed."""
    path = folder / PROFILE_FILE
    if not path.is_file():
        return None
    try:
        profile = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON profile ({exc})") from exc
    problem = _malformed(profile)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return dict(profile)


def _malformed(profile: Any) -> str | None:
    """What is wrong with a loaded profile, or None."""
    if not isinstance(profile, dict):
        return "not a JSON object"
    if profile.get("format") != PROFILE_FORMAT:
        return f"format {profile.get('format')!r}, this code reads format {PROFILE_FORMAT}"
    if not isinstance(profile.get("tags"), dict):
        return "has no 'tags' table"
    if not isinstance(profile.get("threshold"), int | float):
        return "has no numeric 'threshold'"
    for key in ("top_score", "tokens"):
        part = profile.get(key)
        if not (
            isinstance(part, dict)
            and isinstance(part.get("edges"), list)
            and isinstance(part.get("shares"), list)
            and len(part["edges"]) == len(part["shares"]) + 1
        ):
            return f"'{key}' is not a histogram (edges, and one share fewer)"
    return None
