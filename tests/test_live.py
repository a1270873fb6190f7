"""The reference profile and the live figures (shared.live): histograms, PSI, a profile of a
hand-made score matrix, the live figures of hand-made rows (values worked out by hand), the
profile a trained version publishes, and the API serving versions without a usable one."""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from shared.data import read_dataset
from shared.live import (
    PROFILE_FILE,
    SCORE_EDGES,
    TOKEN_EDGES,
    Agreement,
    agreement,
    build_profile,
    canary_share,
    histogram,
    live_figures,
    load_profile,
    psi,
    save_profile,
    top_tags_for_labels,
)
from shared.store import MANIFEST_FILE, ArtefactStore, verify
from tests.conftest import clone_version, folder_of, make_client, wait_for

LABELS = ["python", "java", "sql"]
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    top_tags: list[tuple[str, float]]
    predicted: list[str]
    feedback: list[str] | None = None
    tokens: int = 10
    unknown_tokens: int = 0
    created_at: datetime = field(default=T0)


def test_histogram_bins_values_and_sums_to_one() -> None:
    assert len(SCORE_EDGES) == 11 and len(TOKEN_EDGES) == 15
    # [0, 8) gets 3 and 7; [8, 10) gets 8; 128 and 500 go to the last bin, -1 to the first.
    shares = histogram([3, 7, 8, 128, 500, -1], TOKEN_EDGES)
    assert shares[0] == pytest.approx(3 / 6)
    assert shares[1] == pytest.approx(1 / 6)
    assert shares[-1] == pytest.approx(2 / 6)
    assert sum(shares) == pytest.approx(1.0)
    # A score of exactly 1.0 is in the last bin, 0.1 in the second.
    assert histogram([1.0, 0.1], SCORE_EDGES) == [0, 0.5, 0, 0, 0, 0, 0, 0, 0, 0.5]
    assert histogram([], SCORE_EDGES) == [0.0] * 10


def test_psi_known_value_zero_for_identical_and_large_for_a_shift() -> None:
    expected, actual = [0.5, 0.5], [0.25, 0.75]
    by_hand = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(expected, actual) == pytest.approx(by_hand)
    rng = np.random.default_rng(0)
    reference = histogram(rng.beta(5, 2, 5000), SCORE_EDGES)
    assert psi(reference, reference) == 0.0
    assert psi(reference, histogram(rng.beta(5, 2, 5000), SCORE_EDGES)) < 0.1
    assert psi(reference, histogram(rng.beta(2, 5, 5000), SCORE_EDGES)) > 0.25
    # An empty bin is floored, so the index stays finite.
    assert math.isfinite(psi([1.0, 0.0], [0.0, 1.0]))
    with pytest.raises(ValueError, match="2 expected shares but 3"):
        psi([0.5, 0.5], [0.2, 0.3, 0.5])


def profile_of_four_rows() -> dict:
    scores = np.array(
        [
            [0.90, 0.60, 0.10],  # python, java decided (threshold 0.5)
            [0.30, 0.20, 0.05],  # only python, the top tag: no tag reached the threshold
            [0.10, 0.80, 0.70],  # java, sql
            [0.05, 0.15, 0.95],  # sql
        ],
        dtype=np.float32,
    )
    return build_profile(
        scores,
        LABELS,
        0.5,
        [["python"], ["python", "go"], ["java"], ["sql", "java"]],
        tokens=[9, 9, 30, 200],
        unknown_tokens=[0, 1, 2, 1],
        metrics={"micro_f1": 0.7, "macro_f1": 0.6, "p_at_1": 0.75, "recall_at_5": 1.0},
    )


def test_build_profile_on_a_hand_made_matrix() -> None:
    profile = profile_of_four_rows()
    assert profile["format"] == 1 and profile["rows"] == 4 and profile["threshold"] == 0.5
    assert profile["tags"] == {
        "python": {"predicted_rate": 0.5, "true_rate": 0.5},
        "java": {"predicted_rate": 0.5, "true_rate": 0.5},
        "sql": {"predicted_rate": 0.5, "true_rate": 0.25},
    }
    # Top scores 0.9, 0.3, 0.8, 0.95: bins 9, 3, 8, 9.
    assert profile["top_score"]["edges"] == SCORE_EDGES
    assert profile["top_score"]["shares"] == [0, 0, 0, 0.25, 0, 0, 0, 0, 0.25, 0.5]
    # Tokens 9, 9 in [8, 10); 30 in [28, 32); 200 in the last bin.
    shares = profile["tokens"]["shares"]
    assert shares[1] == 0.5 and shares[TOKEN_EDGES.index(28)] == 0.25 and shares[-1] == 0.25
    assert profile["unknown_token_rate"] == pytest.approx(4 / 248, abs=1e-6)
    assert profile["no_tag_share"] == 0.25
    assert profile["metrics"]["p_at_1"] == 0.75
    json.dumps(profile)  # plain JSON types only
    with pytest.raises(ValueError, match="4 score rows, 3 tag lists"):
        build_profile(np.zeros((4, 3)), LABELS, 0.5, [[]] * 3, [1] * 4, [0] * 4, {})


def test_profile_round_trips_and_a_bad_file_is_a_value_error(tmp_path: Path) -> None:
    assert load_profile(tmp_path) is None
    profile = profile_of_four_rows()
    save_profile(tmp_path, profile)
    assert load_profile(tmp_path) == profile
    (tmp_path / PROFILE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=PROFILE_FILE):
        load_profile(tmp_path)
    (tmp_path / PROFILE_FILE).write_text(json.dumps({**profile, "format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        load_profile(tmp_path)
    (tmp_path / PROFILE_FILE).write_text(json.dumps({**profile, "tokens": {"edges": [0]}}))
    with pytest.raises(ValueError, match="'tokens' is not a histogram"):
        load_profile(tmp_path)


def hand_made_rows() -> list[Row]:
    return [
        # P@1 hit; top-5 finds python and java of 3 (go unknown): recall 2/3;
        # decided {python, java} vs {python, java, go}: tp 2, fn 1.
        Row(
            [("python", 0.9), ("java", 0.6), ("sql", 0.1)],
            ["python", "java"],
            ["python", "java", "go"],
            tokens=12,
            unknown_tokens=1,
        ),
        # P@1 miss; recall 1/1; decided {java} vs {sql}: fp 1, fn 1.
        Row(
            [("java", 0.7), ("sql", 0.2)],
            ["java"],
            ["sql"],
            tokens=20,
            created_at=T0 + timedelta(minutes=5),
        ),
        # No feedback: counts for the rates and drift, not for quality.
        Row(
            [("sql", 0.3), ("java", 0.2)],
            ["sql"],
            None,
            tokens=40,
            unknown_tokens=3,
            created_at=T0 - timedelta(minutes=5),
        ),
        # Empty feedback is skipped too.
        Row([("python", 0.8)], ["python"], [], tokens=8),
    ]


def test_live_figures_of_hand_made_rows() -> None:
    profile = profile_of_four_rows()
    figures = live_figures("v1", hand_made_rows(), LABELS, profile)
    assert figures.version == "v1" and figures.rows == 4 and figures.feedback_rows == 2
    assert figures.p_at_1 == pytest.approx(1 / 2)
    assert figures.recall_at_5 == pytest.approx((2 / 3 + 1) / 2)
    # tp 2, fp 1, fn 2: 2*2 / (4 + 1 + 2).
    assert figures.micro_f1 == pytest.approx(4 / 7)
    assert figures.unknown_tag_share == pytest.approx(1 / 4)  # go, of 4 feedback tags
    assert figures.no_tag_share == pytest.approx(1 / 4)  # 0.3 < 0.5
    assert figures.unknown_token_rate == pytest.approx(4 / 80)
    assert figures.tag_rates["python"] == (0.5, 0.5)
    assert figures.tag_rates["java"] == (0.5, 0.5)
    assert figures.tag_rates["sql"] == (0.25, 0.5)
    assert figures.reference is True
    expected_psi = psi(profile["top_score"]["shares"], histogram([0.9, 0.7, 0.3, 0.8], SCORE_EDGES))
    assert figures.psi_top_score == pytest.approx(expected_psi)
    assert figures.psi_top_score is not None and figures.psi_top_score > 0
    assert figures.psi_tokens == pytest.approx(
        psi(profile["tokens"]["shares"], histogram([12, 20, 40, 8], TOKEN_EDGES))
    )
    assert figures.oldest == T0 - timedelta(minutes=5)
    assert figures.newest == T0 + timedelta(minutes=5)


def test_live_figures_read_the_inference_logs_rows() -> None:
    """shared.inference_log's WindowRow is a RowLike: the same rows give the same figures."""
    from shared.inference_log import WindowRow

    rows = hand_made_rows()
    logged = [
        WindowRow(
            created_at=r.created_at,
            version="v1",
            tokens=r.tokens,
            unknown_tokens=r.unknown_tokens,
            top_tags=r.top_tags,
            predicted=r.predicted,
            feedback=r.feedback,
        )
        for r in rows
    ]
    profile = profile_of_four_rows()
    assert live_figures("v1", logged, LABELS, profile) == live_figures("v1", rows, LABELS, profile)


def test_live_figures_without_profile_or_rows() -> None:
    figures = live_figures("v0", hand_made_rows(), LABELS, None)
    assert figures.reference is False
    assert figures.psi_top_score is None and figures.psi_tokens is None
    assert figures.no_tag_share is None  # no threshold to judge by
    assert figures.tag_rates["sql"] == (0.25, None)
    assert figures.p_at_1 == pytest.approx(1 / 2)
    assert live_figures("v0", hand_made_rows(), LABELS, None, threshold=0.5).no_tag_share == 0.25

    empty = live_figures("v1", [], LABELS, profile_of_four_rows())
    assert empty.rows == 0 and empty.feedback_rows == 0
    assert empty.p_at_1 is None and empty.recall_at_5 is None and empty.micro_f1 is None
    assert empty.unknown_tag_share is None and empty.unknown_token_rate is None
    assert empty.psi_top_score is None and empty.psi_tokens is None
    assert empty.oldest is None and empty.newest is None
    assert empty.reference is True


def test_top_tags_for_labels_is_bounded() -> None:
    labels = [f"tag{i:02d}" for i in range(30)]
    rows = [Row([(labels[i % 30], 0.9)], [labels[i % 30]]) for i in range(60 + 29)]
    figures = live_figures("v1", rows, labels, None)
    # Without a reference: the live predicted rate (tag00..tag28 appear 3 times, tag29 twice).
    assert top_tags_for_labels(figures, None, n=3) == ["tag00", "tag01", "tag02"]
    assert len(top_tags_for_labels(figures, None)) == 10
    profile = {
        "tags": {tag: {"true_rate": i / 100, "predicted_rate": 0.0} for i, tag in enumerate(labels)}
    }
    assert top_tags_for_labels(figures, profile, n=2) == ["tag29", "tag28"]
    assert top_tags_for_labels(figures, profile, n=0) == []


def test_agreement_of_two_answers_worked_out_by_hand() -> None:
    stable = [("python", 0.9), ("pandas", 0.6), ("numpy", 0.2)]
    candidate = [("python", 0.7), ("numpy", 0.55), ("pandas", 0.4)]
    got = agreement(stable, ["python", "pandas"], candidate, ["python", "numpy"])
    assert got.top1 and got.jaccard == pytest.approx(1 / 3)
    assert got.score_delta == pytest.approx(0.7 - 0.9)
    flipped = agreement(candidate, ["python", "numpy"], stable, ["python", "pandas"])
    assert flipped.score_delta == pytest.approx(0.2)  # oriented: candidate minus stable
    other = agreement(stable, ["python"], [("java", 0.95)], ["java"])
    assert other == Agreement(top1=False, jaccard=0.0, score_delta=pytest.approx(0.05))
    assert agreement(stable, ["python"], stable, ["python"]) == Agreement(True, 1.0, 0.0)


def test_agreement_when_no_tag_was_decided_or_scored() -> None:
    tags = [("sql", 0.3)]
    assert agreement(tags, [], [("sql", 0.1)], []).jaccard == 1.0  # both decided nothing
    assert agreement(tags, ["sql"], tags, []).jaccard == 0.0
    empty = agreement([], [], tags, [])
    assert not empty.top1 and empty.score_delta == pytest.approx(0.3)
    assert agreement([], [], [], []) == Agreement(True, 1.0, 0.0)


def test_canary_share_is_uniform_and_the_same_for_a_key() -> None:
    shares = [canary_share(f"request-{i}") for i in range(10_000)]
    assert all(0.0 <= s < 1.0 for s in shares)
    assert sum(s < 0.1 for s in shares) / len(shares) == pytest.approx(0.1, abs=0.02)
    assert canary_share("caller-7") == canary_share("caller-7") != canary_share("caller-8")
    assert canary_share("") == int("e3b0c44298fc1c14", 16) / 2**64  # sha256 of nothing


def test_a_published_version_carries_its_profile(
    published: ArtefactStore, fixture_data: dict[str, Path]
) -> None:
    """The trainer writes profile.json into the version, listed in its manifest, from the
    validation scores: the published model rebuilds the same profile on the same rows."""
    from shared.predictor.torch_runner import load_torch_predictor

    folder = folder_of(published)
    assert PROFILE_FILE in verify(folder)["files"]
    profile = load_profile(folder)
    assert profile is not None
    valid = json.loads((folder / "metrics.json").read_text())["valid"]
    assert profile["rows"] == valid["n"] == 60
    assert profile["threshold"] == valid["threshold"]
    assert profile["metrics"] == {
        key: valid[key] for key in ("micro_f1", "macro_f1", "p_at_1", "recall_at_5")
    }
    assert set(profile["tags"]) == {"java", "javascript", "python", "sql"}
    assert sum(profile["top_score"]["shares"]) == pytest.approx(1.0)
    assert sum(profile["tokens"]["shares"]) == pytest.approx(1.0)

    predictor = load_torch_predictor(folder)
    rows = read_dataset(fixture_data["valid"])
    tokens, unknown = predictor.token_counts(rows.titles)
    rebuilt = build_profile(
        predictor.scores(rows.titles),
        predictor.labels,
        predictor.threshold,
        rows.tags,
        tokens,
        unknown,
        profile["metrics"],
    )
    assert rebuilt == profile


def republish(store: ArtefactStore, source: str, profile_text: str | None) -> str:
    """A copy of ``source`` whose profile.json is left out (None) or replaced."""
    with store.staging() as (version, folder):
        for path in (store.root / source).iterdir():
            if path.name not in (MANIFEST_FILE, PROFILE_FILE):
                shutil.copy(path, folder / path.name)
        if profile_text is not None:
            (folder / PROFILE_FILE).write_text(profile_text)
    return version


def test_api_serves_versions_without_a_usable_profile(
    store_copy: ArtefactStore, caplog: pytest.LogCaptureFixture
) -> None:
    first = store_copy.latest()
    assert first is not None
    without = clone_version(store_copy, first, leave_out=(PROFILE_FILE,))
    assert not (store_copy.root / without / PROFILE_FILE).exists()
    broken = republish(store_copy, first, "{not json")
    with make_client(store_copy.root) as c:
        manager = c.app.state.manager  # type: ignore[attr-defined]
        assert manager.current.profile == load_profile(store_copy.root / first)
        for version in (without, broken):
            store_copy.set_latest(version)
            wait_for(lambda v=version: c.get("/model").json()["version"] == v)
            assert c.post("/predict", json={"text": "python list"}).status_code == 200
            assert manager.current.version == version and manager.current.profile is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(broken in w and "drift reference" in w for w in warnings)
