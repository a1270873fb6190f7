"""The ONNX path: export and its verification at publish time, the ONNX Runtime predictor
against the torch one, the tokenizer against transformers', the backend choice, and the API
serving ONNX without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.data import read_dataset
from shared.predictor import backend_of, choose_backend, load_predictor
from shared.predictor.onnx_runner import load_onnx_predictor
from shared.predictor.torch_runner import load_torch_predictor
from shared.store import MANIFEST_FILE, ArtefactError, ArtefactStore
from tests.conftest import (
    REPO,
    SAMPLE_DATA,
    clone_version,
    folder_of,
    make_client,
    tiny_config,
    wait_for,
)

ODD_TEXTS = [
    "😀 emoji in a title 🐍 python",
    "a NUL\x00byte in java",
    "x" * 100_000,
    "word " * 20_000,
    "Ünïcödé accents and 中文 java",
    "zero\u200bwidth\ufeffspace",
    "lone surrogate \ud800 in sql",
    "\udfff",
]


def test_published_version_carries_verified_graphs(published: ArtefactStore) -> None:
    folder = folder_of(published)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert {"model.onnx", "model.int8.onnx"} <= set(manifest["files"])
    report = json.loads((folder / "metrics.json").read_text())["onnx"]
    assert report["opset"] == 17
    assert report["fp32"]["max_abs_diff_vs_torch"] <= 1e-4
    assert report["fp32"]["n"] == 60  # the run's validation rows
    assert report["int8"]["published"] is True
    assert report["int8"]["micro_f1_drop_vs_fp32"] <= 0.005
    # the torch int8 path's outlier layer stays fp32 in the int8 graph too
    assert report["int8"]["kept_fp32"] == ["/model/encoder/encoder/layer.0/output/dense/MatMul"]
    assert "onnxruntime" in manifest["libraries"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_onnx_scores_match_torch(published: ArtefactStore, precision: str) -> None:
    folder = folder_of(published)
    onnx = load_onnx_predictor(folder, precision=precision)
    torch_predictor = load_torch_predictor(folder)
    titles = read_dataset(SAMPLE_DATA / "valid.tsv").titles[:200] + ODD_TEXTS
    got, expected = onnx.scores(titles), torch_predictor.scores(titles)
    assert got.shape == expected.shape == (len(titles), 4)
    assert onnx.labels == torch_predictor.labels and onnx.threshold == torch_predictor.threshold
    if precision == "int8":
        # int8 moves the tiny random model's scores a lot; its micro-F1 gate is checked above
        assert np.isfinite(got).all() and ((got >= 0) & (got <= 1)).all()
    else:
        np.testing.assert_allclose(got, expected, atol=1e-5)
    if precision == "fp32":
        mine = onnx.predict(titles[:50], top_k=3)
        theirs = torch_predictor.predict(titles[:50], top_k=3)
        assert [p.predicted for p in mine] == [p.predicted for p in theirs]
        assert [[t.tag for t in p.tags] for p in mine] == [[t.tag for t in p.tags] for p in theirs]


def test_tokenizer_ids_equal_transformers(published: ArtefactStore) -> None:
    """tokenizers from tokenizer.json gives the ids the transformers tokenizer gives, also on
        odd input (emoji, NUL, 100k characters, lone surrogates), and never raises; both count the
    unknown token."""
    folder = folder_of(published)
    onnx = load_onnx_predictor(folder)
    torch_predictor = load_torch_predictor(folder)
    titles = read_dataset(SAMPLE_DATA / "valid.tsv").titles + ODD_TEXTS
    assert onnx.encode(titles) == torch_predictor.encode(titles)
    # Both know BERT's [UNK] (100) and count it (symbols outside the vocabulary).
    assert onnx.tokenizer.unk_id == torch_predictor.tokenizer.unk_id == 100
    assert onnx.token_counts(titles) == torch_predictor.token_counts(titles)
    assert onnx.token_counts(["hello ☃ 𝕏"]) == ([5], [2])  # [CLS] hello [UNK] [UNK] [SEP]


def test_export_that_does_not_match_stops_the_run(
    tiny_model_dir: Path, fixture_data: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    import trainer.export
    from trainer.export import ExportError
    from trainer.train import train

    monkeypatch.setattr(trainer.export, "FP32_MAX_ABS_DIFF", -1.0)  # nothing can match
    root = tmp_path / "artefacts"
    with pytest.raises(ExportError, match="differ from torch's"):
        train(
            tiny_config(tiny_model_dir, epochs=1),
            fixture_data["train"],
            fixture_data["valid"],
            root,
        )
    assert ArtefactStore(root).versions() == [] and ArtefactStore(root).latest() is None
    assert not list(root.glob(".staging-*"))


def test_full_disk_before_quantization_is_one_clear_error(
    tiny_model_dir: Path, fixture_data: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    """The quantizer's scratch copy would be truncated silently on a full disk (found by
    `make chaos`): the run stops with ENOSPC in words before it starts, publishing nothing."""
    import errno
    from collections import namedtuple

    import trainer.export
    from trainer.train import train

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(trainer.export.shutil, "disk_usage", lambda _: usage(1, 1, 2**20))
    root = tmp_path / "artefacts"
    with pytest.raises(OSError, match="int8 quantization needs about") as caught:
        train(tiny_config(tiny_model_dir, epochs=1), fixture_data["train"], None, root)
    assert caught.value.errno == errno.ENOSPC
    assert "No space left on device" in str(caught.value)
    assert ArtefactStore(root).versions() == [] and ArtefactStore(root).latest() is None
    assert not list(root.glob(".staging-*"))


def test_int8_left_out_when_it_loses_accuracy(
    tiny_model_dir: Path, fixture_data: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    import trainer.export
    from trainer.train import train

    monkeypatch.setattr(trainer.export, "INT8_MAX_F1_DROP", -1.0)  # no int8 is good enough
    root = tmp_path / "artefacts"
    result = train(
        tiny_config(tiny_model_dir, epochs=1), fixture_data["train"], fixture_data["valid"], root
    )
    folder = result.path
    assert (folder / "model.onnx").is_file() and not (folder / "model.int8.onnx").exists()
    assert "model.int8.onnx" not in json.loads((folder / MANIFEST_FILE).read_text())["files"]
    reason = json.loads((folder / "metrics.json").read_text())["onnx"]["int8"]["reason"]
    assert "below fp32" in reason
    with pytest.raises(ArtefactError, match=r"left int8 out.*API_PRECISION=fp32"):
        load_predictor(folder, backend="onnx", precision="int8")
    # auto falls back to torch's own int8 where torch is installed (development)
    assert choose_backend(folder, "auto", "int8") == "torch"
    assert choose_backend(folder, "auto", "fp32") == "onnx"


def without_graphs(store: ArtefactStore, source: str) -> str:
    """A copy of ``source`` as published before ONNX export: no graphs in it or its manifest."""
    return clone_version(store, source, leave_out=(".onnx",))


def test_backend_choice(store_copy: ArtefactStore) -> None:
    current = store_copy.latest()
    assert current is not None
    old = without_graphs(store_copy, current)
    folder = store_copy.root / old
    assert choose_backend(store_copy.root / current, "auto", "fp32") == "onnx"
    assert choose_backend(folder, "auto", "fp32") == "torch"
    assert choose_backend(folder, "torch", "fp32") == "torch"
    with pytest.raises(ArtefactError, match=r"has no model\.onnx.*retrain"):
        choose_backend(folder, "onnx", "fp32")
    assert backend_of(load_predictor(store_copy.root / current)) == "onnx"
    assert backend_of(load_predictor(folder)) == "torch"
    # a graph the manifest does not list is never loaded, even without checksum checks
    (folder / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ArtefactError, match="not listed in its manifest"):
        load_predictor(folder, backend="onnx", verify_checksums=False)


def test_api_serves_onnx_and_refuses_a_version_without_graph(store_copy: ArtefactStore) -> None:
    first = store_copy.latest()
    assert first is not None
    with make_client(store_copy.root, backend="onnx") as c:
        info = c.get("/model").json()
        assert info["version"] == first and info["backend"] == "onnx"
        body = c.post("/predict", json={"text": "spring maven error"}).json()
        assert body["predictions"][0]["predicted"][0] == "java"

        old = without_graphs(store_copy, first)
        store_copy.set_latest(old)
        wait_for(
            lambda: any(f["version"] == old for f in c.get("/model").json()["failed_versions"])
        )
        info = c.get("/model").json()
        assert info["version"] == first and info["latest"] == old  # the previous one serves on
        assert "has no model.onnx" in info["failed_versions"][0]["error"]
        assert c.post("/predict", json={"text": "x"}).json()["model_version"] == first

        newer = clone_version(store_copy, first)
        store_copy.set_latest(newer)
        wait_for(lambda: c.get("/model").json()["version"] == newer)


def test_api_auto_serves_int8_graph(published: ArtefactStore) -> None:
    with make_client(published.root, precision="int8") as c:
        info = c.get("/model").json()
        assert (info["backend"], info["precision"]) == ("onnx", "int8")
        body = c.post("/predict", json={"text": "spring maven error"}).json()
        assert body["predictions"][0]["predicted"][0] == "java"


def test_api_torch_backend_still_serves(published: ArtefactStore) -> None:
    with make_client(published.root, backend="torch") as c:
        assert c.get("/model").json()["backend"] == "torch"
        body = c.post("/predict", json={"text": "spring maven error"}).json()
        assert body["predictions"][0]["predicted"][0] == "java"


def test_onnx_path_imports_no_torch(published: ArtefactStore) -> None:
    """The API app, started with the ONNX backend and answering /predict, never imports torch
    or transformers (the lean image has neither)."""
    code = """
import sys
from fastapi.testclient import TestClient
from api.app import create_app
from api.settings import ApiSettings
app = create_app(ApiSettings(artefacts_dir=sys.argv[1], backend="onnx"))
with TestClient(app) as client:
    answer = client.post("/predict", json={"texts": ["spring maven error", "pandas"]})
    assert answer.status_code == 200, answer.text
    assert client.get("/model").json()["backend"] == "onnx"
leaked = sorted(m for m in ("torch", "transformers", "safetensors") if m in sys.modules)
print("LEAKED", leaked)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("API_")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(published.root)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LEAKED []" in out.stdout, out.stdout


def test_evaluate_cli_onnx_matches_torch(published: ArtefactStore, fixture_data, capsys) -> None:
    from trainer.evaluate import main

    folder = str(folder_of(published))
    scores = {}
    for backend in ("torch", "onnx"):
        main(["--artefact", folder, "--dataset", str(fixture_data["valid"]), "--backend", backend])
        scores[backend] = json.loads(capsys.readouterr().out)
    assert scores["onnx"]["micro_f1"] == pytest.approx(scores["torch"]["micro_f1"], abs=1e-9)
