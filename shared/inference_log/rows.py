"""What the API hands the writer for each text it answered or shadow-scored (plain Python, no
database types), and the hash that stands for a title when titles are not kept."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.text import normalize_text

ROLE_ANSWER = "answer"  # the version that answered the request
ROLE_SHADOW = "shadow"  # the other loaded version, scoring the same text off the response path
ROLES = (ROLE_ANSWER, ROLE_SHADOW)


def title_hash(title: str) -> str:
    """sha256 (hex) of the normalised title: equal for titles that differ only in spacing."""
    return hashlib.sha256(normalize_text(title).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PredictionRow:
    """One text of a request: what was asked of which version, what it said and in what role.

    A shadow row has the request id and position of the answer row it shadows and carries the
    comparison of the two answers, always oriented candidate against stable (``agree_top1``,
    ``jaccard``, ``score_delta``: :class:`shared.live.Agreement`'s fields); answer rows leave
    them None. ``compute_ms``: the model pass that scored the text (the whole batch's)."""

    request_id: str
    position: int
    created_at: datetime
    version: str
    title: str | None
    title_hash: str
    tokens: int
    unknown_tokens: int
    top_tags: list[tuple[str, float]]
    predicted: list[str]
    role: str = ROLE_ANSWER
    compute_ms: float | None = None
    agree_top1: bool | None = None
    jaccard: float | None = None
    score_delta: float | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r}: expected one of {', '.join(ROLES)}")

    def values(self) -> dict[str, Any]:
        """The row as the ``predictions`` table's column values."""
        return {
            "request_id": self.request_id,
            "position": self.position,
            "created_at": self.created_at,
            "version": self.version,
            "title": self.title,
            "title_hash": self.title_hash,
            "tokens": self.tokens,
            "unknown_tokens": self.unknown_tokens,
            "top_tags": [[tag, float(score)] for tag, score in self.top_tags],
            "predicted": list(self.predicted),
            "role": self.role,
            "compute_ms": _float_or_none(self.compute_ms),
            "agree_top1": None if self.agree_top1 is None else bool(self.agree_top1),
            "jaccard": _float_or_none(self.jaccard),
            "score_delta": _float_or_none(self.score_delta),
        }


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)
