"""The promotion gate: does ``LATEST`` move to the model a run just trained?"""

from __future__ import annotations

from typing import Any

from shared.artefacts import ArtefactStore
from shared.data import Dataset
from shared.predictor import Predictor
from trainer.config import TrainConfig
from trainer.metrics import HEADLINE_METRICS, tagging_metrics


def decide_promotion(
    store: ArtefactStore, config: TrainConfig, valid_rows: Dataset, new_metrics: dict[str, Any]
) -> dict[str, Any]:
    """Only if the new model is not worse than the one ``LATEST`` names now, both scored on
    this run's validation rows (tags a model does not know count as its misses). The first
    model, and ``force_promote``, always move it. Returns the decision as recorded in
    ``metrics.json``: ``promoted``, ``reason``, ``previous`` and the figures compared."""
    previous = store.latest()
    decision: dict[str, Any] = {"previous": previous, "metric": "micro_f1"}
    if previous is None:
        return {**decision, "promoted": True, "reason": "first model in this directory"}
    if config.force_promote:
        return {**decision, "promoted": True, "reason": "forced"}
    try:
        incumbent = Predictor.from_folder(store.version_path(previous))
    except Exception as exc:
        return {
            **decision,
            "promoted": True,
            "reason": f"LATEST {previous} cannot be loaded ({exc})",
        }
    old = tagging_metrics(
        incumbent.scores(valid_rows.titles), incumbent.threshold, valid_rows.tags, incumbent.labels
    )
    new, floor = new_metrics["micro_f1"], old["micro_f1"] - config.promotion_tolerance
    decision.update(
        previous_metrics={k: old[k] for k in (*HEADLINE_METRICS, "n")}, new_micro_f1=new
    )
    verdict = ">=" if new >= floor else "<"
    reason = (
        f"micro-F1 {new:.4f} {verdict} {old['micro_f1']:.4f} of {previous} on the same "
        f"{old['n']} validation rows (tolerance {config.promotion_tolerance})"
    )
    return {**decision, "promoted": new >= floor, "reason": reason}
