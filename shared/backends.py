"""Which runtime serves a version: ``load_predictor(folder, backend, precision)``.

* ``onnx``: ONNX Runtime on the version's ``model.onnx`` (``model.int8.onnx`` for int8); no
  torch or transformers is imported. A version without that graph is refused with the reason.
* ``torch``: the torch :class:`shared.predictor.Predictor` (int8: quantized at load), for
  development and for versions published before ONNX export.
* ``auto``: ``onnx`` where the version has the graph for the precision and onnxruntime is
  installed, else ``torch`` where torch is installed, else refused with the reason. The same
  setting then works in the development venv (any version) and in the lean API image, which
  has no torch.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from shared.prediction import TagPredictor
from shared.store import ArtefactError

BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("fp32", "int8")
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_backend(folder: Path, backend: str, precision: str) -> str:
    """``onnx`` or ``torch`` for this version; ArtefactError with the reason when neither."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    has_graph = (folder / ONNX_FILES[precision]).is_file()
    has_torch = installed("torch") and installed("transformers")
    if backend == "torch" or (backend == "auto" and not (has_graph and installed("onnxruntime"))):
        if has_torch:
            return "torch"
        if backend == "torch":
            raise ArtefactError(
                "API_BACKEND=torch, but torch is not installed here (the lean API image "
                "serves ONNX graphs only): use API_BACKEND=onnx or auto"
            )
    if not has_graph:
        hint = (
            "serve it with API_PRECISION=fp32"
            if precision == "int8" and (folder / ONNX_FILES["fp32"]).is_file()
            else "retrain to publish it with a graph"
        )
        why = "" if backend == "onnx" else " and torch is not installed here"
        raise ArtefactError(
            f"{missing_graph_reason(folder, precision)}; API_BACKEND={backend} serves only "
            f"ONNX graphs{why}: {hint}, or serve it with API_BACKEND=torch where torch is "
            "installed"
        )
    if not installed("onnxruntime"):
        raise ArtefactError("API_BACKEND=onnx, but onnxruntime is not installed here")
    return "onnx"


def load_predictor(
    folder: str | Path,
    backend: str = "auto",
    precision: str = "fp32",
    verify_checksums: bool = True,
    threads: int = 0,
    batch_size: int = 64,
) -> TagPredictor:
    """Load a published version with the runtime ``backend`` chooses (see the module doc).

    ``threads``: CPU threads of the runtime (0: its default, one per core)."""
    folder = Path(folder)
    if choose_backend(folder, backend, precision) == "onnx":
        from shared.onnx_predictor import OnnxPredictor

        return OnnxPredictor.from_folder(
            folder,
            batch_size=batch_size,
            verify_checksums=verify_checksums,
            precision=precision,
            threads=threads,
        )
    import torch
    from transformers.utils import logging as hf_logging

    from shared.predictor import Predictor

    hf_logging.set_verbosity_error()  # load reports and progress bars are not news here
    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)
    return Predictor.from_folder(
        folder, batch_size=batch_size, verify_checksums=verify_checksums, precision=precision
    )


def backend_of(predictor: TagPredictor) -> str:
    """``onnx`` or ``torch``: the runtime a loaded predictor runs on."""
    return str(getattr(predictor, "backend", "torch"))


def missing_graph_reason(folder: Path, precision: str) -> str:
    """Why ``folder`` has no graph for ``precision``, in words an operator can act on."""
    name = ONNX_FILES[precision]
    if precision == "int8" and (folder / ONNX_FILES["fp32"]).is_file():
        why = ""
        try:
            report = json.loads((folder / "metrics.json").read_text()).get("onnx", {})
            why = str(report.get("int8", {}).get("reason") or "")
        except (OSError, ValueError, AttributeError):
            pass
        return f"{folder.name} has no {name}: the trainer left int8 out ({why or 'no reason'})"
    return f"{folder.name} has no {name}: it was published before the trainer exported ONNX"
