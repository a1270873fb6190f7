"""Text preprocessing: the one definition used both when training and when predicting."""

from __future__ import annotations

import re

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Collapse runs of whitespace and strip the ends; casing is left to the tokenizer."""
    return _WHITESPACE.sub(" ", text).strip()
