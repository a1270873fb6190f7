"""The predictor built from an artefact, the evaluate CLI, and loading with plain transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.model import TaggerModel
from shared.predictor import TagScore
from shared.predictor.torch_runner import load_torch_predictor, torch_predictor
from shared.store import MANIFEST_FILE, ArtefactError, ArtefactStore, write_manifest
from tests.conftest import folder_of, run_cli


def test_predict_shapes_order_and_decisions(published: ArtefactStore) -> None:
    predictor = load_torch_predictor(folder_of(published))
    texts = ["How to use pandas with numpy?", "spring hibernate maven error", "   sql  join   "]
    results = predictor.predict(texts, top_k=3)
    assert len(results) == 3
    for result in results:
        assert len(result.tags) == 3
        scores = [t.score for t in result.tags]
        assert scores == sorted(scores, reverse=True)
        assert result.predicted[0] == result.tags[0].tag  # the top tag is always predicted
        assert all(
            t.score >= predictor.threshold for t in result.tags if t.tag in result.predicted[1:]
        )
    assert results[0].tags[0].tag == "python"
    assert results[1].tags[0].tag == "java"
    # Batching by length must not change a text's scores.
    alone = predictor.scores([texts[1]])
    together = predictor.scores(texts)
    np.testing.assert_allclose(alone[0], together[1], atol=1e-5)
    assert ((together >= 0) & (together <= 1)).all()


class WordTokenizer:
    """One id per word (its length), between 101 and 102 as BERT's special tokens; a word of
    three letters stands for the unknown token."""

    pad_id = 0
    unk_id: int | None = 3

    def encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        # split on single spaces: text the core did not normalise would show as 0-length words
        lengths = [[len(w) for w in t.split(" ")] if t else [] for t in texts]
        return [[101, *words[: max_length - 2], 102] for words in lengths]


class RecordingRunner:
    """Scores a row of n tokens n/7 for the first label, the rest for the second; keeps every
    padded batch it ran."""

    backend = "fake"

    def __init__(self) -> None:
        self.batches: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.batches.append((input_ids, attention_mask))
        counts = attention_mask.sum(axis=1).astype(np.float32)
        return np.stack([counts / 7, 1 - counts / 7], axis=1)


def test_core_normalises_truncates_groups_pads_and_formats_for_any_runner() -> None:
    """The core alone, with a fake tokenizer and runner: texts normalised and cut at the spec's
    max_length, batches of similar length padded with the tokenizer's pad id, scores back in
    the texts' order, top-k and decided tags, and token and unknown-token counts."""
    from shared.predictor import Predictor
    from shared.spec import TaggerSpec

    runner = RecordingRunner()
    spec = TaggerSpec(threshold=0.4, max_length=6, score="sigmoid")
    predictor = Predictor(runner, WordTokenizer(), spec, ["long", "short"], batch_size=2)
    texts = ["a  bb\tccc", "a", "one two three four five six seven", "x y"]
    assert predictor.encode(texts) == [
        [101, 1, 2, 3, 102],
        [101, 1, 102],
        [101, 3, 3, 5, 4, 102],
        [101, 1, 1, 102],
    ]
    results = predictor.predict(texts, top_k=5)
    assert [r.tokens for r in results] == [5, 3, 6, 4]
    assert [r.unknown for r in results] == [1, 0, 2, 0]
    assert predictor.token_counts(texts) == ([5, 3, 6, 4], [1, 0, 2, 0])
    assert [r.predicted for r in results] == [
        ["long"],
        ["short", "long"],
        ["long"],
        ["long", "short"],
    ]
    assert results[1].tags == [TagScore("short", 0.571429), TagScore("long", 0.428571)]
    assert [len(r.tags) for r in predictor.predict(texts, top_k=1)] == [1] * 4
    # shortest first, two rows a batch, right-padded with pad id 0
    (ids, mask), (_, wide_mask) = runner.batches[-2:]
    assert ids.tolist() == [[101, 1, 102, 0], [101, 1, 1, 102]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]] and wide_mask.shape == (2, 6)
    assert predictor.backend == "fake"


def test_predictor_leaves_the_mode_of_a_model_it_is_handed(tiny_model_dir: Path) -> None:
    """The trainer hands its model in training mode and switches it itself; a predictor built
    around it must not turn dropout off behind its back (nor on)."""
    from transformers import AutoTokenizer

    from shared.model import TaggerModel, TaggerSpec

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    spec = TaggerSpec(threshold=0.5, max_length=24, score="sigmoid")
    model = TaggerModel.from_base(tiny_model_dir, ["python", "java"]).train(True)
    torch_predictor(model, tokenizer, spec)
    assert model.training and model.dropout.training
    model.train(False)
    torch_predictor(model, tokenizer, spec).scores(["pandas dataframe"])
    assert not model.training


def test_top_k_is_clamped_to_the_label_count(published: ArtefactStore) -> None:
    predictor = load_torch_predictor(folder_of(published))
    assert len(predictor.predict(["x"], top_k=50)[0].tags) == len(predictor.labels)


def test_corrupted_artefact_is_refused(store_copy: ArtefactStore) -> None:
    folder = folder_of(store_copy)
    (folder / "tagger.json").write_text('{"threshold": 0.0}')
    with pytest.raises(ArtefactError):
        load_torch_predictor(folder)


def test_loads_with_plain_transformers_and_safetensors(published: ArtefactStore) -> None:
    """The README's recipe reproduces the predictor's scores (no remote code, no pickle)."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    folder = str(folder_of(published))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder).eval()
    tensors = load_file(f"{folder}/model.safetensors")
    weight, bias = tensors["tagger_head.weight"], tensors["tagger_head.bias"]
    labels = [encoder.config.id2label[i] for i in range(len(encoder.config.id2label))]

    batch = tokenizer(["How to use pandas with numpy?"], return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        logits = (hidden * mask).sum(1) / mask.sum(1) @ weight.T + bias
        score = json.loads(Path(folder, "tagger.json").read_text())["score"]
        probs = torch.sigmoid(logits) if score == "sigmoid" else torch.softmax(logits, -1)

    predictor = load_torch_predictor(folder)
    assert labels == predictor.labels
    np.testing.assert_allclose(
        probs.numpy()[0], predictor.scores(["How to use pandas with numpy?"])[0], atol=1e-5
    )


def test_evaluate_cli_prints_metrics_json(
    published: ArtefactStore, fixture_data: dict[str, Path], tmp_path: Path
) -> None:
    result = run_cli(
        "-m",
        "trainer.evaluate",
        "--artefact",
        str(folder_of(published)),
        "--dataset",
        str(fixture_data["valid"]),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics) >= {"micro_f1", "macro_f1", "p_at_1", "recall_at_5", "n"}
    assert metrics["n"] == 60
    stored = json.loads((folder_of(published) / "metrics.json").read_text())["valid"]
    assert metrics["micro_f1"] == pytest.approx(stored["micro_f1"], abs=1e-3)

    # Tags the model never saw count as misses.
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("title,tags\nHow to use pandas with numpy?,cobol\n")
    missed = json.loads(
        run_cli(
            "-m",
            "trainer.evaluate",
            "--artefact",
            str(folder_of(published)),
            "--dataset",
            str(unknown),
        ).stdout
    )
    assert missed["p_at_1"] == 0.0 and missed["micro_f1"] == 0.0 and missed["recall_at_5"] == 0.0


def test_predict_cli_text_and_stdin(published: ArtefactStore) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    one = run_cli(
        "-m", "api.predict", "--artefacts-dir", str(published.root), "pandas numpy question"
    )
    assert one.returncode == 0 and one.stdout.startswith("python"), one.stderr
    piped = subprocess.run(
        [sys.executable, "-m", "api.predict", "--json", "--artefacts-dir", str(published.root)],
        input="spring maven error\n\nmysql join slow\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    rows = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [r["predicted"][0] for r in rows] == ["java", "sql"]
    assert "empty text" in piped.stderr
    missing = run_cli("-m", "api.predict", "--artefacts-dir", "/nonexistent/dir", "x")
    assert missing.returncode == 2 and "no model published" in missing.stderr


def test_int8_predictor_quantizes_linear_layers_and_agrees_with_fp32(
    published: ArtefactStore,
) -> None:
    folder = folder_of(published)
    fp32 = load_torch_predictor(folder)
    int8 = load_torch_predictor(folder, precision="int8")
    kept = {n for n, m in int8.runner.model.named_modules() if type(m) is torch.nn.Linear}
    assert kept == {"encoder.encoder.layer.0.output.dense"}  # every other Linear is quantized
    quantized = [
        m
        for m in int8.runner.model.modules()
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
    ]
    assert (
        len(quantized)
        == sum(isinstance(m, torch.nn.Linear) for m in fp32.runner.model.modules()) - 1
    )
    texts = ["How to use pandas with numpy?", "spring maven error", "mysql join slow", "node dom"]
    a, b = fp32.scores(texts), int8.scores(texts)
    assert ((b >= 0) & (b <= 1)).all()
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
    assert np.abs(a - b).max() < 0.05
    with pytest.raises(ValueError, match="precision"):
        load_torch_predictor(folder, precision="fp16")


def test_evaluate_cli_int8(published: ArtefactStore, fixture_data: dict[str, Path]) -> None:
    result = run_cli(
        "-m",
        "trainer.evaluate",
        "--artefact",
        str(folder_of(published)),
        "--dataset",
        str(fixture_data["valid"]),
        "--precision",
        "int8",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 60


def pickled_only(source: Path, folder: Path) -> Path:
    """A copy of the model folder ``source`` whose weights are a pickled ``pytorch_model.bin``
    (the same tensors) instead of ``model.safetensors``."""
    from safetensors.torch import load_file

    shutil.copytree(source, folder)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    (folder / MANIFEST_FILE).unlink(missing_ok=True)
    return folder


def test_pickled_weights_are_never_loaded(
    published: ArtefactStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModel

    version = pickled_only(folder_of(published), tmp_path / "version")
    write_manifest(version, "pickled")  # checksums right: only the format is wrong
    base = pickled_only(tiny_model_dir, tmp_path / "base")
    # Plain transformers would unpickle either folder; the tagger refuses both.
    assert AutoModel.from_pretrained(str(base)) is not None
    with pytest.raises(OSError, match="safetensors"):
        load_torch_predictor(version)
    with pytest.raises(OSError, match="safetensors"):
        TaggerModel.from_base(base, ["python", "java"])
