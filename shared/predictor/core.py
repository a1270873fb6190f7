"""The predictor every runtime shares: texts to token ids, padded batches of similar length, and
the score matrix to answers (the top-k tags and the decided ones).

A runtime supplies two small parts: a :class:`Tokenizer` (transformers' for torch, ``tokenizers``
on ``tokenizer.json`` for ONNX Runtime, which give the same ids) and a :class:`Runner`, the one
step that differs (a padded batch through the network to scores). Plain numpy: no torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from shared.decision import decide
from shared.spec import TaggerSpec
from shared.text import normalize_text


@dataclass(frozen=True)
class TagScore:
    tag: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """Tags of one text: the ``top_k`` by score, and those the model decides on; ``tokens``
    is how many tokens the model read (special tokens included, after truncation), ``unknown``
    how many of them are the tokenizer's unknown token."""

    tags: list[TagScore]
    predicted: list[str]
    tokens: int = 0
    unknown: int = 0


class TagPredictor(Protocol):
    """What the API and the tools need of a predictor, whatever runtime computes the scores."""

    labels: list[str]

    @property
    def threshold(self) -> float: ...

    def scores(self, texts: Sequence[str]) -> np.ndarray: ...

    def predict(self, texts: Sequence[str], top_k: int = 5) -> list[Prediction]: ...


class Tokenizer(Protocol):
    """Normalised texts to token ids, special tokens added, cut at ``max_length`` tokens;
    ``unk_id`` is the id of the unknown token (None for a tokenizer without one)."""

    pad_id: int
    unk_id: int | None

    def encode(self, texts: list[str], max_length: int) -> list[list[int]]: ...


class Runner(Protocol):
    """The runtime's step: a padded batch (int64 ids and attention mask, ``(rows, width)``) to
    each row's score of every label, float32 ``(rows, labels)``."""

    backend: str  # "onnx" or "torch", as the API reports it

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class Predictor:
    """Scores texts with one network on one runtime; thread-compatible (no mutation), though
    each runtime decides how many threads may call it at once."""

    def __init__(
        self,
        runner: Runner,
        tokenizer: Tokenizer,
        spec: TaggerSpec,
        labels: list[str],
        batch_size: int = 64,
        precision: str = "fp32",
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.spec = spec
        self.labels = labels
        self.batch_size = batch_size
        self.precision = precision

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (normalised, truncated to the model's maximum length)."""
        return self.tokenizer.encode([normalize_text(t) for t in texts], self.spec.max_length)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Probability of every label for every text, shape ``(len(texts), len(labels))``.

        Texts are run in batches of similar length, so padding stays small.
        """
        return self._scores_of(self.encode(texts))

    def token_counts(self, texts: Sequence[str]) -> tuple[list[int], list[int]]:
        """Tokens the model reads of each text, and how many of them are unknown tokens."""
        ids = self.encode(texts)
        return [len(x) for x in ids], self.unknown_counts(ids)

    def unknown_counts(self, ids: Sequence[Sequence[int]]) -> list[int]:
        """How many of each text's token ids are the tokenizer's unknown token."""
        unk = self.tokenizer.unk_id
        return [0 if unk is None else sum(i == unk for i in x) for x in ids]

    def _scores_of(self, ids: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        for rows in length_grouped([len(x) for x in ids], self.batch_size):
            out[rows] = self.runner(*pad([ids[i] for i in rows], self.tokenizer.pad_id))
        return out

    def predict(self, texts: Sequence[str], top_k: int = 5) -> list[Prediction]:
        """Top ``top_k`` tags with scores, and the decided tags, for each text in order."""
        ids = self.encode(texts)
        return to_predictions(
            self._scores_of(ids),
            self.labels,
            self.threshold,
            top_k,
            [len(x) for x in ids],
            self.unknown_counts(ids),
        )


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists to the longest one; return int64 ids and attention mask."""
    width = max(len(s) for s in sequences)
    input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask


def length_grouped(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length (shortest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def to_predictions(
    scores: np.ndarray,
    labels: Sequence[str],
    threshold: float,
    top_k: int,
    tokens: Sequence[int] | None = None,
    unknown: Sequence[int] | None = None,
) -> list[Prediction]:
    """Top ``top_k`` tags with scores (rounded to 6 places), and the decided tags, per row;
    ``tokens``: how many tokens each row's text was (for the input-length metric), ``unknown``:
    how many of them were the unknown token."""
    chosen = decide(scores, threshold)
    top_k = max(1, min(top_k, len(labels)))
    counts = tokens if tokens is not None else [0] * len(scores)
    unknowns = unknown if unknown is not None else [0] * len(scores)
    results = []
    for row, picked, count, unk in zip(scores, chosen, counts, unknowns, strict=True):
        order = np.argsort(-row, kind="stable")
        top, decided = order[:top_k], order[picked[order]]
        results.append(
            Prediction(
                tags=[TagScore(labels[i], round(float(row[i]), 6)) for i in top],
                predicted=[labels[i] for i in decided],
                tokens=count,
                unknown=unk,
            )
        )
    return results
