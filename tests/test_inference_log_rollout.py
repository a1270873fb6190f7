"""The inference log's rollout columns: revision 0002 upgrading a 0001 database that holds
rows, answer and shadow rows written by the writer and read back (SQLite files, and the local
PostgreSQL's COPY path when $TAGGER_TEST_POSTGRES_URL names a database to use), feedback
labelling the answer row, never its shadow, and the rows a rollout decision reads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from shared.inference_log import (
    ROLE_SHADOW,
    PredictionRow,
    connect,
    record_feedback,
    rollout_rows,
    upgrade,
    window,
)
from shared.inference_log.migrate import alembic_config
from shared.inference_log.schema import metadata, predictions
from tests.test_inference_log import T0, log_rows, row

POSTGRES_ENV = "TAGGER_TEST_POSTGRES_URL"  # e.g. postgresql+psycopg://user:pw@127.0.0.1/db


def shadow_of(answer: PredictionRow, version: str = "v2") -> PredictionRow:
    """The shadow row of ``answer``: another version scoring the same text."""
    return replace(
        answer,
        version=version,
        top_tags=[("list", 0.8), ("python", 0.7)],
        predicted=["list", "python"],
        role=ROLE_SHADOW,
        compute_ms=3.25,
        agree_top1=False,
        jaccard=0.5,
        score_delta=-0.11,
    )


def to_revision(engine: Engine, revision: str) -> None:
    with engine.connect() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrades_a_0001_database_with_rows(engine: Engine) -> None:
    """Bring an empty database to 0001, log a row the 0001 way, upgrade to head; check."""
    to_revision(engine, "0001")
    values = {k: v for k, v in row("old").values().items() if k not in NEW_COLUMNS}
    with engine.begin() as conn:
        conn.execute(predictions.insert().values(values))
    upgrade(engine)
    assert revision_of(engine) == "0002"
    indexes = {i["name"] for i in inspect(engine).get_indexes("predictions")}
    assert {"ix_predictions_request_id_position", "ix_predictions_version_id"} <= indexes
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        kept = conn.execute(select(predictions)).one()
    assert (kept.request_id, kept.role, kept.compute_ms, kept.agree_top1) == (
        "old",
        "answer",
        None,
        None,
    )


NEW_COLUMNS = {"role", "compute_ms", "agree_top1", "jaccard", "score_delta"}


def round_trips_answer_and_shadow_rows(engine: Engine) -> None:
    answer = replace(row("rt", at=T0), compute_ms=12.5)
    shadow = shadow_of(answer)
    log_rows(engine, [answer, shadow])
    with engine.connect() as conn:
        stored = conn.execute(select(predictions).order_by(predictions.c.id)).all()
    assert [
        (r.version, r.role, r.compute_ms, r.agree_top1, r.jaccard, r.score_delta) for r in stored
    ] == [("v1", "answer", 12.5, None, None, None), ("v2", "shadow", 3.25, False, 0.5, -0.11)]
    assert stored[1].top_tags == [["list", 0.8], ["python", 0.7]]
    assert stored[1].created_at == T0 and stored[1].request_id == "rt"
    result = record_feedback(engine, "rt", 0, ["python"])
    assert result.version == "v1"  # the answer row, logged before its shadow or after
    # Both versions' windows see the text's feedback: the candidate's from its shadow row.
    assert window(engine, "v2", 10, None)[0].feedback == ["python"]
    assert window(engine, "v1", 10, None)[0].feedback == ["python"]


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engine]:
    engine = connect(f"sqlite:///{tmp_path / 'inference.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres() -> Iterator[Engine]:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"${POSTGRES_ENV} names no PostgreSQL database to use")
    engine = connect(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS feedback, predictions, alembic_version"))
    yield engine
    engine.dispose()


def test_0002_upgrades_a_0001_sqlite_file_keeping_its_rows(sqlite: Engine) -> None:
    upgrades_a_0001_database_with_rows(sqlite)


def test_0002_upgrades_a_0001_postgresql_database_keeping_its_rows(postgres: Engine) -> None:
    upgrades_a_0001_database_with_rows(postgres)


def test_answer_and_shadow_rows_round_trip_on_sqlite(sqlite: Engine) -> None:
    upgrade(sqlite)
    round_trips_answer_and_shadow_rows(sqlite)


def test_answer_and_shadow_rows_round_trip_through_postgresql_copy(postgres: Engine) -> None:
    upgrade(postgres)
    round_trips_answer_and_shadow_rows(postgres)


def test_feedback_labels_the_answer_row_even_when_its_shadow_is_newer(sqlite: Engine) -> None:
    upgrade(sqlite)
    answer = row("req", version="v1", title="answered")
    log_rows(sqlite, [answer])
    log_rows(sqlite, [shadow_of(answer, version="v9")])
    assert record_feedback(sqlite, "req", 0, ["python"]).version == "v1"
    only_shadow = shadow_of(row("lone"), version="v9")
    log_rows(sqlite, [only_shadow])
    with pytest.raises(Exception, match="'lone'"):
        record_feedback(sqlite, "lone", 0, ["python"])


def test_a_row_names_a_known_role() -> None:
    with pytest.raises(ValueError, match="role 'canary'"):
        replace(row("r"), role="canary")


@pytest.fixture(params=["sqlite", "postgres"])
def either(request: pytest.FixtureRequest) -> Engine:
    """A SQLite file, then the PostgreSQL database (when there is one)."""
    engine: Engine = request.getfixturevalue(request.param)
    return engine


def test_rollout_rows_pair_answers_with_their_shadows_either_way(either: Engine) -> None:
    upgrade(either)
    at = [T0 + timedelta(minutes=i) for i in range(6)]
    shadowed = replace(row("a", at=at[0]), compute_ms=10.0)  # v1 answered, v2 shadowed it
    canary = replace(row("b", at=at[1], version="v2"), compute_ms=20.0)  # v2 answered (canary)
    canary_shadow = replace(
        shadow_of(canary, version="v1"), agree_top1=True, jaccard=1.0, score_delta=0.2
    )
    third = row("c", at=at[2], version="v3")  # another candidate's shadow of v1: not ours
    log_rows(
        either,
        [
            shadowed,
            shadow_of(shadowed),
            canary,
            canary_shadow,
            row("c", at=at[2]),
            shadow_of(third, version="v3"),
            row("d", at=at[3]),
            row("d", position=1, at=at[3]),
        ],
    )
    record_feedback(either, "a", 0, ["python"])
    rows = rollout_rows(either, "v1", "v2", since=None)
    assert (rows.stable.answered, rows.stable.requests, rows.stable.shadowed) == (4, 3, 1)
    assert (rows.candidate.answered, rows.candidate.requests, rows.candidate.shadowed) == (1, 1, 1)
    assert rows.stable.compute_ms == [3.25, 10.0]  # newest first, rows without a time left out
    assert rows.candidate.compute_ms == [20.0, 3.25]
    assert [(p.answered_by, p.agree_top1, p.jaccard, p.score_delta) for p in rows.paired] == [
        ("v2", True, 1.0, 0.2),
        ("v1", False, 0.5, -0.11),
    ]
    newest, oldest = rows.paired
    assert (newest.stable.version, newest.candidate.version) == ("v1", "v2")
    assert newest.candidate.top_tags == [("python", 0.91), ("list", 0.42)]  # v2's answer row
    assert (oldest.stable.feedback, oldest.candidate.feedback) == (["python"], ["python"])
    assert oldest.candidate.predicted == ["list", "python"]
    assert [p.answered_by for p in rows.with_feedback()] == ["v1"]
    recent = rollout_rows(either, "v1", "v2", since=at[1])
    assert len(recent.paired) == 1 and recent.stable.answered == 3
    assert len(rollout_rows(either, "v1", "v2", since=None, limit=1).paired) == 1
    assert rollout_rows(either, "v7", "v8", since=None).paired == []
