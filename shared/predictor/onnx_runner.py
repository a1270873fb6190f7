"""The ONNX Runtime runtime: the artefact's ``model.onnx`` (or ``model.int8.onnx``) and its
``tokenizer.json``, with no torch and no transformers.

The graph holds the whole network (encoder, mean pooling, head and the score function), so
the runner only feeds it a padded batch; tokenizing, padding and formatting are the core's, as
for torch. The trainer checks at publish time that both give the same scores
(``trainer/export.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from shared.layout import (
    CONFIG_FILE,
    ONNX_FILES,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    check_precision,
    missing_graph_reason,
)
from shared.predictor.core import Predictor
from shared.spec import TaggerSpec
from shared.store import MANIFEST_FILE, ArtefactError, read_manifest, verify

# No usage telemetry (and no warning about where to keep its id in a read-only container).
if hasattr(ort, "disable_telemetry_events"):
    ort.disable_telemetry_events()


# What ONNX Runtime's idle intra-op threads do (API_ONNX_SPINNING; measured in
# docs/benchmarks.md, "Single requests"):
# * off: sleep as soon as they are idle, also between the operators of one forward pass;
# * in-run: spin between the operators of a pass, sleep once it ends (session.force_spinning_stop),
#   so no thread spins between passes, when the event loop needs the cores;
# * on: ONNX Runtime's default, spinning a while after each pass too.
Spinning = Literal["off", "in-run", "on"]
SPINNING: tuple[Spinning, ...] = get_args(Spinning)
DEFAULT_SPINNING: Spinning = "in-run"


def session_options(threads: int = 0, spinning: Spinning = DEFAULT_SPINNING) -> ort.SessionOptions:
    """How every graph is run; each choice measured in docs/benchmarks.md (ONNX Runtime)."""
    if spinning not in SPINNING:
        raise ValueError(f"spinning {spinning!r}: expected one of {', '.join(SPINNING)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads  # 0: one per physical core
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "0" if spinning == "off" else "1"
    )
    if spinning == "in-run":
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class JsonTokenizer:
    """The core's tokenizer step on the artefact's ``tokenizer.json`` (the ``tokenizers``
    library), set up as transformers runs it for torch: special tokens added, cut at
    ``max_length``, no padding (the core pads per batch). The same ids, checked in the tests."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_id: int = 0) -> None:
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.unk_id = unknown_token_id(tokenizer)
        tokenizer.no_padding()
        self._cut_at(max_length)

    @classmethod
    def from_folder(cls, folder: Path, max_length: int) -> JsonTokenizer:
        """The folder's tokenizer, with the pad token its ``tokenizer_config.json`` names."""
        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        pad_id = 0
        config_path = folder / TOKENIZER_CONFIG_FILE
        if config_path.is_file():
            pad_token = json.loads(config_path.read_text()).get("pad_token")
            found = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
            if found is not None:
                pad_id = int(found)
        return cls(tokenizer, max_length, pad_id)

    def encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids, special tokens added, cut at ``max_length``."""
        if max_length != self._max_length:  # set at load; a predictor always asks the same
            self._cut_at(max_length)
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def _cut_at(self, max_length: int) -> None:
        self.tokenizer.enable_truncation(max_length=max_length)
        self._max_length = max_length


def unknown_token_id(tokenizer: Tokenizer) -> int | None:
    """The id of the tokenizer model's unknown token (WordPiece and BPE name it, Unigram gives
    its id), or None when it has none."""
    model = tokenizer.model
    token = getattr(model, "unk_token", None)
    if isinstance(token, str):
        found = tokenizer.token_to_id(token)
        return int(found) if found is not None else None
    unk_id = getattr(model, "unk_id", None)
    return unk_id if isinstance(unk_id, int) else None


class OnnxRunner:
    """The core's network step on one ONNX Runtime session; one thread at a time."""

    backend = "onnx"

    def __init__(self, session: ort.InferenceSession, n_labels: int) -> None:
        self.session = session
        self._inputs = {i.name for i in session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise ArtefactError(f"the ONNX graph lacks the inputs {sorted(missing)}")
        width = session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != n_labels:
            raise ArtefactError(
                f"the ONNX graph scores {width} tags but {CONFIG_FILE} names {n_labels}"
            )

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The graph's scores of a padded batch."""
        feed: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        return np.asarray(self.session.run(None, feed)[0])


def read_labels(folder: Path) -> list[str]:
    """Tag names in output order, from ``config.json``'s ``id2label``."""
    id2label = json.loads((folder / CONFIG_FILE).read_text()).get("id2label") or {}
    try:
        return [str(id2label[str(i)]) for i in range(len(id2label))]
    except KeyError as exc:
        raise ArtefactError(f"{folder / CONFIG_FILE}: id2label is not 0..n-1 ({exc})") from exc


def load_onnx_predictor(
    folder: str | Path,
    batch_size: int = 64,
    verify_checksums: bool = True,
    precision: str = "fp32",
    threads: int = 0,
    spinning: Spinning = DEFAULT_SPINNING,
) -> Predictor:
    """Load a published version folder's graph for ``precision`` (``model.onnx`` or
    ``model.int8.onnx``), checking the manifest first unless told not to. ``threads``: CPU
    threads of the session (0: one per physical core); ``spinning``: what its idle threads do."""
    checked = check_precision(precision)
    folder = Path(folder)
    if verify_checksums:
        verify(folder)
    graph = folder / ONNX_FILES[checked]
    if not graph.is_file():
        raise ArtefactError(missing_graph_reason(folder, checked))
    # A published version's graph must be one its manifest covers (a trainer's staging
    # folder has no manifest yet).
    if (folder / MANIFEST_FILE).is_file() and graph.name not in read_manifest(folder)["files"]:
        raise ArtefactError(f"{folder.name}: {graph.name} is not listed in its manifest")
    spec = TaggerSpec.load(folder)
    labels = read_labels(folder)
    tokenizer = JsonTokenizer.from_folder(folder, spec.max_length)
    session = ort.InferenceSession(
        str(graph), session_options(threads, spinning), providers=["CPUExecutionProvider"]
    )
    return Predictor(
        OnnxRunner(session, len(labels)),
        tokenizer,
        spec,
        labels,
        batch_size=batch_size,
        precision=checked,
    )
