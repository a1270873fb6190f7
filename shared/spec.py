"""``tagger.json``: how a network's outputs become tags (pooling, score function, threshold,
maximum length). Plain JSON and no torch, so every serving runtime reads the same spec."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

TAGGER_FILE = "tagger.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TaggerSpec:
    """How the network's outputs become tags; stored as ``tagger.json`` beside the weights."""

    threshold: float
    max_length: int
    pooling: str = "mean"
    score: str = "softmax"
    format_version: int = FORMAT_VERSION

    def save(self, folder: Path) -> None:
        (folder / TAGGER_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> TaggerSpec:
        data = json.loads((folder / TAGGER_FILE).read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{folder / TAGGER_FILE}: format_version {data.get('format_version')!r} "
                f"is not {FORMAT_VERSION}; this code cannot serve it"
            )
        if data.get("pooling") != "mean" or data.get("score") not in ("softmax", "sigmoid"):
            raise ValueError(f"{folder / TAGGER_FILE}: unsupported pooling/score {data}")
        return cls(**data)
