"""What a published version holds for a runtime to read: the ONNX graph of each precision, the
tokenizer, the config with the tag names, the training report.

Plain facts and the reason a graph is missing, with no torch and no import from the predictor,
so the runtime chooser, both runtimes and the trainer's exporter name these files alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args

# The one definition of the serving precisions; int8 is dynamic quantization of the linear
# layers (torch's at load, or the trainer's quantized graph for ONNX Runtime).
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

ONNX_FILES: dict[Precision, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
TOKENIZER_FILE = "tokenizer.json"  # the fast tokenizer ONNX Runtime serves with
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"  # names the pad token
CONFIG_FILE = "config.json"  # the encoder's config; the tags in output order in id2label
METRICS_FILE = "metrics.json"  # the training report; why int8 was left out under onnx.int8


def check_precision(precision: str) -> Precision:
    """``precision`` as a :data:`Precision`; ValueError naming the choices otherwise."""
    for known in PRECISIONS:
        if precision == known:
            return known
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def missing_graph_reason(folder: Path, precision: Precision) -> str:
    """Why ``folder`` has no graph for ``precision``, in words an operator can act on."""
    name = ONNX_FILES[precision]
    if precision == "int8" and (folder / ONNX_FILES["fp32"]).is_file():
        why = ""
        try:
            report = json.loads((folder / METRICS_FILE).read_text()).get("onnx", {})
            why = str(report.get("int8", {}).get("reason") or "")
        except (OSError, ValueError, AttributeError):
            pass
        return f"{folder.name} has no {name}: the trainer left int8 out ({why or 'no reason'})"
    return f"{folder.name} has no {name}: it was published before the trainer exported ONNX"
