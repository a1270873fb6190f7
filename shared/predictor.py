"""The torch predictor: tokenizer + network + labels + threshold, built from one artefact folder.

The API serves it with ``API_BACKEND=torch`` (or ``auto`` on a version without an ONNX graph);
:mod:`shared.onnx_predictor` is its ONNX Runtime twin. The trainer uses the same class to score its
validation set, so training-time and serving-time predictions cannot drift.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from shared.model import TaggerModel, TaggerSpec

# TagScore and Prediction live in the torch-free shared.prediction; re-exported here.
from shared.prediction import Prediction as Prediction
from shared.prediction import TagScore as TagScore
from shared.prediction import length_grouped, to_predictions
from shared.store import verify
from shared.text import normalize_text

PRECISIONS = ("fp32", "int8")


class Predictor:
    """Scores texts with one loaded model; thread-compatible for inference (no mutation)."""

    backend = "torch"

    def __init__(
        self,
        model: TaggerModel,
        tokenizer: PreTrainedTokenizerBase,
        spec: TaggerSpec,
        batch_size: int = 64,
    ) -> None:
        # The mode of ``model`` is its owner's: from_folder hands over one in inference mode,
        # and the trainer switches its model between training and scoring itself.
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.labels = model.labels
        self.batch_size = batch_size

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        batch_size: int = 64,
        verify_checksums: bool = True,
        precision: str = "fp32",
    ) -> Predictor:
        """Load a published version folder, checking its manifest first unless told not to.

        ``precision="int8"`` quantizes the linear layers dynamically (int8 weights, activations
        quantized on the fly) after loading: faster on a CPU, slightly different scores.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        folder = Path(folder)
        if verify_checksums:
            verify(folder)
        spec = TaggerSpec.load(folder)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = TaggerModel.load(folder)
        if precision == "int8":
            model = quantize_int8(model)
        return cls(model, tokenizer, spec, batch_size=batch_size)

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (normalised, truncated to the model's maximum length)."""
        cleaned = [normalize_text(t) for t in texts]
        encoded = self.tokenizer(cleaned, truncation=True, max_length=self.spec.max_length)
        return list(encoded["input_ids"])

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Probability of every label for every text, shape ``(len(texts), len(labels))``.

        Texts are run in batches of similar length, so padding stays small.
        """
        return self._scores_of(self.encode(texts))

    @torch.inference_mode()
    def _scores_of(self, ids: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        # Batches go where the weights are: the trainer validates on its training device.
        device = next(self.model.parameters()).device
        for rows in length_grouped([len(x) for x in ids], self.batch_size):
            input_ids, mask = pad_batch([ids[i] for i in rows], self.tokenizer.pad_token_id or 0)
            logits = self.model(input_ids.to(device), mask.to(device))
            logits = logits.float()
            probs = torch.sigmoid(logits) if self.spec.score == "sigmoid" else logits.softmax(-1)
            out[rows] = probs.cpu().numpy()
        return out

    def predict(self, texts: Sequence[str], top_k: int = 5) -> list[Prediction]:
        """Top ``top_k`` tags with scores, and the decided tags, for each text in order."""
        ids = self.encode(texts)
        return to_predictions(
            self._scores_of(ids), self.labels, self.threshold, top_k, [len(x) for x in ids]
        )


# The first layer's feed-forward output projection sees the encoder's outlier activations;
# quantizing it cost most of int8's micro-F1 loss on held-out training rows (0.0086 with it,
# 0.0052 without it), for a few percent of the speed-up. It stays fp32.
INT8_KEEP_FP32 = ("encoder.encoder.layer.0.output.dense",)


def quantize_int8(model: TaggerModel) -> TaggerModel:
    """Dynamic int8 quantization of the ``nn.Linear`` layers but those in ``INT8_KEEP_FP32``
    (torch's eager-mode API, deprecated in favour of torchao but present and working in torch
    2.13; isolated here for that reason)."""
    names = {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name not in INT8_KEEP_FP32
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        quantized = torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8)
    return quantized.train(False)


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest one; return ids and attention mask."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask
