"""``make bench-train``: what each lever of the training recipe does to the speed of a step.

Times ``--steps`` optimizer steps of the trainer's own :class:`trainer.step.TrainStep` on real
titles (the first rows of ``--data``, in the trainer's length-grouped batches), after
``--warmup`` untimed ones, once per ``--variant``: the default recipe (conf/train.yaml) with some
keys changed, e.g. ``freeze_layers=3`` or ``batch_size=64,lr_encoder=2e-4``. Two more keys are
levers outside the recipe: ``compile=1`` (``torch.compile`` of the network, its compilation
timed apart) and ``fused=1`` (AdamW's fused kernel). Each variant starts from the pretrained
weights. Prints rows per second and the median step per variant. Quality is not measured here:
a lever that is fast enough is then trained in full (``make train``) and compared on
``data/sample/valid.tsv``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from transformers import AutoTokenizer

from shared.data import read_dataset
from shared.model import TaggerModel
from shared.predictor.torch_runner import TransformersTokenizer, pad_batch
from trainer.config import DEFAULT_CONFIG, TrainConfig, load_config
from trainer.fit import length_grouped_batches, soft_targets
from trainer.recipe import resolve_base_model, seed_everything, use_bf16
from trainer.step import TrainStep, freeze, loss_targets

BENCH_ONLY = ("compile", "fused")


def parse_variant(text: str) -> tuple[dict[str, Any], dict[str, bool]]:
    overrides: dict[str, Any] = {}
    levers = dict.fromkeys(BENCH_ONLY, False)
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        if key in BENCH_ONLY:
            levers[key] = value not in ("0", "false", "")
        else:
            overrides[key] = value
    return overrides, levers


def run_variant(
    text: str, args: argparse.Namespace, titles: list[str], tags: list[list[str]]
) -> dict[str, Any]:
    overrides, levers = parse_variant(text)
    recipe = load_config(Path(args.config)).model_dump()
    config = TrainConfig(**{**recipe, "train_precision": args.precision, **overrides})
    seed_everything(config.seed)
    torch.set_num_threads(config.threads or args.default_threads)
    base = resolve_base_model(config.base_model)
    labels = sorted({t for row in tags for t in row})
    tokenizer = TransformersTokenizer(AutoTokenizer.from_pretrained(str(base)))
    ids = tokenizer.encode(titles, config.max_length)
    targets = loss_targets(soft_targets(tags, labels), config.loss)
    model = TaggerModel.from_base(base, labels, dropout=config.dropout)
    freeze(model, config)
    model.train()
    network: torch.nn.Module = model
    bf16 = use_bf16(config.train_precision)
    total = args.warmup + args.steps
    step = TrainStep(model, network, config, total_steps=total, bf16=bf16)
    if levers["fused"]:
        groups = [
            {k: v for k, v in g.items() if k != "initial_lr"} for g in step.optimizer.param_groups
        ]
        step.optimizer = torch.optim.AdamW(groups, fused=True)
        step.schedule = torch.optim.lr_scheduler.LambdaLR(step.optimizer, lambda s: 1.0)
    compile_seconds = 0.0
    if levers["compile"]:
        step.network = cast(torch.nn.Module, torch.compile(model, dynamic=True))
    batches = length_grouped_batches(
        [len(x) for x in ids], config.batch_size, np.random.default_rng(config.seed)
    )[:total]
    times, rows = [], 0
    for i, batch in enumerate(batches):
        input_ids, mask = pad_batch([ids[j] for j in batch], tokenizer.pad_id)
        started = time.perf_counter()
        step(input_ids, mask, targets[batch])
        elapsed = time.perf_counter() - started
        if i < args.warmup:
            compile_seconds += elapsed if levers["compile"] else 0.0
            continue
        times.append(elapsed)
        rows += len(batch)
    return {
        "variant": text or "default",
        "precision": "bf16" if bf16 else "fp32",
        "rows_per_s": rows / sum(times),
        "median_step_ms": 1000 * statistics.median(times),
        "warmup_s": compile_seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/sample/train.tsv")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rows", type=int, default=4000, help="titles batches are drawn from")
    parser.add_argument("--variant", action="append", default=None)
    args = parser.parse_args(argv)
    args.default_threads = torch.get_num_threads()
    data = read_dataset(args.data)
    titles, tags = data.titles[: args.rows], data.tags[: args.rows]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.steps} timed steps after {args.warmup}"
    )
    print(f"{'variant':40} {'precision':>9} {'rows/s':>8} {'step ms':>8} {'warmup s':>9}")
    variants = args.variant or [""]
    # The first variant of a process ran ~16% slow (the allocator and caches warming up): a
    # throw-away run of it comes first.
    run_variant(variants[0], argparse.Namespace(**{**vars(args), "steps": 10}), titles, tags)
    for text in variants:
        r = run_variant(text, args, titles, tags)
        print(
            f"{r['variant']:40} {r['precision']:>9} {r['rows_per_s']:8.1f} "
            f"{r['median_step_ms']:8.1f} {r['warmup_s']:9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
