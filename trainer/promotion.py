"""The promotion gate: does ``LATEST`` move to the model a run just trained?

:func:`decide_promotion` is the gate (the new model against the one ``LATEST`` names);
:func:`settle_promotion` acts on it for a published version: a compare-and-swap of ``LATEST``
in the store (or, with the ``rollout`` setting, of the candidate beside it), re-running the gate
when another writer moved ``LATEST`` in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shared.data import Dataset
from shared.predictor.torch_runner import load_torch_predictor
from shared.store import CANARY, DEFAULT_SAMPLE, ArtefactError, ArtefactStore
from trainer.config import TrainConfig
from trainer.metrics import HEADLINE_METRICS, tagging_metrics

log = logging.getLogger(__name__)

# How often a run re-runs its gate when LATEST keeps moving under it before it gives up
# promoting (its version stays published; `versions use` can still promote it).
MAX_GATE_RUNS = 3


def decide_promotion(
    store: ArtefactStore,
    config: TrainConfig,
    valid_rows: Dataset,
    new_metrics: dict[str, Any],
    rows_name: str = "validation rows",
    fresh: tuple[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Only if the new model is not worse than the one ``LATEST`` names now, both scored on
    this run's validation rows (tags a model does not know count as its misses; ``rows_name``
    says in the reason which rows they are). The first model, and ``force_promote``, always
    move it; an unreadable ``LATEST`` never does (the run still publishes). Returns the
    decision as recorded in ``metrics.json``: ``promoted``, ``reason``, ``previous`` (what
    ``LATEST`` named) and the figures compared. ``fresh``: (n, the new model's metrics on the
    last n validation rows, the newest feedback slice): both models' figures on that slice
    alone are recorded and given in the reason too."""
    try:
        previous = store.latest()
    except ArtefactError as exc:
        if config.force_promote:
            return {"previous": None, "metric": "micro_f1", "promoted": True, "reason": "forced"}
        return {
            "previous": None,
            "metric": "micro_f1",
            "promoted": False,
            "reason": f"LATEST cannot be read, so there is nothing to compare against ({exc})",
        }
    decision: dict[str, Any] = {"previous": previous, "metric": "micro_f1"}
    if previous is None:
        return {**decision, "promoted": True, "reason": "first model in this directory"}
    if config.force_promote:
        return {**decision, "promoted": True, "reason": "forced"}
    try:
        incumbent = load_torch_predictor(store.version_path(previous))
    except Exception as exc:
        return {
            **decision,
            "promoted": True,
            "reason": f"LATEST {previous} cannot be loaded ({exc})",
        }
    scores = incumbent.scores(valid_rows.titles)
    old = tagging_metrics(scores, incumbent.threshold, valid_rows.tags, incumbent.labels)
    new, floor = new_metrics["micro_f1"], old["micro_f1"] - config.promotion_tolerance
    decision.update(
        previous_metrics={k: old[k] for k in (*HEADLINE_METRICS, "n")}, new_micro_f1=new
    )
    verdict = ">=" if new >= floor else "<"
    reason = (
        f"micro-F1 {new:.4f} {verdict} {old['micro_f1']:.4f} of {previous} on the same "
        f"{old['n']} {rows_name} (tolerance {config.promotion_tolerance})"
    )
    if fresh is not None:
        n, new_fresh = fresh
        old_fresh = tagging_metrics(
            scores[-n:], incumbent.threshold, valid_rows.tags[-n:], incumbent.labels
        )
        decision["fresh_slice"] = {
            "rows": n,
            "new": {k: new_fresh[k] for k in HEADLINE_METRICS},
            "previous": {k: old_fresh[k] for k in HEADLINE_METRICS},
        }
        reason += (
            f"; on the newest {n} feedback rows alone {new_fresh['micro_f1']:.4f} against "
            f"{old_fresh['micro_f1']:.4f}"
        )
    return {**decision, "promoted": new >= floor, "reason": reason}


def settle_promotion(
    store: ArtefactStore,
    version: str,
    decision: dict[str, Any],
    regate: Callable[[], dict[str, Any]],
    force: bool = False,
    rollout: str = "latest",
    sample: float = DEFAULT_SAMPLE,
    fraction: float = 0.1,
) -> dict[str, Any]:
    """Act on the gate's ``decision`` for the published ``version`` and record it in the store.

    ``LATEST`` moves only if it still names what the gate compared against
    (``decision["previous"]``); if another writer moved it meanwhile, ``regate()`` runs the
    gate again against the new incumbent, at most :data:`MAX_GATE_RUNS` times in all. With
    ``rollout`` shadow or canary, a version that passes becomes the candidate beside
    ``LATEST``'s instead (``sample``, and ``fraction`` for a canary; another candidate is
    replaced), on the same condition; the decision then says ``"candidate": rollout`` and
    ``promoted`` stays False (``LATEST`` did not move). The first model always moves ``LATEST``.
    Returns the final decision; a version neither promoted nor made the candidate is recorded
    as rejected with its reason.
    """
    try:
        for gate_run in range(1, MAX_GATE_RUNS + 1):
            if not decision["promoted"]:
                break
            as_candidate = rollout != "latest" and decision["previous"] is not None
            try:
                if as_candidate:
                    with store.lock():
                        if store.latest() == decision["previous"]:
                            store.set_candidate(
                                version,
                                rollout,
                                sample=sample,
                                fraction=fraction if rollout == CANARY else 0.0,
                                reason=decision["reason"],
                                replace=True,
                            )
                            return {**decision, "promoted": False, "candidate": rollout}
                elif store.promote(version, decision["previous"], decision["reason"], force=force):
                    return decision
            except ArtefactError as exc:  # it fails verification, or the lock timed out
                what = f"not made the {rollout} candidate" if as_candidate else "LATEST not moved"
                decision = {**decision, "promoted": False, "reason": f"{what}: {exc}"}
                break
            if gate_run == MAX_GATE_RUNS:
                decision = {
                    **decision,
                    "promoted": False,
                    "reason": f"LATEST moved under this run {MAX_GATE_RUNS} times while it was "
                    "being promoted; published without promoting",
                }
                break
            try:
                now = store.latest()
            except ArtefactError as exc:
                now = f"an unreadable LATEST ({exc})"
            log.warning(
                "LATEST moved from %s to %s while %s was being published; re-running the gate",
                decision["previous"],
                now,
                version,
            )
            decision = regate()
        store.reject(version, decision["reason"], decision["previous"])
        return decision
    finally:
        store.release_claim(version)
