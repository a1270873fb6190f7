"""The inference log's rollout columns: revision 0002 upgrading a 0001 database that holds
rows, answer and shadow rows written by the writer and read back (SQLite files, and the local
PostgreSQL's COPY path when $TAGGER_TEST_POSTGRES_URL names a database to use), and feedback
labelling the answer row, never its shadow."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
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
