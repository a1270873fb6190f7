"""What the API hands the writer for each text it answered (plain Python, no database types),
and the hash that stands for a title when titles are not kept."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.text import normalize_text


def title_hash(title: str) -> str:
    """sha256 (hex) of the normalised title: equal for titles that differ only in spacing."""
    return hashlib.sha256(normalize_text(title).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PredictionRow:
    """One answered text of a request: what was asked of which version and what it said."""

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
        }
