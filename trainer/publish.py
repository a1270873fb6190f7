"""Publishing a trained model as a new version, with the provenance to trace it back.

Everything is written into the store's staging folder; :meth:`ArtefactStore.staging` then
writes the manifest (checksums plus the provenance handed to it), flushes and renames the
folder into place. Whether ``LATEST`` moves is the caller's call.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from transformers import PreTrainedTokenizerBase

from shared.data import Dataset
from shared.live import build_profile, save_profile
from shared.model import TaggerModel, TaggerSpec
from shared.predictor import Predictor
from shared.store import ArtefactStore, sha256_file
from trainer.config import TrainConfig
from trainer.export import export_onnx
from trainer.metrics import HEADLINE_METRICS
from trainer.report import write_report

METRICS_FILE = "metrics.json"
TRAIN_CONFIG_FILE = "train_config.yaml"


@dataclass(frozen=True)
class RunInputs:
    """What a run was given: its resolved config and the files it read."""

    config: TrainConfig
    config_path: Path | None
    dataset_path: Path
    valid_path: Path | None
    feedback: dict[str, Any] | None = None  # the feedback rows used (trainer.feedback_data)


def publish(
    store: ArtefactStore,
    model: TaggerModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: TaggerSpec,
    run_metrics: dict[str, Any],
    inputs: RunInputs,
    recipe: str,
    valid_rows: Dataset,
    profile: dict[str, Any] | None = None,
) -> str:
    """Write the model, its tokenizer, its ONNX graphs, ``run_metrics``, the model card, the
    resolved config, the reference ``profile`` (``profile.json``, :mod:`shared.live`) and the
    manifest into a new version; return its name. ``recipe`` is the card's one-sentence
    description of how the model was trained; ``valid_rows`` are the rows the ONNX graphs are
    verified on (:func:`trainer.export.export_onnx`; a graph that does not reproduce the model
    raises ExportError and nothing is published)."""
    config = inputs.config
    valid_metrics = run_metrics["valid"]
    baseline = run_metrics.get("baseline")
    key_metrics = (*HEADLINE_METRICS, "n")
    # The version's provenance, beside the checksums in its manifest; ``created`` is stamped
    # when the manifest is written.
    provenance = {
        "base_model": config.base_model,
        "config": config.public_dict(),  # the recipe: `tagger quickstart` finds its versions
        "data": {
            "train": _file_fingerprint(inputs.dataset_path),
            "valid": _file_fingerprint(inputs.valid_path) if inputs.valid_path else None,
        },
        "libraries": _library_versions(),
        "git_commit": _git_commit(),
        "metrics": {k: valid_metrics[k] for k in key_metrics},
        "baseline_metrics": {k: baseline[k] for k in key_metrics} if baseline else None,
        "threshold": spec.threshold,
        "feedback": inputs.feedback,
    }
    # The claim stays held until the caller records the promotion decision.
    with store.staging(keep_claim=True, manifest_extra=provenance) as (version, folder):
        model.save(folder)
        tokenizer.save_pretrained(str(folder))
        spec.save(folder)
        run_metrics = {
            **run_metrics,
            "onnx": export_onnx(model, tokenizer, spec, folder, valid_rows),
        }
        _write_json(folder / METRICS_FILE, run_metrics)
        write_report(
            folder,
            version,
            run_metrics,
            {
                "base_model": config.base_model,
                "train_name": inputs.dataset_path.name,
                "train_sha256": sha256_file(inputs.dataset_path),
                "valid_name": inputs.valid_path.name if inputs.valid_path else None,
                "valid_fraction": config.valid_fraction,
                "feedback": inputs.feedback,
                "seed": config.seed,
                "max_length": config.max_length,
                "score": spec.score,
                "recipe": recipe,
            },
        )
        resolved = {
            "config": config.public_dict(),
            "config_file": str(inputs.config_path) if inputs.config_path else None,
            "dataset": str(inputs.dataset_path),
            "valid_dataset": str(inputs.valid_path) if inputs.valid_path else None,
        }
        (folder / TRAIN_CONFIG_FILE).write_text(yaml.safe_dump(resolved, sort_keys=False))
        if profile is not None:
            save_profile(folder, profile)
    return version


def reference_profile(
    predictor: Predictor,
    rows: Dataset,
    scores: np.ndarray,
    threshold: float,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """The version's reference profile on its validation ``rows``, from the ``scores`` and
    ``metrics`` validation computed at ``threshold`` (only the token counts are new: a
    tokenizer pass, no model pass)."""
    tokens, unknown = predictor.token_counts(rows.titles)
    headline = {key: metrics[key] for key in HEADLINE_METRICS}
    return build_profile(scores, predictor.labels, threshold, rows.tags, tokens, unknown, headline)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _file_fingerprint(path: Path) -> dict[str, Any]:
    return {"name": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}


def _library_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
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
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
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
