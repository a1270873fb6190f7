"""The tagger network: a transformer encoder, mean pooling and one linear layer, one score per tag.

Scores are per-tag sigmoids (trained with binary cross-entropy) or a softmax over the tags
(trained against the tags spread evenly); ``tagger.json`` says which.

On disk it is a Hugging Face model folder. ``config.json`` is the encoder's own config with the
tags in ``id2label``; ``model.safetensors`` holds the encoder's weights under their usual names
(so ``AutoModel.from_pretrained(folder)`` loads the encoder as it is) plus the head under
``tagger_head.*``; ``tagger.json`` says how scores are made (pooling, score function, decision
threshold, maximum length). Only safetensors is ever read or written: nothing is unpickled
(transformers is told ``use_safetensors=True``, so a folder with only a pickled
``pytorch_model.bin`` is refused rather than loaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn
from transformers import AutoModel, PreTrainedModel

# TaggerSpec lives in the torch-free shared.spec; re-exported for existing imports.
from shared.spec import TaggerSpec as TaggerSpec

WEIGHTS_FILE = "model.safetensors"
HEAD_PREFIX = "tagger_head."


class TaggerModel(nn.Module):
    """Encoder + masked mean pooling + dropout + linear head; ``forward`` returns logits."""

    def __init__(self, encoder: PreTrainedModel, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.tagger_head = nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def labels(self) -> list[str]:
        id2label = cast(dict[int, str], self.encoder.config.id2label)  # from_base/config.json
        return [id2label[i] for i in range(len(id2label))]

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden states averaged over the real (unpadded) tokens."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.tagger_head(self.dropout(self.pool(input_ids, attention_mask)))

    @classmethod
    def from_base(cls, base: str | Path, labels: list[str], dropout: float = 0.1) -> TaggerModel:
        """Start from a pretrained encoder folder with a freshly initialised head."""
        encoder = AutoModel.from_pretrained(
            str(base), add_pooling_layer=False, use_safetensors=True
        )
        encoder.config.id2label = dict(enumerate(labels))
        encoder.config.label2id = {label: i for i, label in enumerate(labels)}
        return cls(encoder, num_labels=len(labels), dropout=dropout)

    def save(self, folder: Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``folder``."""
        self.encoder.config.architectures = [type(self.encoder).__name__]
        self.encoder.config.save_pretrained(folder)
        tensors = {k: v.detach().contiguous() for k, v in self.encoder.state_dict().items()}
        tensors.update(
            {
                HEAD_PREFIX + k: v.detach().contiguous()
                for k, v in self.tagger_head.state_dict().items()
            }
        )
        # Serialised in memory, written by Python: a full disk is then an ordinary OSError
        # (ENOSPC) that callers can report, not a library-specific exception.
        (folder / WEIGHTS_FILE).write_bytes(safetensors_bytes(tensors, metadata={"format": "pt"}))

    @classmethod
    def load(cls, folder: Path) -> TaggerModel:
        """Build the network from a model folder written by :meth:`save`.

        The encoder is loaded by transformers itself (no random initialisation of weights that
        are about to be overwritten); every encoder weight must be present, and the head must
        match the labels in ``config.json``.
        """
        encoder, info = AutoModel.from_pretrained(
            str(folder), add_pooling_layer=False, output_loading_info=True, use_safetensors=True
        )
        problems = list(info["missing_keys"]) + [
            k for k in info["unexpected_keys"] if not k.startswith(HEAD_PREFIX)
        ]
        if problems or info["mismatched_keys"]:
            raise ValueError(
                f"{folder / WEIGHTS_FILE}: weights do not match config.json "
                f"(missing/unexpected {problems[:5]}, mismatched {info['mismatched_keys'][:5]})"
            )
        head = {}
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as weights:
            for key in weights.keys():
                if key.startswith(HEAD_PREFIX):
                    head[key[len(HEAD_PREFIX) :]] = weights.get_tensor(key)
        if "weight" not in head:
            raise ValueError(f"{folder / WEIGHTS_FILE}: no {HEAD_PREFIX}weight tensor")
        model = cls(encoder, num_labels=head["weight"].shape[0])
        if model.tagger_head.out_features != len(encoder.config.id2label):
            raise ValueError(
                f"{folder}: head has {model.tagger_head.out_features} outputs but config.json "
                f"names {len(encoder.config.id2label)} labels"
            )
        model.tagger_head.load_state_dict(head, strict=True)
        model.train(False)  # inference mode: dropout off
        return model
