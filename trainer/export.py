"""Export a trained model to ONNX and prove the graphs right before they are published.

``model.onnx`` is the whole network in one graph: encoder, masked mean pooling, head and the
score function (sigmoid or softmax, as ``tagger.json`` says), inputs ``input_ids`` and
``attention_mask`` (int64, dynamic batch and sequence axes), output ``scores`` (float32, one
column per tag in ``config.json``'s ``id2label`` order). It is written with torch's TorchScript
exporter (``dynamo=False``, opset 17). ``model.int8.onnx`` is ONNX Runtime's dynamic int8
quantization of it, with the first layer's feed-forward output projection kept fp32 as the
torch int8 path keeps it.

Both are verified on the run's validation rows before anything is published: the fp32 graph's
scores must equal torch's within ``FP32_MAX_ABS_DIFF`` (else :class:`ExportError` stops the
run), and int8 must keep micro-F1 within ``INT8_MAX_F1_DROP`` of fp32 (else it is left out and
``metrics.json`` says why under ``onnx.int8``).
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf.message import DecodeError
from torch import nn
from transformers import PreTrainedTokenizerBase

from shared.data import Dataset
from shared.layout import ONNX_FILES
from shared.model import TaggerModel
from shared.predictor.torch_runner import INT8_KEEP_FP32, torch_predictor
from shared.spec import TaggerSpec
from trainer.metrics import tagging_metrics

log = logging.getLogger(__name__)

OPSET = 17
FP32_MAX_ABS_DIFF = 1e-4
INT8_MAX_F1_DROP = 0.005
# ONNX Runtime's dynamic quantization with one scale per output channel of each weight: with
# one scale per tensor the tiny test model lost 0.072 micro-F1, per channel none (and see
# docs/benchmarks.md for the real model).
INT8_OPTIONS: dict[str, Any] = {"per_channel": True}
# Room the quantizer needs beside the fp32 graph, per byte of it: its shape-inferred copy (1x)
# and the int8 graph (about 0.27x), with a margin.
SCRATCH_PER_GRAPH_BYTE = 1.5


class ExportError(RuntimeError):
    """The ONNX graph does not reproduce the torch model; nothing is published."""


class _ScoreGraph(nn.Module):
    """What the graph computes: the network's logits through the score function."""

    def __init__(self, model: TaggerModel, score: str) -> None:
        super().__init__()
        self.model = model
        self.score = score

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids, attention_mask)
        return torch.sigmoid(logits) if self.score == "sigmoid" else logits.softmax(-1)


def int8_excluded_nodes(graph: Path) -> list[str]:
    """The MatMul nodes of the layers in ``INT8_KEEP_FP32`` (named after the torch modules)."""
    import onnx

    wanted = ["/" + name.replace(".", "/").replace("/layer/", "/layer.") for name in INT8_KEEP_FP32]
    nodes = onnx.load(str(graph), load_external_data=False).graph.node
    return [
        n.name
        for n in nodes
        if n.op_type == "MatMul" and any(n.name.startswith(f"/model{w}/") for w in wanted)
    ]


def export_onnx(
    model: TaggerModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: TaggerSpec,
    folder: Path,
    rows: Dataset,
    int8: bool = True,
) -> dict[str, Any]:
    """Write ``model.onnx`` (and ``model.int8.onnx`` where it keeps accuracy) into ``folder``,
    which already holds the tokenizer, ``config.json`` and ``tagger.json``; verify them on
    ``rows``. Returns the report stored in ``metrics.json`` under ``onnx``."""
    started = time.monotonic()
    was_training = model.training
    model.train(False)
    try:
        fp32_path = folder / ONNX_FILES["fp32"]
        _export(model, tokenizer, spec, fp32_path)
        expected = torch_predictor(model, tokenizer, spec).scores(rows.titles)
    finally:
        model.train(was_training)
    from shared.predictor.onnx_runner import load_onnx_predictor

    fp32 = load_onnx_predictor(folder, verify_checksums=False)
    got = fp32.scores(rows.titles)
    diff = float(np.abs(got - expected).max()) if len(rows) else 0.0
    if not diff <= FP32_MAX_ABS_DIFF:  # also catches NaN
        raise ExportError(
            f"the ONNX graph's scores differ from torch's by up to {diff:.2e} on the "
            f"{len(rows)} validation rows (allowed {FP32_MAX_ABS_DIFF:.0e}); nothing published"
        )
    labels = fp32.labels
    fp32_f1 = tagging_metrics(got, spec.threshold, rows.tags, labels)["micro_f1"]
    report: dict[str, Any] = {
        "opset": OPSET,
        "exporter": f"torch.onnx.export (TorchScript, torch {torch.__version__})",
        "inputs": ["input_ids", "attention_mask"],
        "output": f"scores ({spec.score})",
        "fp32": {
            "file": fp32_path.name,
            "max_abs_diff_vs_torch": diff,
            "micro_f1": fp32_f1,
            "n": len(rows),
        },
    }
    if int8:
        report["int8"] = _quantize_and_check(folder, spec, rows, labels, fp32_f1)
    report["seconds"] = round(time.monotonic() - started, 1)
    log.info(
        "ONNX export: fp32 max |diff| vs torch %.1e on %d rows; int8 %s (%.1f s)",
        diff,
        len(rows),
        "kept" if report.get("int8", {}).get("published") else "left out",
        report["seconds"],
    )
    return report


def _export(
    model: TaggerModel, tokenizer: PreTrainedTokenizerBase, spec: TaggerSpec, path: Path
) -> None:
    graph = _ScoreGraph(model, spec.score).train(False)
    example = tokenizer(
        ["How do I merge two dictionaries in Python?", "sql join"],
        padding=True,
        truncation=True,
        max_length=spec.max_length,
        return_tensors="pt",
    )
    dynamic = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The TorchScript exporter warns about traced Python branches and its own deprecation;
        # the verification below is what proves the graph right.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example["input_ids"], example["attention_mask"]),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input_ids", "attention_mask"],
            output_names=["scores"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "scores": {0: "batch"}},
        )


def _check_scratch_room(source: Path) -> None:
    """ONNX Runtime's quantizer writes a shape-inferred copy of the graph beside it and reads it
    back; onnx's writer does not report a full disk, so a truncated copy would surface as a
    protobuf ``DecodeError`` deep inside it. Say so plainly before starting instead."""
    need = source.stat().st_size * SCRATCH_PER_GRAPH_BYTE
    free = shutil.disk_usage(source.parent).free
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: int8 quantization needs about {need / 2**20:.0f} MiB "
            f"beside {source.name} (its scratch copy and the int8 graph), "
            f"{free / 2**20:.0f} MiB free",
            str(source.parent),
        )


def _quantize_and_check(
    folder: Path, spec: TaggerSpec, rows: Dataset, labels: list[str], fp32_f1: float
) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from shared.predictor.onnx_runner import load_onnx_predictor

    source, target = folder / ONNX_FILES["fp32"], folder / ONNX_FILES["int8"]
    excluded = int8_excluded_nodes(source)
    _check_scratch_room(source)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to run shape pre-processing first: not needed here
    try:
        quantize_dynamic(
            source, target, weight_type=QuantType.QInt8, nodes_to_exclude=excluded, **INT8_OPTIONS
        )
    except DecodeError as exc:
        free = shutil.disk_usage(folder).free / 2**20
        raise OSError(
            errno.ENOSPC,
            f"No space left on device, most likely: ONNX Runtime's quantizer could not read back "
            f"its shape-inferred copy of {source.name} ({free:.0f} MiB free now)",
            str(folder),
        ) from exc
    finally:
        root.setLevel(level)
    int8 = load_onnx_predictor(folder, verify_checksums=False, precision="int8")
    int8_f1 = tagging_metrics(int8.scores(rows.titles), spec.threshold, rows.tags, labels)[
        "micro_f1"
    ]
    drop = fp32_f1 - int8_f1
    entry: dict[str, Any] = {
        "file": target.name,
        "micro_f1": int8_f1,
        "micro_f1_drop_vs_fp32": round(drop, 6),
        "kept_fp32": excluded,
        "options": INT8_OPTIONS,
        "published": True,
        "reason": None,
    }
    if drop > INT8_MAX_F1_DROP:
        target.unlink()
        entry["published"] = False
        entry["reason"] = (
            f"int8 micro-F1 {int8_f1:.4f} is {drop:.4f} below fp32's {fp32_f1:.4f} on the "
            f"{len(rows)} validation rows (allowed {INT8_MAX_F1_DROP})"
        )
        log.warning("model.int8.onnx left out: %s", entry["reason"])
    return entry
