"""The ONNX Runtime predictor: the artefact's ``model.onnx`` (or ``model.int8.onnx``) and its
``tokenizer.json``, with no torch and no transformers.

The graph holds the whole network (encoder, mean pooling, head and the score function), so
this class only tokenizes, pads, runs the graph and formats the answer with the code the torch
:class:`shared.predictor.Predictor` uses (:mod:`shared.prediction`, :mod:`shared.text`).
The trainer checks at publish time that both give the same scores (``trainer/export.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from shared.backends import ONNX_FILES, missing_graph_reason
from shared.prediction import Prediction, length_grouped, to_predictions
from shared.spec import TaggerSpec
from shared.store import MANIFEST_FILE, ArtefactError, read_manifest, verify
from shared.text import normalize_text

TOKENIZER_FILE = "tokenizer.json"


# No usage telemetry (and no warning about where to keep its id in a read-only container).
if hasattr(ort, "disable_telemetry_events"):
    ort.disable_telemetry_events()


def session_options(threads: int = 0) -> ort.SessionOptions:
    """How every graph is run; each choice measured in docs/benchmarks.md (ONNX Runtime)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads  # 0: one per physical core
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # Idle intra-op threads sleep instead of spinning: the API shares the cores with its event
    # loop (and the load generator in the bench); spinning threads took CPU they need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_tokenizer(folder: Path, max_length: int) -> tuple[Tokenizer, int]:
    """The artefact's fast tokenizer, set up as the transformers tokenizer runs it in
    :meth:`Predictor.encode`: special tokens added, cut at ``max_length``, no padding (done per
    batch here). Returns it with the pad token id."""
    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    pad_id = 0
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        pad_token = json.loads(config_path.read_text()).get("pad_token")
        found = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
        if found is not None:
            pad_id = int(found)
    return tokenizer, pad_id


def read_labels(folder: Path) -> list[str]:
    """Tag names in output order, from ``config.json``'s ``id2label``."""
    id2label = json.loads((folder / "config.json").read_text()).get("id2label") or {}
    try:
        return [str(id2label[str(i)]) for i in range(len(id2label))]
    except KeyError as exc:
        raise ArtefactError(f"{folder / 'config.json'}: id2label is not 0..n-1 ({exc})") from exc


class OnnxPredictor:
    """Scores texts with one ONNX Runtime session; safe to call from one thread at a time."""

    backend = "onnx"

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        spec: TaggerSpec,
        labels: list[str],
        pad_id: int = 0,
        batch_size: int = 64,
        precision: str = "fp32",
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.spec = spec
        self.labels = labels
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.precision = precision
        self._inputs = {i.name for i in session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise ArtefactError(f"the ONNX graph lacks the inputs {sorted(missing)}")
        width = session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(labels):
            raise ArtefactError(
                f"the ONNX graph scores {width} tags but config.json names {len(labels)}"
            )

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        batch_size: int = 64,
        verify_checksums: bool = True,
        precision: str = "fp32",
        threads: int = 0,
    ) -> OnnxPredictor:
        """Load a published version folder's graph for ``precision`` (``model.onnx`` or
        ``model.int8.onnx``), checking the manifest first unless told not to."""
        if precision not in ONNX_FILES:
            raise ValueError(f"precision must be one of {', '.join(ONNX_FILES)}, not {precision!r}")
        folder = Path(folder)
        if verify_checksums:
            verify(folder)
        graph = folder / ONNX_FILES[precision]
        if not graph.is_file():
            raise ArtefactError(missing_graph_reason(folder, precision))
        # A published version's graph must be one its manifest covers (a trainer's staging
        # folder has no manifest yet).
        if (folder / MANIFEST_FILE).is_file() and graph.name not in read_manifest(folder)["files"]:
            raise ArtefactError(f"{folder.name}: {graph.name} is not listed in its manifest")
        spec = TaggerSpec.load(folder)
        tokenizer, pad_id = load_tokenizer(folder, spec.max_length)
        session = ort.InferenceSession(
            str(graph), session_options(threads), providers=["CPUExecutionProvider"]
        )
        return cls(
            session,
            tokenizer,
            spec,
            read_labels(folder),
            pad_id=pad_id,
            batch_size=batch_size,
            precision=precision,
        )

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (normalised, truncated to the model's maximum length)."""
        encoded = self.tokenizer.encode_batch([normalize_text(t) for t in texts])
        return [e.ids for e in encoded]

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Probability of every label for every text, shape ``(len(texts), len(labels))``;
        texts run in batches of similar length, as :meth:`Predictor.scores` runs them."""
        return self._scores_of(self.encode(texts))

    def _scores_of(self, ids: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        for rows in length_grouped([len(x) for x in ids], self.batch_size):
            feed = self._feed([ids[i] for i in rows])
            out[rows] = self.session.run(None, feed)[0]
        return out

    def predict(self, texts: Sequence[str], top_k: int = 5) -> list[Prediction]:
        """Top ``top_k`` tags with scores, and the decided tags, for each text in order."""
        ids = self.encode(texts)
        return to_predictions(
            self._scores_of(ids), self.labels, self.threshold, top_k, [len(x) for x in ids]
        )

    def _feed(self, sequences: list[list[int]]) -> dict[str, Any]:
        width = max(len(s) for s in sequences)
        input_ids = np.full((len(sequences), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), width), dtype=np.int64)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        return feed
