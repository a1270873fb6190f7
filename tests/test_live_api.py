"""The inference log through the API: predictions logged, POST /feedback and its errors, the
database down, and the live figures in GET /model and /metrics (SQLite files in tmp_path)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from shared.inference_log import PredictionLog, PredictionRow, connect, title_hash
from shared.live import PROFILE_FILE, SCORE_EDGES, TOKEN_EDGES, histogram, psi, save_profile
from shared.store import MANIFEST_FILE, ArtefactStore
from tests.conftest import assert_error, clone_version, free_port, make_client, wait_for

TITLES = ["How to use pandas with numpy?", "spring maven  error"]
PRUNED = "20200101T000000000Z-0a0b0c"


def db_url(path: Path) -> str:
    return f"sqlite:///{path}"


def rows_of(db: Path, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` (none while it does not exist yet)."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        try:
            found = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []
    return [dict(row) for row in found]


def flush(client: TestClient) -> None:
    assert client.app.state.inference_log.writer.flush()  # type: ignore[attr-defined]


def predict(client: TestClient, request_id: str, texts: list[str] = TITLES) -> dict[str, Any]:
    answer = client.post("/predict", json={"texts": texts}, headers={"X-Request-ID": request_id})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("titles", ["text", "hash"])
def test_each_answered_text_is_logged(
    published: ArtefactStore, tmp_path: Path, titles: str
) -> None:
    db = tmp_path / "log.db"
    with make_client(
        published.root, database_url=db_url(db), prediction_log_titles=titles, live_refresh_s=0
    ) as c:
        answer = predict(c, "req-1")
        flush(c)
    logged = rows_of(db, "predictions")
    assert [(r["request_id"], r["position"]) for r in logged] == [("req-1", 0), ("req-1", 1)]
    for row, text, out in zip(logged, TITLES, answer["predictions"], strict=True):
        assert row["version"] == answer["model_version"] == published.latest()
        assert row["title"] == (text if titles == "text" else None)
        assert row["title_hash"] == title_hash(text)
        assert row["tokens"] > 2 and row["unknown_tokens"] == 0
        assert json.loads(row["top_tags"]) == [[t["tag"], t["score"]] for t in out["tags"]]
        assert json.loads(row["predicted"]) == out["predicted"]
        created = dt.datetime.fromisoformat(row["created_at"]).replace(tzinfo=dt.UTC)
        assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60


def test_sample_zero_logs_nothing(published: ArtefactStore, tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    with make_client(
        published.root, database_url=db_url(db), prediction_log_sample=0, live_refresh_s=0
    ) as c:
        predict(c, "req-1")
        flush(c)
        assert_error(
            c.post("/feedback", json={"request_id": "req-1", "tags": ["x"]}), 404, "not_logged"
        )
    assert rows_of(db, "predictions") == []


def test_feedback_is_stored_replaced_and_refused_cleanly(
    published: ArtefactStore, tmp_path: Path
) -> None:
    db = tmp_path / "log.db"
    with make_client(
        published.root,
        database_url=db_url(db),
        live_refresh_s=0,
        max_texts=4,
        max_body_bytes=4096,
    ) as c:
        version = predict(c, "req-1")["model_version"]
        flush(c)
        first = c.post("/feedback", json={"request_id": "req-1", "tags": [" python ", "polars"]})
        assert first.status_code == 200, first.text
        assert first.json() == {
            "request_id": "req-1",
            "position": 0,
            "version": version,
            "replaced": False,
            "unknown_tags": ["polars"],
        }
        again = c.post(
            "/feedback", json={"request_id": "req-1", "tags": ["java", "java"], "position": 1}
        )
        assert again.json()["replaced"] is False and again.json()["unknown_tags"] == []
        second = c.post("/feedback", json={"request_id": "req-1", "tags": ["pandas"]})
        assert second.json()["replaced"] is True
        stored = [
            (r["request_id"], r["position"], json.loads(r["tags"])) for r in rows_of(db, "feedback")
        ]
        assert sorted(stored) == [("req-1", 0, ["pandas"]), ("req-1", 1, ["java"])]
        assert {r["title"] for r in rows_of(db, "feedback")} == set(TITLES)

        body = assert_error(
            c.post("/feedback", json={"request_id": "nope", "tags": ["python"]}), 404, "not_logged"
        )
        assert "API_PREDICTION_LOG_FLUSH_S" in body["message"] and body["request_id"]
        bad: list[Any] = [
            {"request_id": "req-1", "tags": []},
            {"request_id": "req-1", "tags": ["  "]},
            {"request_id": "req-1", "tags": ["x" * 101]},
            {"request_id": "req-1", "tags": [f"t{i}" for i in range(101)]},
            {"request_id": "req-1", "tags": ["python"], "position": -1},
            {"request_id": "req-1", "tags": ["python"], "position": "1"},
            {"request_id": "bad id!", "tags": ["python"]},
            {"request_id": "req-1"},
        ]
        for payload in bad:
            assert_error(c.post("/feedback", json=payload), 422, "invalid_request")
        assert_error(
            c.post("/feedback", json={"request_id": "req-1", "tags": ["a"], "position": 4}),
            422,
            "invalid_position",
        )
        # 10,000 tags: over the body limit here; under a larger one, over 100 tags (422).
        many = {"request_id": "req-1", "tags": [f"tag{i}" for i in range(10_000)]}
        assert_error(c.post("/feedback", json=many), 413, "body_too_large")
        assert_error(
            c.post(
                "/feedback",
                content=b'{"request_id": "req-1", "tags": ["\xff\xfe"]}',
                headers={"content-type": "application/json"},
            ),
            422,
            "invalid_request",
        )
        assert_error(
            c.post("/feedback", content=b"{oops", headers={"content-type": "application/json"}),
            422,
            "invalid_request",
        )
    after = [
        (r["request_id"], r["position"], json.loads(r["tags"])) for r in rows_of(db, "feedback")
    ]
    assert sorted(after) == sorted(stored)  # nothing stored, nothing lost

    with make_client(published.root, database_url=db_url(db), live_refresh_s=0) as c:
        many = {"request_id": "req-1", "tags": [f"tag{i}" for i in range(10_000)]}
        assert_error(c.post("/feedback", json=many), 422, "invalid_request")
    assert len(rows_of(db, "feedback")) == 2


def test_database_down_predictions_still_served(published: ArtefactStore) -> None:
    closed = f"postgresql+psycopg://tagger@127.0.0.1:{free_port()}/tagger"
    with make_client(
        published.root, database_url=closed, prediction_log_flush_s=0.05, live_refresh_s=0.1
    ) as c:
        for i in range(3):
            predict(c, f"req-{i}")
        dropped = ("tagger_prediction_log_dropped_total", (("reason", "database"),))
        wait_for(lambda: scrape(c).get(dropped, 0) >= 6, what="dropped rows not counted")
        body = assert_error(
            c.post("/feedback", json={"request_id": "req-0", "tags": ["python"]}),
            503,
            "database_unavailable",
        )
        assert "password" not in body["message"] and "127.0.0.1" not in body["message"]
        assert c.get("/ready").status_code == 200
        live = c.get("/model").json()["live"]
        assert live["updated_at"] is None and live["error"]


# ---- live figures ---------------------------------------------------------------------------
def with_profile(store: ArtefactStore, source: str, profile: dict[str, Any]) -> str:
    """Publish a copy of ``source`` with ``profile`` as its profile.json and serve it."""
    with store.staging() as (version, folder):
        for path in (store.root / source).iterdir():
            if path.name not in (MANIFEST_FILE, PROFILE_FILE):
                shutil.copy(path, folder / path.name)
        save_profile(folder, profile)
    store.set_latest(version)
    return version


# Four logged rows of the served version, two with feedback (by hand: P@1 1/2, R@5 (1 +
# 1/2)/2, micro-F1 2*1/(2*1 + 1 + 2) = 0.4, one feedback tag of three unknown).
LOGGED = [
    ("r1", [("python", 0.9), ("java", 0.05)], ["python"], 10, ["python"]),
    ("r2", [("java", 0.6), ("python", 0.3)], ["java"], 10, ["python", "newtag"]),
    ("r3", [("sql", 0.8), ("java", 0.1)], ["sql"], 30, None),
    ("r4", [("sql", 0.8), ("python", 0.1)], ["sql"], 30, None),
]


def reference_profile(labels: list[str]) -> dict[str, Any]:
    rates = {"python": 0.5, "java": 0.25, "sql": 0.25, "javascript": 0.0}
    return {
        "format": 1,
        "rows": 100,
        "threshold": 0.5,
        "tags": {t: {"predicted_rate": rates[t], "true_rate": rates[t]} for t in labels},
        "top_score": {"edges": SCORE_EDGES, "shares": histogram([0.95] * 10, SCORE_EDGES)},
        "tokens": {"edges": TOKEN_EDGES, "shares": histogram([10] * 10, TOKEN_EDGES)},
        "unknown_token_rate": 0.0,
        "no_tag_share": 0.0,
        "metrics": {"micro_f1": 0.8, "macro_f1": 0.7, "p_at_1": 0.9, "recall_at_5": 0.95},
    }


def write_rows(db: Path, version: str, prefix: str = "") -> None:
    """Log LOGGED as ``version``'s predictions (request ids after ``prefix``), through the
    real writer."""
    writer = PredictionLog(connect(db_url(db)), flush_s=0.05)
    writer.start()
    now = dt.datetime.now(dt.UTC)
    writer.add(
        [
            PredictionRow(
                prefix + rid, 0, now, version, rid, title_hash(rid), tokens, 0, tags, predicted
            )
            for rid, tags, predicted, tokens, _ in LOGGED
        ]
    )
    assert writer.flush()
    writer.close()


def test_live_figures_in_model_and_metrics(store_copy: ArtefactStore, tmp_path: Path) -> None:
    base = store_copy.latest()
    assert base is not None
    labels = ["java", "javascript", "python", "sql"]
    former = clone_version(store_copy, base, leave_out=(PROFILE_FILE,))
    profiled = with_profile(store_copy, base, reference_profile(labels))
    db = tmp_path / "log.db"
    write_rows(db, PRUNED, prefix="gone-")  # a version no longer in the store
    write_rows(db, former, prefix="old-")  # a version published without a profile
    write_rows(db, profiled)
    with make_client(store_copy.root, database_url=db_url(db), live_refresh_s=0.1) as c:
        wait_for(lambda: c.get("/model").json()["version"] == profiled)
        for rid, *_, fb in LOGGED:
            if fb is not None:
                assert c.post("/feedback", json={"request_id": rid, "tags": fb}).status_code == 200

        def live() -> dict[str, Any]:
            return c.get("/model").json()["live"]  # type: ignore[no-any-return]

        wait_for(
            lambda: (live()["served"] or {}).get("feedback_rows") == 2,
            what="feedback not in the live figures",
        )
        section = live()
        assert section["enabled"] is True
        assert section["window"] == {"rows": 1000, "seconds": 3600.0, "refresh_s": 0.1}
        assert section["updated_at"] and section["error"] is None
        mine = section["served"]
        assert mine["version"] == profiled and mine["rows"] == 4
        assert mine["quality"] == {"p_at_1": 0.5, "recall_at_5": 0.75, "micro_f1": 0.4}
        assert mine["reference_quality"]["micro_f1"] == 0.8
        assert mine["unknown_feedback_tag_share"] == pytest.approx(1 / 3)
        scores, tokens = [0.9, 0.6, 0.8, 0.8], [10, 10, 30, 30]
        ref = reference_profile(labels)
        expected_psi = psi(ref["top_score"]["shares"], histogram(scores, SCORE_EDGES))
        assert mine["drift"]["psi_top_score"] == pytest.approx(expected_psi)
        assert mine["drift"]["psi_tokens"] == pytest.approx(
            psi(ref["tokens"]["shares"], histogram(tokens, TOKEN_EDGES))
        )
        rates = {t["tag"]: (t["live"], t["reference"]) for t in mine["tags"]}
        assert rates == {
            "python": (0.25, 0.5),
            "java": (0.25, 0.25),
            "sql": (0.5, 0.25),
            "javascript": (0.0, 0.0),
        }
        old, gone = section["others"]  # the most recently logged first
        assert old["version"] == former and old["rows"] == 4 and old["feedback_rows"] == 0
        assert old["drift"] == "no reference" and old["reference_quality"] is None
        assert old["unknown_feedback_tag_share"] is None  # no feedback
        assert gone["version"] == PRUNED and gone["rows"] == 4 and gone["drift"] == "no reference"
        assert {t["tag"] for t in gone["tags"]} == set()  # its labels are gone with it

        values = scrape(c)

        def one(name: str, **labels_: str) -> float:
            return values[(name, tuple(sorted(labels_.items())))]

        assert one("tagger_live_rows", version=profiled) == 4
        assert one("tagger_live_feedback_rows", version=profiled) == 2
        assert one("tagger_live_quality", version=profiled, metric="micro_f1") == 0.4
        assert one("tagger_reference_quality", version=profiled, metric="micro_f1") == 0.8
        assert one("tagger_live_psi", version=profiled, feature="top_score") == pytest.approx(
            expected_psi
        )
        assert one("tagger_live_tag_predicted_rate", version=profiled, tag="sql") == 0.5
        assert one("tagger_reference_tag_predicted_rate", version=profiled, tag="sql") == 0.25
        assert one("tagger_live_unknown_feedback_tag_share", version=profiled) == pytest.approx(
            1 / 3
        )
        assert one("tagger_live_rows", version=former) == 4
        assert ("tagger_live_psi", (("feature", "top_score"), ("version", former))) not in values


def test_served_version_without_profile_says_no_reference(
    store_copy: ArtefactStore, tmp_path: Path
) -> None:
    base = store_copy.latest()
    assert base is not None
    store_copy.set_latest(clone_version(store_copy, base, leave_out=(PROFILE_FILE,)))
    db = tmp_path / "log.db"
    with make_client(store_copy.root, database_url=db_url(db), live_refresh_s=0.05) as c:
        predict(c, "req-1")
        flush(c)
        wait_for(lambda: (c.get("/model").json()["live"]["served"] or {}).get("rows") == 2)
        mine = c.get("/model").json()["live"]["served"]
        assert mine["drift"] == "no reference" and mine["reference_quality"] is None
        assert mine["quality"] == {"p_at_1": None, "recall_at_5": None, "micro_f1": None}
        assert all(t["reference"] is None for t in mine["tags"])


def test_live_figures_off(published: ArtefactStore, tmp_path: Path) -> None:
    with make_client(
        published.root, database_url=db_url(tmp_path / "log.db"), live_refresh_s=0
    ) as c:
        live = c.get("/model").json()["live"]
        assert live["enabled"] is False and live["served"] is None and live["updated_at"] is None
