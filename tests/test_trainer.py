"""Trainer runs on fixture data with the tiny model: what it publishes, and how it fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from shared.store import PROMOTED, ArtefactStore, verify
from tests.conftest import clone_version, run_cli, tiny_config, trainer_args, write_wide_tsv
from trainer.train import train


def test_published_version_is_self_contained(published: ArtefactStore) -> None:
    version = published.latest()
    assert version is not None
    folder = published.root / version
    manifest = verify(folder)
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "tagger.json",
        "train_config.yaml",
        "metrics.json",
    } <= set(manifest["files"])
    for key in ("version", "created", "base_model", "data", "libraries", "git_commit"):
        assert key in manifest
    assert len(manifest["data"]["train"]["sha256"]) == 64
    assert manifest["libraries"]["torch"].startswith("2.13.0")
    config = json.loads((folder / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["java", "javascript", "python", "sql"]
    assert 0 < json.loads((folder / "tagger.json").read_text())["threshold"] < 1
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["valid"]["n"] == 60
    assert set(metrics["valid"]["per_tag"]) == {"java", "javascript", "python", "sql"}
    assert {"micro_f1", "macro_f1", "p_at_1", "recall_at_5"} <= set(metrics["valid"])
    assert metrics["history"] and "valid_micro_f1" in metrics["history"][0]
    # The tiny model learns the fixture's topic words: far above chance (0.25).
    assert metrics["valid"]["p_at_1"] > 0.6
    resolved = yaml.safe_load((folder / "train_config.yaml").read_text())
    assert resolved["config"]["epochs"] == 3


def test_same_seed_same_data_same_metrics(
    tmp_path: Path, tiny_model_dir: Path, fixture_data: dict[str, Path]
) -> None:
    config = tiny_config(tiny_model_dir, epochs=1)
    runs = [
        train(config, fixture_data["train"], None, tmp_path / name).metrics for name in ("a", "b")
    ]
    assert runs[0] == runs[1]


def test_second_run_moves_latest_and_prunes(
    store_copy: ArtefactStore, tiny_model_dir: Path, fixture_data: dict[str, Path]
) -> None:
    first = store_copy.latest()  # the fixture version stands for the first run
    # A tolerance that lets it through: the gate is not what this test is about.
    config = tiny_config(tiny_model_dir, epochs=1, keep_versions=1, promotion_tolerance=1.0)
    second = train(config, fixture_data["train"], None, store_copy.root)
    store = ArtefactStore(store_copy.root)
    assert store.latest() == second.version
    assert [v.name for v in store.versions()] == [second.version]
    assert not (store_copy.root / str(first)).exists()


def test_first_tag_only_and_min_samples(
    tmp_path: Path, tiny_model_dir: Path, fixture_data: dict[str, Path]
) -> None:
    data = tmp_path / "d.tsv"
    write_wide_tsv(data, 80, seed=3)
    with data.open("a") as handle:
        handle.write("A rare one\t['rare-tag']\n")
    config = tiny_config(tiny_model_dir, epochs=1, first_tag_only=True, min_samples_per_label=2)
    result = train(config, data, fixture_data["valid"], tmp_path / "art")
    labels = json.loads((result.path / "config.json").read_text())["id2label"].values()
    assert "rare-tag" not in labels


def test_cli_trains_and_publishes(
    tmp_path: Path, tiny_model_dir: Path, fixture_data: dict[str, Path]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"base_model": str(tiny_model_dir), "freeze_layers": 0, "epochs": 3})
    )
    result = run_cli(
        "-m",
        "trainer",
        "--config",
        str(config),
        "--dataset",
        str(fixture_data["train"]),
        "--artefacts-dir",
        str(tmp_path / "art"),
        env={"TRAINER_EPOCHS": "1", "TRAINER_BATCH_SIZE": "16"},
    )
    assert result.returncode == 0, result.stderr
    version = ArtefactStore(tmp_path / "art").latest()
    assert f"published {version}" in result.stdout
    resolved = yaml.safe_load((tmp_path / "art" / str(version) / "train_config.yaml").read_text())
    assert resolved["config"]["epochs"] == 1  # the environment won over the file
    assert "epoch 1/1" in result.stderr


@pytest.mark.parametrize(
    ("config_text", "dataset_text", "expected"),
    [
        ("epochz: 1\n", "title\ttags\nx\t['a']\n", "unknown key 'epochz'"),
        ("epochs: 1\n", "foo,bar\n1,2\n", "unknown format"),
        ("base_model: /no/such/folder\n", "title\ttags\nx\t['a']\n", "neither"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, config_text: str, dataset_text: str, expected: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(config_text)
    data = tmp_path / "d.tsv"
    data.write_text(dataset_text)
    result = run_cli(
        "-m",
        "trainer",
        "--config",
        str(config),
        "--dataset",
        str(data),
        "--artefacts-dir",
        str(tmp_path / "art"),
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "art").exists() or not any((tmp_path / "art").iterdir())


def test_help_documents_every_config_key() -> None:
    result = run_cli("-m", "trainer", "--help")
    assert result.returncode == 0
    for key in ("epochs", "min_samples_per_label", "first_tag_only", "TRAINER_EPOCHS"):
        assert key in result.stdout


def test_versions_cli_lists_and_rolls_back(store_copy: ArtefactStore) -> None:
    root = str(store_copy.root)
    first = store_copy.latest()
    assert first is not None
    second = clone_version(store_copy, first)  # a newer version, promoted over the first
    assert store_copy.promote(second, first, "better than the first")
    listing = run_cli("-m", "trainer.versions", "--artefacts-dir", root, "list")
    assert listing.returncode == 0
    assert f"* {second}" in listing.stdout and f"  {first}" in listing.stdout
    rollback = run_cli("-m", "trainer.versions", "--artefacts-dir", root, "use", first)
    assert rollback.returncode == 0
    assert ArtefactStore(root).latest() == first
    bad = run_cli("-m", "trainer.versions", "--artefacts-dir", root, "use", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_promotion_gate_keeps_latest_on_a_worse_model(
    store_copy: ArtefactStore, tiny_model_dir: Path, fixture_data: dict[str, Path]
) -> None:
    # The fixture version: trained with tiny_config() on the fixture data, the first model
    # of its directory, so always promoted.
    store, root = store_copy, store_copy.root
    good = store.latest()
    assert good is not None and store.promotion(good).status == PROMOTED
    # A model that barely trained scores worse on the same validation rows.
    bad_config = tiny_config(tiny_model_dir, epochs=1, lr_encoder=1e-9, lr_head=1e-9)
    bad = train(bad_config, fixture_data["train"], fixture_data["valid"], root)
    assert not bad.promoted
    assert store.latest() == good
    assert bad.path.is_dir()  # published as a folder all the same
    promotion = json.loads((bad.path / "metrics.json").read_text())["promotion"]
    assert promotion["previous"] == good and not promotion["promoted"]
    assert promotion["previous_metrics"]["micro_f1"] > promotion["new_micro_f1"]

    # A tolerance wide enough lets it through; so does force.
    tolerant = tiny_config(
        tiny_model_dir, epochs=1, lr_encoder=1e-9, lr_head=1e-9, promotion_tolerance=1.0
    )
    assert train(tolerant, fixture_data["train"], fixture_data["valid"], root).promoted
    store.set_latest(good)
    forced = tiny_config(
        tiny_model_dir, epochs=1, lr_encoder=1e-9, lr_head=1e-9, force_promote=True
    )
    result = train(forced, fixture_data["train"], fixture_data["valid"], root)
    assert result.promoted and store.latest() == result.version


def test_cli_exit_code_tells_whether_latest_moved(
    store_copy: ArtefactStore, tiny_model_dir: Path, fixture_data: dict[str, Path], tmp_path: Path
) -> None:
    good = store_copy.latest()  # the fixture version, trained with tiny_config()
    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_model_dir),
                "freeze_layers": 0,
                "epochs": 1,
                "lr_encoder": 1e-9,
                "lr_head": 1e-9,
            }
        )
    )
    args = trainer_args(config, fixture_data, store_copy.root)
    refused = run_cli(*args)
    assert refused.returncode == 3, refused.stderr
    assert "not promoted" in refused.stdout and "NOT promoted" in refused.stderr
    assert ArtefactStore(store_copy.root).latest() == good
    forced = run_cli(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert ArtefactStore(store_copy.root).latest() != good


def test_model_card_baseline_and_plots_come_from_the_run(published: ArtefactStore) -> None:
    folder = published.root / str(published.latest())
    metrics = json.loads((folder / "metrics.json").read_text())
    baseline = metrics["baseline"]
    assert {"micro_f1", "macro_f1", "p_at_1", "recall_at_5"} <= set(baseline)
    assert baseline["n"] == metrics["valid"]["n"]  # scored on the same rows
    manifest = verify(folder)
    assert manifest["baseline_metrics"]["micro_f1"] == baseline["micro_f1"]
    for plot in ("curves.png", "per_tag_f1.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (folder / "README.md").read_text()
    assert f"| micro_f1 | {metrics['valid']['micro_f1']:.4f} | {baseline['micro_f1']:.4f} |" in card
    assert "Stack Overflow and its contributors" in card
    assert f"after epoch {metrics['best_epoch']}" in card  # the recipe line, from the run
    assert "binary cross-entropy" in card and metrics["train_precision"] in ("bf16", "fp32")
    for tag, m in metrics["valid"]["per_tag"].items():
        assert f"| {tag} | {m['support']} | {m['precision']:.3f} |" in card


def test_baseline_cli_prints_metrics_json(fixture_data: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("valid_fraction: 0.25\n")
    result = run_cli(
        "-m",
        "trainer.baseline",
        "--config",
        str(config),
        "--dataset",
        str(fixture_data["train"]),
        "--eval",
        str(fixture_data["valid"]),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 60 and metrics["p_at_1"] > 0.5


def test_freeze_embeddings_keeps_the_word_embeddings(
    tmp_path: Path, tiny_model_dir: Path, fixture_data: dict[str, Path]
) -> None:
    import torch
    from safetensors.torch import load_file

    config = tiny_config(tiny_model_dir, epochs=1, freeze_embeddings=True)
    result = train(config, fixture_data["train"], None, tmp_path)
    key = "embeddings.word_embeddings.weight"
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    trained = load_file(str(result.path / "model.safetensors"))
    assert torch.equal(base[key], trained[key])
    layer = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(base[layer], trained[layer])  # the rest did train


def test_loss_option_sets_the_score_function(
    tmp_path: Path, tiny_model_dir: Path, fixture_data: dict[str, Path], published: ArtefactStore
) -> None:
    from shared.predictor.torch_runner import load_torch_predictor

    default = published.root / str(published.latest())
    assert json.loads((default / "tagger.json").read_text())["score"] == "sigmoid"
    config = tiny_config(tiny_model_dir, epochs=1, loss="softmax")
    result = train(config, fixture_data["train"], fixture_data["valid"], tmp_path)
    assert json.loads((result.path / "tagger.json").read_text())["score"] == "softmax"
    scores = load_torch_predictor(result.path).scores(["pandas numpy", "spring maven"])
    assert scores.sum(axis=1) == pytest.approx(1.0, abs=1e-4)


def test_weight_average_follows_the_weights_and_swaps_back() -> None:
    import torch

    from trainer.recipe import WeightAverage

    layer = torch.nn.Linear(2, 2)
    start = layer.weight.detach().clone()
    average = WeightAverage(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(3.0)
    average.update()
    # First step: the decay ramps from (1 + 1) / (10 + 1), well below 0.9.
    ramp = 2 / 11
    expected = start + (3.0 - start) * (1 - ramp)
    assert torch.allclose(average.shadow["weight"], expected)
    trained = average.swap_in(layer)
    assert torch.allclose(layer.weight, expected)
    layer.load_state_dict(trained)
    assert torch.equal(layer.weight, torch.full((2, 2), 3.0))
    for _ in range(500):
        average.update()
    assert torch.allclose(average.shadow["weight"], torch.full((2, 2), 3.0), atol=1e-3)


def test_use_bf16_follows_the_setting() -> None:
    import torch

    from trainer.recipe import use_bf16

    assert use_bf16("bf16") is True
    assert use_bf16("fp32") is False
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert use_bf16("auto") is bool(native)


def test_averaged_bf16_run_publishes_a_different_working_model(
    tmp_path: Path, tiny_model_dir: Path, fixture_data: dict[str, Path]
) -> None:
    from safetensors.torch import load_file

    plain = train(
        tiny_config(tiny_model_dir, epochs=1, train_precision="fp32", head_init="random"),
        fixture_data["train"],
        None,
        tmp_path / "plain",
    )
    averaged = train(
        tiny_config(
            tiny_model_dir, epochs=1, train_precision="bf16", ema_decay=0.9, head_init="random"
        ),
        fixture_data["train"],
        None,
        tmp_path / "averaged",
    )
    key = "tagger_head.weight"
    a = load_file(str(plain.path / "model.safetensors"))[key]
    b = load_file(str(averaged.path / "model.safetensors"))[key]
    assert not a.equal(b)
    assert averaged.metrics["p_at_1"] > 0.5  # still learns the fixture's topic words
    resolved = yaml.safe_load((averaged.path / "train_config.yaml").read_text())
    assert resolved["config"]["ema_decay"] == 0.9
    assert resolved["config"]["train_precision"] == "bf16"


def test_head_starts_at_tag_name_embeddings_with_the_tag_priors(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from shared.model import TaggerModel, TaggerSpec
    from shared.predictor.torch_runner import pad_batch, torch_predictor
    from trainer.recipe import init_head_from_tag_names

    labels = ["python", "java", "ruby-on-rails"]
    model = TaggerModel.from_base(tiny_model_dir, labels).train(False)  # dropout off
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    scorer = torch_predictor(
        model, tokenizer, TaggerSpec(threshold=0.5, max_length=24, score="sigmoid")
    )
    titles = ["pandas dataframe", "spring maven", "rails migration", "numpy array", "jvm heap"]
    sample = scorer.encode(titles * 4)
    multi_hot = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]] * 4).float()
    init_head_from_tag_names(model, scorer, labels, sample, multi_hot, "bce")
    assert not model.training  # the mode it was called in is kept

    names = model.pool(*pad_batch(scorer.encode(["python", "java", "ruby on rails"]), 0))
    rows = torch.nn.functional.cosine_similarity(model.tagger_head.weight, names, dim=-1)
    assert torch.allclose(rows, torch.ones(3), atol=1e-5)  # each row points at its tag's name
    with torch.no_grad():
        logits = model(*pad_batch(sample, 0))
    prior = multi_hot.mean(dim=0)
    assert torch.allclose(logits.mean(dim=0), torch.log(prior / (1 - prior)), atol=1e-4)
    assert torch.allclose(logits.std(dim=0), torch.ones(3), atol=1e-4)


def test_device_setting_picks_the_gpu_only_where_there_is_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from trainer.compute import resolve_device
    from trainer.config import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device: cuda, but torch sees no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(ConfigError, match="one process per GPU"):
        resolve_device("cuda", local_rank=2)


def test_bf16_auto_on_a_gpu_follows_its_support(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from trainer.recipe import use_bf16

    cuda = torch.device("cuda", 0)
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert use_bf16("auto", cuda) is supported
    assert use_bf16("fp32", cuda) is False and use_bf16("bf16", cuda) is True


def test_processes_share_the_cores_unless_threads_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import compute

    monkeypatch.setattr(compute, "cpu_cores", lambda: 16)
    assert compute.torch_threads(0, world_size=1, local_world_size=1) == 0  # torch's default
    assert compute.torch_threads(0, world_size=4, local_world_size=2) == 8
    assert compute.torch_threads(0, world_size=32, local_world_size=32) == 1
    assert compute.torch_threads(3, world_size=4, local_world_size=4) == 3


def test_without_torchrun_a_run_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.compute import launch_env
    from trainer.config import ConfigError

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert launch_env() == (0, 1, 0, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert launch_env() == (3, 4, 1, 2)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        launch_env()
