"""The torch runtime: a :class:`shared.model.TaggerModel` with transformers' tokenizer.

The API serves it with ``API_BACKEND=torch`` (or ``auto`` on a version without an ONNX graph).
The trainer scores its validation set with :func:`torch_predictor` around the model it trains,
so training-time and serving-time predictions share one :class:`Predictor` and cannot drift;
it pads its training batches with :func:`pad_batch`, the core's padding as torch tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from shared.layout import check_precision
from shared.model import TaggerModel, TaggerSpec
from shared.predictor.core import Predictor, pad
from shared.store import verify

# The first layer's feed-forward output projection sees the encoder's outlier activations;
# quantizing it cost most of int8's micro-F1 loss on held-out training rows (0.0086 with it,
# 0.0052 without it), for a few percent of the speed-up. It stays fp32.
INT8_KEEP_FP32 = ("encoder.encoder.layer.0.output.dense",)


class TransformersTokenizer:
    """The core's tokenizer step on a transformers tokenizer (the trainer's, or a version's)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id or 0
        unk_id = tokenizer.unk_token_id
        self.unk_id = unk_id if isinstance(unk_id, int) else None

    def encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids, special tokens added, cut at ``max_length``."""
        return list(self.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"])


class TorchRunner:
    """The core's network step on torch: the model's logits through the spec's score function."""

    backend = "torch"

    def __init__(self, model: TaggerModel, score: str) -> None:
        # The mode of ``model`` is its owner's: the loader hands over one in inference mode,
        # and the trainer switches its model between training and scoring itself.
        self.model = model
        self.score = score

    @torch.inference_mode()
    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Scores of a padded batch, computed where the weights are (the trainer validates on
        its training device)."""
        device = next(self.model.parameters()).device
        ids, mask = (torch.from_numpy(a).to(device) for a in (input_ids, attention_mask))
        logits = self.model(ids, mask).float()
        probs = torch.sigmoid(logits) if self.score == "sigmoid" else logits.softmax(-1)
        return probs.cpu().numpy()


def torch_predictor(
    model: TaggerModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: TaggerSpec,
    batch_size: int = 64,
    precision: str = "fp32",
) -> Predictor:
    """A predictor around a model in memory (the trainer's, or one just loaded); it scores with
    the model as it is, in whatever mode its owner left it."""
    return Predictor(
        TorchRunner(model, spec.score),
        TransformersTokenizer(tokenizer),
        spec,
        model.labels,
        batch_size=batch_size,
        precision=precision,
    )


def load_torch_predictor(
    folder: str | Path,
    batch_size: int = 64,
    verify_checksums: bool = True,
    precision: str = "fp32",
) -> Predictor:
    """Load a published version folder on torch, checking its manifest first unless told not to.

    ``precision="int8"`` quantizes the linear layers dynamically (int8 weights, activations
    quantized on the fly) after loading: faster on a CPU, slightly different scores.
    """
    checked = check_precision(precision)
    folder = Path(folder)
    if verify_checksums:
        verify(folder)
    spec = TaggerSpec.load(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = TaggerModel.load(folder)
    if checked == "int8":
        model = quantize_int8(model)
    return torch_predictor(model, tokenizer, spec, batch_size=batch_size, precision=checked)


def serve_quietly(threads: int = 0) -> None:
    """How the API runs torch: no transformers load reports or progress bars (not news
    there), and ``threads`` CPU threads (0: torch's default)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)


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


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest one; return ids and attention mask (int64)."""
    input_ids, mask = pad(sequences, pad_id)
    return torch.from_numpy(input_ids), torch.from_numpy(mask)
