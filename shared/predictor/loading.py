"""Which runtime serves a version: ``load_predictor(folder, backend, precision)``.

* ``onnx``: ONNX Runtime on the version's ``model.onnx`` (``model.int8.onnx`` for int8); no
  torch or transformers is imported. A version without that graph is refused with the reason.
* ``torch``: the torch runtime (int8: quantized at load), for development and for versions
  published before ONNX export.
* ``auto``: ``onnx`` where the version has the graph for the precision and onnxruntime is
  installed, else ``torch`` where torch is installed, else refused with the reason. The same
  setting then works in the development venv (any version) and in the lean API image, which
  has no torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal, cast, get_args

from shared.layout import ONNX_FILES, check_precision, missing_graph_reason
from shared.predictor.core import Predictor, TagPredictor
from shared.store import ArtefactError

# The one definition of the runtime choices (API_BACKEND, the CLIs' --backend).
Backend = Literal["auto", "onnx", "torch"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_backend(folder: Path, backend: str, precision: str) -> str:
    """``onnx`` or ``torch`` for this version; ArtefactError with the reason when neither."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    checked = check_precision(precision)
    has_graph = (folder / ONNX_FILES[checked]).is_file()
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
            if checked == "int8" and (folder / ONNX_FILES["fp32"]).is_file()
            else "retrain to publish it with a graph"
        )
        why = "" if backend == "onnx" else " and torch is not installed here"
        raise ArtefactError(
            f"{missing_graph_reason(folder, checked)}; API_BACKEND={backend} serves only "
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
    spinning: str | None = None,
) -> Predictor:
    """Load a published version with the runtime ``backend`` chooses (see the module doc).

    ``threads``: CPU threads of the runtime (0: its default, one per core); ``spinning``: what
    ONNX Runtime's idle threads do (None: its default, see ``onnx_runner.Spinning``)."""
    folder = Path(folder)
    if choose_backend(folder, backend, precision) == "onnx":
        from shared.predictor.onnx_runner import DEFAULT_SPINNING, Spinning, load_onnx_predictor

        chosen = cast(Spinning, spinning or DEFAULT_SPINNING)  # session_options checks it
        return load_onnx_predictor(
            folder,
            batch_size=batch_size,
            verify_checksums=verify_checksums,
            precision=precision,
            threads=threads,
            spinning=chosen,
        )
    from shared.predictor.torch_runner import load_torch_predictor, serve_quietly

    serve_quietly(threads)
    return load_torch_predictor(
        folder, batch_size=batch_size, verify_checksums=verify_checksums, precision=precision
    )


def backend_of(predictor: TagPredictor) -> str:
    """``onnx`` or ``torch``: the runtime a loaded predictor runs on."""
    return str(getattr(predictor, "backend", "torch"))
