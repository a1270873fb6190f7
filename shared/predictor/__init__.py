"""Texts to tags with a published version, on ONNX Runtime or torch: one predictor core
(:mod:`.core`), the step each runtime runs the network with (:mod:`.onnx_runner`,
:mod:`.torch_runner`), and the choice between them (:mod:`.loading`).

Importing this package imports neither torch nor transformers (the lean API image has
neither): only :mod:`.torch_runner` does, which the trainer imports itself.
"""

from shared.layout import PRECISIONS, Precision
from shared.predictor.core import Prediction, Predictor, TagPredictor, TagScore
from shared.predictor.loading import BACKENDS, Backend, backend_of, choose_backend, load_predictor

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "Precision",
    "Prediction",
    "Predictor",
    "TagPredictor",
    "TagScore",
    "backend_of",
    "choose_backend",
    "load_predictor",
]
