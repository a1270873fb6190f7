"""How two versions' answers to the same text agree: top-1 tag, overlap of the decided tags and
the change of the top score (oriented candidate against stable), and the deterministic share
of a request's key that routes a canary. Plain Python: the API and the trainer use this one copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Agreement:
    """What a candidate's answer to one text has in common with the stable version's."""

    top1: bool  # same top-1 tag
    jaccard: float  # |A & B| / |A | B| of the decided (predicted) tags; both empty: 1.0
    score_delta: float  # candidate's top-1 score minus the stable version's top-1 score


def agreement(
    stable_tags: Sequence[tuple[str, float]],
    stable_predicted: Sequence[str],
    candidate_tags: Sequence[tuple[str, float]],
    candidate_predicted: Sequence[str],
) -> Agreement:
    """Compare two answers to one text; ``*_tags`` are best first (as ``Prediction.tags``).

    An answer without tags has top score 0.0 and no top-1 tag (two such answers agree)."""
    stable_top = stable_tags[0] if stable_tags else None
    candidate_top = candidate_tags[0] if candidate_tags else None
    same_top = (stable_top is None and candidate_top is None) or (
        stable_top is not None and candidate_top is not None and stable_top[0] == candidate_top[0]
    )
    stable_set, candidate_set = set(stable_predicted), set(candidate_predicted)
    union = stable_set | candidate_set
    return Agreement(
        top1=same_top,
        jaccard=len(stable_set & candidate_set) / len(union) if union else 1.0,
        score_delta=(float(candidate_top[1]) if candidate_top else 0.0)
        - (float(stable_top[1]) if stable_top else 0.0),
    )


def canary_share(key: str) -> float:
    """Where ``key`` falls in [0, 1): the first 8 bytes of its sha256, as a fraction of 2**64.

    A request is answered by the canary when this is below the canary's fraction, so the same
    key always lands on the same version."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
