"""Text preprocessing: the one definition used both when training and when predicting."""

from __future__ import annotations

import re

_WHITESPACE = re.compile(r"\s+")
# A lone UTF-16 surrogate (JSON allows "\ud800") cannot be encoded as UTF-8: the tokenizer
# would raise. Files are read as strict UTF-8, so training text never holds one.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize_text(text: str) -> str:
    """Collapse runs of whitespace and strip the ends; casing is left to the tokenizer.

    Lone surrogates become U+FFFD (the replacement character)."""
    return _LONE_SURROGATE.sub("\ufffd", _WHITESPACE.sub(" ", text)).strip()
