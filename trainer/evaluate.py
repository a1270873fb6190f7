"""``python -m trainer.evaluate``: score a published version on a dataset; print metrics JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared.predictor import BACKENDS, PRECISIONS, load_predictor
from trainer.cli import run_main, setup_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.evaluate",
        description=(
            "Print micro_f1, macro_f1, p_at_1, recall_at_5 and n of an artefact on a dataset "
            "(any format the trainer reads) as one JSON object. Tags the model does not know "
            "count as misses; with one tag per question p_at_1 is the accuracy."
        ),
    )
    parser.add_argument("--artefact", type=Path, required=True, help="a version folder")
    parser.add_argument("--dataset", type=Path, required=True, help="file to score")
    parser.add_argument(
        "--first-tag-only", action="store_true", help="keep only each question's first tag"
    )
    parser.add_argument("--per-tag", action="store_true", help="include per-tag figures")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="int8: dynamic quantization of the linear layers, as API_PRECISION=int8 serves",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="runtime that scores, as API_BACKEND: torch (the reference), onnx (the version's "
        "model.onnx or model.int8.onnx, as the API serves it), auto",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    from shared.data import read_dataset
    from trainer.metrics import tagging_metrics

    dataset = read_dataset(args.dataset, first_tag_only=args.first_tag_only)
    predictor = load_predictor(args.artefact, backend=args.backend, precision=args.precision)
    scores = predictor.scores(dataset.titles)
    metrics = tagging_metrics(
        scores, predictor.threshold, dataset.tags, predictor.labels, per_tag=args.per_tag
    )
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    run_main(main)
