"""The model card (``README.md``) and plots written into every published version.

Every number comes from the run's own metrics; nothing is typed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from trainer.config import TrainConfig
from trainer.metrics import HEADLINE_METRICS

CURVES_FILE = "curves.png"
PER_TAG_FILE = "per_tag_f1.png"
DATA_ATTRIBUTION = (
    "Stack Overflow question titles and tags (the public 'Predict tags on StackOverflow' data "
    "of the HSE NLP course, or data in the same format). Stack Overflow user content is "
    "licensed CC BY-SA (3.0/4.0 by post date); attribution: Stack Overflow and its contributors."
)


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="loss")
    for key in HEADLINE_METRICS:
        metric_ax.plot(epochs, [h[f"valid_{key}"] for h in history], marker="o", label=key)
    metric_ax.set(title="validation", xlabel="epoch", ylim=(0, 1))
    metric_ax.legend(loc="lower right")
    for ax in (loss_ax, metric_ax):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_per_tag(per_tag: dict[str, dict[str, Any]], path: Path) -> None:
    ranked = sorted(per_tag.items(), key=lambda kv: kv[1]["f1"], reverse=True)
    fig, ax = plt.subplots(figsize=(10, max(3, 0.16 * len(ranked) + 1)))
    ax.barh([tag for tag, _ in ranked][::-1], [m["f1"] for _, m in ranked][::-1])
    ax.set(title="validation F1 per tag", xlabel="F1", xlim=(0, 1))
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_model_card(folder: Path, version: str, doc: dict[str, Any], info: dict[str, Any]) -> None:
    """``README.md``: data, split, metrics against the baseline, per-tag table, use and limits."""
    valid, baseline = doc["valid"], doc.get("baseline") or {}
    rows = "\n".join(
        f"| {key} | {valid[key]:.4f} | "
        + (f"{baseline[key]:.4f}" if key in baseline else "n/a")
        + " |"
        for key in HEADLINE_METRICS
    )
    per_tag = sorted(valid["per_tag"].items(), key=lambda kv: -kv[1]["support"])
    tag_rows = "\n".join(
        f"| {tag} | {m['support']} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} "
        f"| {m['recall_at_5']:.3f} |"
        for tag, m in per_tag
    )
    feedback = info.get("feedback")
    if feedback:
        split = (
            f"the newest {feedback['valid_rows']} of {feedback['rows']} feedback rows "
            f"(labelled {feedback['from']} to {feedback['until']}; the older ones trained)"
        )
    elif info["valid_name"]:
        split = f"validation file `{info['valid_name']}`"
    else:
        split = (
            f"{info['valid_fraction']:.0%} of the training file, held out with seed {info['seed']}"
        )
    promotion = doc.get("promotion", {})
    text = f"""# Stack Overflow tagger {version}

Fine-tuned from `{info["base_model"]}` (all-MiniLM-L6-v2, Apache-2.0): mean-pooled encoder and
one linear layer, one {info["score"]} score per tag; a tag is predicted when its score is at least
{valid["threshold"]} (tuned on the validation rows), and the top tag always is.
Trained with {info["recipe"]}.

## Data
{DATA_ATTRIBUTION}

Training file `{info["train_name"]}` (sha256 `{info["train_sha256"][:16]}...`):
{doc["n_train"]} questions used for training; validation: {split}, {doc["n_valid"]} questions,
used for early stopping, the threshold and the figures below. {doc["n_labels"]} tags.

## Metrics on the validation rows

| metric | this model | TF-IDF + one-vs-rest logistic regression (same split) |
| --- | --- | --- |
{rows}

n = {valid["n"]}. Best epoch {doc["best_epoch"]} of {len(doc["history"])}; training took
{doc["train_seconds"]} s at {doc["samples_per_second"]} samples/s.
Promotion: {promotion.get("reason", "n/a")}.

![training and validation curves]({CURVES_FILE})

![F1 per tag]({PER_TAG_FILE})

## Per tag (validation)

| tag | support | precision | recall | F1 | recall@5 |
| --- | --- | --- | --- | --- | --- |
{tag_rows}

## Intended use and limits
Suggesting tags for English Stack Overflow question titles, with a person confirming them.
It knows only the {doc["n_labels"]} tags above and sees only the title (at most
{info["max_length"]} tokens), not the body or code; rare tags score lowest (see the table).
Titles unlike Stack Overflow questions get confident-looking but meaningless tags. Not for
moderation or any automated decision about people.

## Loading
See the project README ("Artefacts"): plain transformers + safetensors, no remote code.
"""
    (folder / "README.md").write_text(text)


def write_report(folder: Path, version: str, doc: dict[str, Any], info: dict[str, Any]) -> None:
    plot_curves(doc["history"], folder / CURVES_FILE)
    plot_per_tag(doc["valid"]["per_tag"], folder / PER_TAG_FILE)
    write_model_card(folder, version, doc, info)


def describe_recipe(config: TrainConfig, bf16: bool, best_epoch: float) -> str:
    """One sentence for the model card: loss, precision, epochs and which weights were kept."""
    loss = {
        "bce": "binary cross-entropy (one sigmoid per tag)",
        "softmax": "cross-entropy against the tags spread evenly (softmax)",
    }[config.loss]
    weights = (
        f"an exponential moving average of the weights (decay {config.ema_decay})"
        if config.ema_decay
        else "the weights as trained"
    )
    frozen = f", the lowest {config.freeze_layers} layers frozen" if config.freeze_layers else ""
    return (
        f"{loss}, {'bf16 autocast' if bf16 else 'fp32'}, encoder learning rate "
        f"{config.lr_encoder}{frozen}, head {config.lr_head}; published: {weights} after epoch "
        f"{best_epoch:g} of {config.epochs:g}"
    )
