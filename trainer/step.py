"""One optimizer step of training, the unit :mod:`trainer.fit` repeats and ``bench.train_step``
times: forward (under bfloat16 autocast where asked), the loss, backward, gradient clipping,
AdamW, the learning-rate schedule and the weight average.

Which weights learn is decided before it: :func:`freeze` fixes the word embeddings and the lowest
``freeze_layers`` transformer layers, so autograd never runs a backward pass through them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from shared.model import TaggerModel
from trainer.config import ConfigError, TrainConfig
from trainer.recipe import WeightAverage, optimizer_and_schedule


def freeze(model: TaggerModel, config: TrainConfig) -> None:
    """Fix the weights the recipe does not train: the word embeddings (``freeze_embeddings``)
    and the lowest ``freeze_layers`` transformer layers. Freezing layers freezes every
    embedding weight below them too: nothing under a frozen layer could learn."""
    layers = _transformer_layers(model)
    if config.freeze_layers > len(layers):
        raise ConfigError(
            f"key 'freeze_layers': {config.freeze_layers}, but the base model has "
            f"{len(layers)} transformer layers"
        )
    if config.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    if config.freeze_layers:
        model.encoder.embeddings.requires_grad_(False)
        for layer in layers[: config.freeze_layers]:
            layer.requires_grad_(False)


def _transformer_layers(model: TaggerModel) -> nn.ModuleList:
    layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"key 'freeze_layers': the base model ({type(model.encoder).__name__}) has no "
            "BERT-style encoder.layer list"
        )
    return layers


def loss_targets(soft: torch.Tensor, loss: str) -> torch.Tensor:
    """What the loss compares each row's logits with, made once per run: its tags as 0/1
    (``bce``), or ``soft``, its tags spread evenly (``softmax``)."""
    return (soft > 0).float() if loss == "bce" else soft


class TrainStep:
    """Applies one optimizer step to a batch; owns AdamW, its schedule and the weight average."""

    def __init__(
        self,
        model: TaggerModel,
        network: nn.Module,
        config: TrainConfig,
        total_steps: int,
        bf16: bool,
        distributed: bool = False,
    ) -> None:
        self.model, self.network, self.loss_name = model, network, config.loss
        self.bf16, self.distributed = bf16, distributed
        self.optimizer, self.schedule = optimizer_and_schedule(model, config, total_steps)
        self.average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
        self._params = [p for p in model.parameters() if p.requires_grad]

    def __call__(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor,
        weight: float = 1.0,
    ) -> torch.Tensor:
        """Train on one batch; ``targets`` are its rows of :func:`loss_targets`, and ``weight``
        scales the loss under DDP (:meth:`trainer.compute.Compute.share`). Returns the batch's
        mean loss, detached."""
        device_type = input_ids.device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.network(input_ids, mask)
        logits = logits.float()
        if self.loss_name == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, targets)
        else:
            loss = -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight if self.distributed else loss).backward()
        torch.nn.utils.clip_grad_norm_(self._params, 1.0)
        self.optimizer.step()
        self.schedule.step()
        if self.average:
            self.average.update()
        return loss.detach()
