"""Fitting the network: the training loop, which applies the tricks of :mod:`trainer.recipe`.

* batches of titles of similar length (padding only to the longest in a batch);
* the weights it does not train are fixed first (:func:`trainer.step.freeze`), and each batch
  is one :class:`trainer.step.TrainStep`;
* an epoch budget that may end part-way through an epoch (``epochs: 1.5``), where the
  learning rate reaches 0;
* the loss: binary cross-entropy per tag (``bce``), or cross-entropy against the known tags
  spread evenly (``softmax``);
* after each epoch the validation rows are scored (with the weight average swapped in, if
  any); the best epoch's weights are kept and the loop stops early when micro-F1 stops
  improving.

It runs on the device of :class:`trainer.compute.Compute`, and under torchrun as one of several
data-parallel processes (each trains on its share of every batch; rank 0 alone validates and
keeps the best epoch's weights); the model it hands back is on the CPU.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from shared.data import Dataset
from shared.model import TaggerModel
from shared.predictor import Predictor
from shared.predictor.torch_runner import pad_batch
from trainer.compute import Compute
from trainer.config import TrainConfig
from trainer.metrics import HEADLINE_METRICS, Truth, tagging_metrics, tune_threshold
from trainer.recipe import init_head_from_tag_names, use_bf16
from trainer.split import Split
from trainer.step import TrainStep, freeze, loss_targets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Validation:
    """Scores of the validation rows, the threshold tuned on them, and the metrics there."""

    scores: np.ndarray
    threshold: float
    metrics: dict[str, Any]


def validate(
    predictor: Predictor, rows: Dataset, labels: list[str], per_tag: bool = False
) -> Validation:
    """Score ``rows``, tune the decision threshold on them and compute the metrics at it.
    The caller puts the model in inference mode first."""
    scores = predictor.scores(rows.titles)
    threshold = tune_threshold(scores, Truth.build(rows.tags, labels))
    metrics = tagging_metrics(scores, threshold, rows.tags, labels, per_tag=per_tag)
    return Validation(scores, threshold, metrics)


@dataclass
class FitResult:
    """What the loop did; the model it was given now holds the kept (best epoch's) weights."""

    best_epoch: float
    history: list[dict[str, Any]] = field(default_factory=list)
    # The kept epoch's validation: the kept weights score the validation rows exactly so, so
    # the caller reuses it instead of scoring them again (rank 0 only; None elsewhere).
    best_validation: Validation | None = None
    train_seconds: float = 0.0
    samples_seen: int = 0
    bf16: bool = False

    @property
    def samples_per_second(self) -> float | None:
        return round(self.samples_seen / self.train_seconds, 1) if self.train_seconds else None


def length_grouped_batches(
    lengths: list[int], batch_size: int, rng: np.random.Generator, group: int = 50
) -> list[list[int]]:
    """Shuffled batches of similar-length rows: sort within chunks of ``group`` batches."""
    order = rng.permutation(len(lengths)).tolist()
    batches = []
    chunk = batch_size * group
    for start in range(0, len(order), chunk):
        block = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
    rng.shuffle(batches)  # type: ignore[arg-type]
    return batches


def soft_targets(tags: list[list[str]], labels: list[str]) -> torch.Tensor:
    """Each question's known tags spread evenly (rows sum to 1)."""
    targets = torch.from_numpy(Truth.build(tags, labels).known.astype(np.float32))
    return targets / targets.sum(dim=1, keepdim=True).clamp(min=1.0)


def fit(
    model: TaggerModel,
    predictor: Predictor,
    split: Split,
    config: TrainConfig,
    compute: Compute | None = None,
    progress_every: float | None = None,
) -> FitResult:
    """Train ``model`` (which ``predictor`` wraps) on ``split.train`` on ``compute``'s device
    (default: this process alone, on the CPU); leave in it, back on the CPU, the weights of the
    epoch that scored best on ``split.valid``. Under torchrun every process calls this: each
    trains on its share of every batch, rank 0 alone validates, and only rank 0's model holds
    the best epoch's weights (the others return with an empty history)."""
    compute = compute or Compute()
    device = compute.device
    rng = np.random.default_rng(config.seed + 1)  # batch order; the split has its own
    train_ids = predictor.encode(split.train.titles)
    targets = soft_targets(split.train.tags, split.labels).to(device)
    multi_hot = (targets > 0).float()
    compared = loss_targets(targets, config.loss)
    pad_id = predictor.tokenizer.pad_id
    lengths = [len(ids) for ids in train_ids]
    steps_per_epoch = math.ceil(len(train_ids) / config.batch_size)
    # The epoch budget may end part-way through an epoch: its last epoch takes the first
    # batches of that epoch's shuffled order, and the schedule reaches 0 there.
    total_steps = math.ceil(steps_per_epoch * config.epochs)
    epochs = math.ceil(total_steps / steps_per_epoch)

    model.to(device)
    freeze(model, config)
    if config.head_init == "tag_names":
        init_head_from_tag_names(
            model, predictor, split.labels, train_ids[:1024], multi_hot, config.loss
        )
    network = compute.wrap(model)  # DDP keeps the processes' weights equal after every step
    bf16 = use_bf16(config.train_precision, device)
    log.info("training precision: %s", "bf16 autocast" if bf16 else "fp32")
    # AdamW and the weight average hold the unwrapped model's weights: the same tensors DDP
    # updates in every process.
    step = TrainStep(model, network, config, total_steps, bf16, compute.distributed)
    average = step.average
    result = FitResult(best_epoch=0, bf16=bf16)
    best_score, best_weights, epochs_without_gain = -1.0, None, 0
    steps_done = 0
    for epoch_number in range(1, epochs + 1):
        model.train()
        # Every process draws the same batches from the same seeded generator and trains on
        # its share of each, so the epochs reshuffle alike everywhere (set_epoch's job).
        batches = length_grouped_batches(lengths, config.batch_size, rng)
        batches = batches[: total_steps - steps_done]
        steps_done += len(batches)
        epoch: float = epoch_number
        if steps_done % steps_per_epoch:  # a part epoch: where in the budget it ends
            epoch = round(steps_done / steps_per_epoch, 2)
        epoch_rows = sum(len(batch) for batch in batches)
        epoch_start, loss_sum = time.monotonic(), 0.0
        bar = tqdm(
            total=epoch_rows,
            desc=f"epoch {epoch}/{config.epochs:g}",
            unit="ex",
            mininterval=progress_every or (1.0 if sys.stderr.isatty() else 30.0),
            dynamic_ncols=True,
            disable=not compute.is_main,
        )
        for batch in batches:
            rows, weight = compute.share(batch)
            input_ids, mask = (
                t.to(device) for t in pad_batch([train_ids[i] for i in rows], pad_id)
            )
            loss = step(input_ids, mask, compared[rows], weight).item()
            if weight:
                loss_sum += loss * len(rows)
            bar.update(len(batch))
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.close()
        elapsed = time.monotonic() - epoch_start
        loss_sum = compute.total(loss_sum)
        result.train_seconds += elapsed
        result.samples_seen += epoch_rows

        if not compute.is_main:  # rank 0 validates; the others learn whether it stops here
            log.info(
                "epoch %g/%g: trained this process's share in %.1f s; rank 0 validates",
                epoch,
                config.epochs,
                elapsed,
            )
            if compute.broadcast(False):
                break
            continue

        model.train(False)  # inference mode: dropout off
        raw_weights = average.swap_in(model) if average else None
        check = validate(predictor, split.valid, split.labels)
        record = {
            "epoch": epoch,
            "train_loss": round(loss_sum / epoch_rows, 4),
            "samples_per_second": round(epoch_rows / elapsed, 1),
            **{f"valid_{k}": check.metrics[k] for k in HEADLINE_METRICS},
            "threshold": check.threshold,
        }
        result.history.append(record)
        log.info(
            "epoch %g/%g: loss %.4f, %.1f samples/s; valid micro-F1 %.4f macro-F1 %.4f "
            "P@1 %.4f R@5 %.4f (threshold %.2f)",
            epoch,
            config.epochs,
            record["train_loss"],
            record["samples_per_second"],
            *(check.metrics[k] for k in HEADLINE_METRICS),
            check.threshold,
        )
        improved = check.metrics["micro_f1"] > best_score
        if improved:
            best_score, result.best_epoch, epochs_without_gain = check.metrics["micro_f1"], epoch, 0
            result.best_validation = check
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if raw_weights is not None:
            model.load_state_dict(raw_weights)
        stop = False
        if not improved:
            epochs_without_gain += 1
            if epochs_without_gain > config.early_stopping_patience:
                log.info(
                    "validation micro-F1 has not improved for %d epoch(s): stopping",
                    epochs_without_gain,
                )
                stop = True
        if compute.broadcast(stop):
            break

    compute.check_in(model)
    if compute.is_main:
        assert best_weights is not None  # the first epoch always improves on -1
        model.load_state_dict(best_weights)
    model.to("cpu")
    model.train(False)
    return result
