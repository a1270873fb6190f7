"""One training run, as a recipe: split -> fit -> evaluate -> gate -> publish.

Each step lives in its own module: :mod:`trainer.split` (which rows), :mod:`trainer.fit` (the
training loop and its tricks), :mod:`trainer.baseline` (the TF-IDF yardstick),
:mod:`trainer.promotion` (the gate) and :mod:`trainer.publish` (the version and its provenance).
:mod:`trainer.compute` says where it computes: the device, and under torchrun which of the
data-parallel processes this is (all of them fit; rank 0 alone evaluates, gates and publishes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from shared.model import TaggerModel, TaggerSpec
from shared.predictor.torch_runner import torch_predictor
from shared.store import ArtefactError, ArtefactStore
from trainer.baseline import baseline_metrics
from trainer.compute import Compute, start_compute
from trainer.config import TrainConfig
from trainer.feedback_data import FeedbackSource, load_feedback
from trainer.fit import Validation, fit
from trainer.metrics import HEADLINE_METRICS, tagging_metrics
from trainer.promotion import decide_promotion, settle_promotion
from trainer.publish import RunInputs, publish, reference_profile
from trainer.recipe import resolve_base_model, seed_everything
from trainer.report import describe_recipe
from trainer.split import prepare_split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    version: str
    path: Path
    metrics: dict[str, Any]
    promoted: bool
    reason: str = ""
    candidate: str | None = None  # the rollout mode when it was made the candidate instead


def train(
    config: TrainConfig,
    dataset_path: Path,
    valid_path: Path | None,
    artefacts_dir: Path,
    config_path: Path | None = None,
    feedback: FeedbackSource | None = None,
    progress_every: float | None = None,
) -> TrainResult | None:
    """Run one training and publish its version; ``LATEST`` moves to it if the gate allows.
    With ``feedback``, the labelled rows of that inference log newer than the served model's
    data join the training rows and the newest of them validate (:mod:`trainer.feedback_data`).
    ``progress_every``: seconds between an epoch's progress lines (default: 1 on a terminal,
    else 30).
    Under torchrun every process trains; rank 0 publishes and the others return None once it
    has (a process that died, or a failure of rank 0's, fails the whole job instead)."""
    with start_compute(config) as compute:
        result = _train(
            compute,
            config,
            dataset_path,
            valid_path,
            artefacts_dir,
            config_path,
            feedback,
            progress_every,
        )
        compute.barrier()  # the other processes wait here while rank 0 evaluates and publishes
    return result


def _train(
    compute: Compute,
    config: TrainConfig,
    dataset_path: Path,
    valid_path: Path | None,
    artefacts_dir: Path,
    config_path: Path | None,
    feedback: FeedbackSource | None,
    progress_every: float | None,
) -> TrainResult | None:
    started = time.monotonic()
    base_folder = resolve_base_model(config.base_model)
    seed_everything(config.seed)

    store = ArtefactStore(artefacts_dir)
    feedback_rows = None
    if feedback is not None:
        source = feedback  # rank 0 reads the log once and hands every process the same rows
        feedback_rows = compute.on_main(lambda: load_feedback(source, store, config))
    split = prepare_split(config, dataset_path, valid_path, feedback_rows)
    # The store is checked before any training, never after: a run that cannot publish fails
    # now with one line, not after its last epoch (and bad input leaves the store untouched).
    # Rank 0 alone touches the store; its error stops every process.
    incumbent = compute.on_main(store.check_writable)
    if compute.is_main:
        log.info("artefacts in %s; LATEST names %s", artefacts_dir, incumbent or "nothing yet")
    log.info(
        "training on %d questions, validating on %d, %d tags; base model %s",
        len(split.train),
        len(split.valid),
        len(split.labels),
        base_folder,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(base_folder))
    model = TaggerModel.from_base(base_folder, split.labels, dropout=config.dropout)
    score = "sigmoid" if config.loss == "bce" else "softmax"
    spec = TaggerSpec(threshold=0.5, max_length=config.max_length, score=score)
    predictor = torch_predictor(model, tokenizer, spec, batch_size=config.eval_batch_size)

    # Returns in every process only once all of them have finished training with the same
    # weights: rank 0 cannot publish after a peer died.
    fitted = fit(model, predictor, split, config, compute, progress_every)
    if not compute.is_main:
        return None

    # The kept weights' scores of the validation rows are the kept epoch's (the same weights, in
    # inference mode): only the per-tag figures are new.
    kept = fitted.best_validation
    assert kept is not None  # rank 0's first epoch always improves on nothing
    final = Validation(
        kept.scores,
        kept.threshold,
        tagging_metrics(kept.scores, kept.threshold, split.valid.tags, split.labels, per_tag=True),
    )
    spec = TaggerSpec(threshold=final.threshold, max_length=config.max_length, score=score)
    run_metrics: dict[str, Any] = {
        "valid": final.metrics,
        "best_epoch": fitted.best_epoch,
        "history": fitted.history,
        "n_train": len(split.train),
        "n_valid": len(split.valid),
        "n_labels": len(split.labels),
        "skipped_rows": split.skipped_rows,
        "feedback": split.feedback,
        "train_seconds": round(fitted.train_seconds, 1),
        "samples_per_second": fitted.samples_per_second,
        "train_precision": "bf16" if fitted.bf16 else "fp32",
    }
    if config.baseline:
        run_metrics["baseline"] = baseline_metrics(split.train, split.valid, split.labels)
        log.info(
            "baseline (TF-IDF + one-vs-rest LR) on the same validation rows: micro-F1 %.4f "
            "macro-F1 %.4f P@1 %.4f R@5 %.4f",
            *(run_metrics["baseline"][k] for k in HEADLINE_METRICS),
        )

    rows_name, fresh = "validation rows", None
    if split.fresh_rows:
        n = split.fresh_rows
        rows_name = f"validation rows (held-out base rows, then the newest {n} feedback rows)"
        fresh_metrics = tagging_metrics(
            final.scores[-n:], final.threshold, split.valid.tags[-n:], split.labels
        )
        fresh = (n, fresh_metrics)
        run_metrics["valid_fresh_slice"] = {k: fresh_metrics[k] for k in (*HEADLINE_METRICS, "n")}

    def gate() -> dict[str, Any]:
        return decide_promotion(store, config, split.valid, final.metrics, rows_name, fresh)

    # The gate's verdict at publish time goes into metrics.json and the model card; the
    # store records the final decision (LATEST may move under this run while it publishes).
    promotion = gate()
    run_metrics["promotion"] = promotion
    version = publish(
        store,
        model,
        tokenizer,
        spec,
        run_metrics,
        RunInputs(config, config_path, dataset_path, valid_path, split.feedback),
        recipe=describe_recipe(config, fitted.bf16, fitted.best_epoch),
        valid_rows=split.valid,
        profile=reference_profile(
            predictor, split.valid, final.scores, final.threshold, final.metrics
        ),
    )
    promotion = settle_promotion(
        store,
        version,
        promotion,
        gate,
        force=config.force_promote,
        rollout=config.rollout,
        sample=config.rollout_sample,
        fraction=config.rollout_fraction,
    )
    candidate = promotion.get("candidate")
    if promotion["promoted"]:
        log.info("promoted %s: %s", version, promotion["reason"])
    elif candidate:
        log.info(
            "published %s as the %s candidate beside LATEST %s (%s); `tagger versions compare` "
            "shows it on live traffic, `promote %s` or `abort` settles it",
            version,
            candidate,
            promotion["previous"],
            promotion["reason"],
            version,
        )
    else:
        log.warning(
            "NOT promoted: %s. LATEST stays at %s; to serve %s anyway: "
            "python -m trainer.versions use %s (or train with --force)",
            promotion["reason"],
            promotion["previous"],
            version,
            version,
        )
    try:
        pruned = store.prune(config.keep_versions)
    except ArtefactError as exc:
        log.warning("old versions not pruned: %s", exc)
        pruned = []
    if pruned:
        log.info("pruned %d old version(s)", len(pruned))
    log.info(
        "published %s (valid micro-F1 %.4f) in %.0f s",
        version,
        final.metrics["micro_f1"],
        time.monotonic() - started,
        extra={"version": version, "promoted": promotion["promoted"]},
    )
    return TrainResult(
        version,
        artefacts_dir / version,
        final.metrics,
        promoted=promotion["promoted"],
        reason=promotion["reason"],
        candidate=candidate,
    )
