"""The inference log on real SQLite files: migrations, the background writer (batches, a full
queue, a database that fails and comes back), feedback and the queries read back."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from shared.inference_log import (
    DatabaseError,
    NotLogged,
    PredictionLog,
    PredictionRow,
    connect,
    database_url,
    import_feedback,
    labelled_rows,
    recent_versions,
    record_feedback,
    title_hash,
    upgrade,
    window,
)
from shared.inference_log.schema import feedback, metadata, predictions
from tests.conftest import REPO, free_port

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WRITER_LOG = "shared.inference_log.writer"


class Observer:
    """Records what the writer reports (the API's metrics stand-in)."""

    def __init__(self) -> None:
        self.written: list[int] = []
        self.dropped: list[tuple[int, str]] = []

    def rows_written(self, count: int) -> None:
        self.written.append(count)

    def rows_dropped(self, count: int, reason: str) -> None:
        self.dropped.append((count, reason))

    def dropped_for(self, reason: str) -> int:
        return sum(count for count, why in self.dropped if why == reason)


def row(
    request_id: str,
    position: int = 0,
    at: datetime = T0,
    version: str = "v1",
    title: str | None = "How to sort a list in python",
    tokens: int = 9,
) -> PredictionRow:
    return PredictionRow(
        request_id=request_id,
        position=position,
        created_at=at,
        version=version,
        title=title,
        title_hash=title_hash(title or request_id),
        tokens=tokens,
        unknown_tokens=1,
        top_tags=[("python", 0.91), ("list", 0.42)],
        predicted=["python"],
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = connect(f"sqlite:///{tmp_path / 'db' / 'inference.db'}")
    upgrade(eng)
    yield eng
    eng.dispose()


def log_rows(engine: Engine, rows: list[PredictionRow]) -> None:
    """Write ``rows`` through the writer, as the API does."""
    writer = PredictionLog(engine, flush_s=0.01)
    writer.start()
    writer.add(rows)
    assert writer.flush()
    writer.close()


def until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


# --- engine and migrations ----------------------------------------------------------------


def test_the_password_is_read_from_its_file_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    url = database_url("postgresql+psycopg://tagger@db:5432/tagger", secret)
    assert url.password == "s3cret"
    assert "s3cret" not in str(url)
    with pytest.raises(DatabaseError, match="cannot read the database password"):
        database_url("postgresql+psycopg://tagger@db/tagger", tmp_path / "missing")
    with pytest.raises(DatabaseError, match="not a database URL"):
        connect("inference.db")


def test_an_engine_connects_only_when_used(tmp_path: Path) -> None:
    folder = tmp_path / "later"
    eng = connect(f"sqlite:///{folder / 'inference.db'}")
    assert not folder.exists()
    with eng.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    assert (folder / "inference.db").is_file()


def test_upgrade_creates_the_schema_and_is_idempotent(engine: Engine) -> None:
    upgrade(engine)
    tables = inspect(engine).get_table_names()
    assert {"predictions", "feedback", "alembic_version"} <= set(tables)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            "0002"
        ]
    columns = {c["name"] for c in inspect(engine).get_columns("predictions")}
    assert columns == {c.name for c in predictions.columns}
    indexes = {i["name"] for i in inspect(engine).get_indexes("predictions")}
    assert "ix_predictions_version_id" in indexes


def test_the_migrations_build_exactly_the_tables_the_code_uses(engine: Engine) -> None:
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_the_package_loads_no_model_code() -> None:
    code = (
        "import sys, shared.inference_log; "
        "print(sorted(m for m in ('numpy', 'torch', 'transformers', 'shared.predictor', "
        "'shared.store') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_processes_and_threads_upgrading_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'inference.db'}"
    code = (
        "import sys; from shared.inference_log import connect, upgrade; "
        "upgrade(connect(sys.argv[1]))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], cwd=REPO, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            upgrade(connect(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=in_thread) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    assert errors == []
    with connect(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_an_unreachable_database_is_one_readable_line() -> None:
    eng = connect(f"postgresql+psycopg://x@127.0.0.1:{free_port()}/x")
    with pytest.raises(DatabaseError) as caught:
        upgrade(eng)
    message = str(caught.value)
    assert "\n" not in message and "127.0.0.1" in message


# --- the writer -------------------------------------------------------------------------


def test_the_writer_writes_batches_and_flush_makes_them_visible(engine: Engine) -> None:
    observer = Observer()
    writer = PredictionLog(engine, flush_s=30, max_batch=4, observer=observer)
    writer.start()
    sent = [row(f"r{i}", position=i % 2, at=T0 + timedelta(seconds=i)) for i in range(10)]
    writer.add(sent[:6])
    writer.add(sent[6:])
    assert writer.flush(timeout=10)
    assert sum(observer.written) == 10 and max(observer.written) <= 4
    assert observer.dropped == []
    with engine.connect() as conn:
        stored = conn.execute(select(predictions).order_by(predictions.c.id)).all()
    assert [r.request_id for r in stored] == [r.request_id for r in sent]
    first = stored[0]
    assert first.created_at == T0 and first.created_at.tzinfo is not None
    assert first.top_tags == [["python", 0.91], ["list", 0.42]]
    assert first.title_hash == title_hash("How  to sort a list in python ")
    writer.close()


def test_a_full_queue_drops_and_counts_without_blocking(engine: Engine) -> None:
    observer = Observer()
    writer = PredictionLog(engine, max_queue=3, flush_s=0.01, observer=observer)
    started = time.perf_counter()
    writer.add([row(f"r{i}") for i in range(5)])  # not started: nothing drains the queue
    writer.add([row("r5")])
    assert time.perf_counter() - started < 0.5
    assert observer.dropped == [(2, "queue_full"), (1, "queue_full")]
    writer.start()
    assert writer.flush()
    assert sum(observer.written) == 3
    writer.close()


def test_add_never_raises(engine: Engine) -> None:
    class Broken(Observer):
        def rows_dropped(self, count: int, reason: str) -> None:
            raise RuntimeError("metrics broke")

    writer = PredictionLog(engine, max_queue=1, observer=Broken())
    writer.add([row("a"), row("b")])
    writer.add(None)  # type: ignore[arg-type]
    assert writer.queued() == 1


def test_a_failing_database_drops_counts_warns_once_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "db"
    blocker.write_text("a file where the database's folder should be")
    eng = connect(f"sqlite:///{blocker / 'inference.db'}")
    observer = Observer()
    writer = PredictionLog(eng, flush_s=0.02, max_backoff_s=0.1, observer=observer)
    caplog.set_level(logging.INFO, logger=WRITER_LOG)
    writer.start()
    for i in range(5):
        writer.add([row(f"down{i}")])
        assert until(lambda i=i: observer.dropped_for("database") == i + 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "inference.db" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()

    blocker.unlink()  # the folder can be made again: the database works
    writer.add([row("up")])
    assert until(lambda: sum(observer.written) == 1)
    recovered = [r for r in caplog.records if r.levelno == logging.INFO and r.name == WRITER_LOG]
    assert len(recovered) == 1 and "5 rows dropped" in recovered[0].getMessage()
    assert [w.version for w in window(eng, "v1", 10, None)] == ["v1"]
    writer.close()


def test_an_unreachable_postgresql_drops_and_never_blocks_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    eng = connect(f"postgresql+psycopg://x@127.0.0.1:{free_port()}/x")
    observer = Observer()
    writer = PredictionLog(eng, flush_s=0.02, max_backoff_s=0.05, observer=observer)
    caplog.set_level(logging.INFO, logger=WRITER_LOG)
    writer.start()
    started = time.perf_counter()
    for i in range(20):
        writer.add([row(f"r{i}")])
    assert time.perf_counter() - started < 0.5
    assert until(lambda: observer.dropped_for("database") >= 3)
    started = time.perf_counter()
    writer.close()
    assert time.perf_counter() - started < 5
    assert sum(count for count, _ in observer.dropped) == 20 - writer.queued()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


# --- feedback ---------------------------------------------------------------------------


def test_feedback_for_an_unknown_request_id_is_not_logged(engine: Engine) -> None:
    log_rows(engine, [row("known")])
    with pytest.raises(NotLogged, match="'unknown'"):
        record_feedback(engine, "unknown", 0, ["python"])
    with pytest.raises(NotLogged):
        record_feedback(engine, "known", 1, ["python"])
    with engine.connect() as conn:
        assert conn.execute(select(feedback)).all() == []


def test_a_second_report_replaces_the_first(engine: Engine) -> None:
    log_rows(engine, [row("req", title="Sort a dict by value")])
    first = record_feedback(engine, "req", 0, ["python"], now=T0)
    assert (first.version, first.replaced) == ("v1", False)
    second = record_feedback(engine, "req", 0, ["python", "brand-new-tag"], now=T0 + timedelta(1))
    assert second.replaced
    with engine.connect() as conn:
        stored = conn.execute(select(feedback)).all()
    assert len(stored) == 1
    assert stored[0].tags == ["python", "brand-new-tag"]  # tags unknown to any model kept
    assert stored[0].created_at == T0 + timedelta(1)
    assert (stored[0].source, stored[0].title) == ("api", "Sort a dict by value")


def test_feedback_labels_the_text_at_its_position_of_the_newest_request(engine: Engine) -> None:
    log_rows(
        engine,
        [
            row("batch", position=0, title="first text"),
            row("batch", position=1, title="second text"),
            row("again", version="v1", title="old"),
            row("again", version="v2", title="new"),
        ],
    )
    record_feedback(engine, "batch", 1, ["java"])
    assert record_feedback(engine, "again", 0, ["sql"]).version == "v2"
    rows, _ = labelled_rows(engine)
    assert {(r.title, tuple(r.tags)) for r in rows} == {
        ("second text", ("java",)),
        ("new", ("sql",)),
    }


def test_first_reports_racing_leave_one_row(engine: Engine) -> None:
    log_rows(engine, [row("race")])
    errors: list[BaseException] = []

    def report(tag: str) -> None:
        try:
            record_feedback(engine, "race", 0, [tag])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(f"t{i}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        assert len(conn.execute(select(feedback)).all()) == 1


def test_import_feedback_stores_labelled_titles(engine: Engine) -> None:
    assert import_feedback(engine, [], []) == 0
    assert import_feedback(engine, ["a  title", "a title"], [["x"], ["x", "y"]], now=T0) == 2
    with engine.connect() as conn:
        stored = conn.execute(select(feedback).order_by(feedback.c.id)).all()
    assert [(r.source, r.request_id, r.tags) for r in stored] == [
        ("import", None, ["x"]),
        ("import", None, ["x", "y"]),
    ]
    assert stored[0].title_hash == stored[1].title_hash == title_hash("a title")
    with pytest.raises(ValueError, match="2 titles but 1 tag lists"):
        import_feedback(engine, ["a", "b"], [["x"]])


# --- queries ----------------------------------------------------------------------------


def test_window_by_count_and_time_newest_first_with_feedback(engine: Engine) -> None:
    log_rows(
        engine,
        [row(f"r{i}", at=T0 + timedelta(minutes=i), tokens=i) for i in range(5)]
        + [row("other", version="v2", at=T0 + timedelta(minutes=9))],
    )
    record_feedback(engine, "r3", 0, ["python", "pandas"])
    newest = window(engine, "v1", rows=3, seconds=None)
    assert [w.tokens for w in newest] == [4, 3, 2]
    assert [w.feedback for w in newest] == [None, ["python", "pandas"], None]
    assert newest[0].top_tags == [("python", 0.91), ("list", 0.42)]
    assert newest[0].predicted == ["python"] and newest[0].version == "v1"
    now = T0 + timedelta(minutes=5)
    recent = window(engine, "v1", rows=100, seconds=150, now=now)  # rows at minutes 3 and 4
    assert [w.tokens for w in recent] == [4, 3]
    assert [w.tokens for w in window(engine, "v1", 100, 0, now=now)] == [4, 3, 2, 1, 0]
    assert window(engine, "nope", 10, None) == []


def test_recent_versions_newest_first(engine: Engine) -> None:
    log_rows(
        engine,
        [
            row("a", version="v1", at=T0),
            row("b", version="v2", at=T0 + timedelta(minutes=1)),
            row("c", version="v3", at=T0 + timedelta(minutes=2)),
            row("d", version="v1", at=T0 + timedelta(minutes=3)),
        ],
    )
    assert recent_versions(engine, None) == ["v1", "v3", "v2"]
    assert recent_versions(engine, None, limit=2) == ["v1", "v3"]
    now = T0 + timedelta(minutes=4)
    assert recent_versions(engine, 150, now=now) == ["v1", "v3"]
    assert recent_versions(engine, 30, now=now) == []


def test_labelled_rows_oldest_first_since_and_hash_only_counted(engine: Engine) -> None:
    log_rows(engine, [row("kept", title="Kept title"), row("hashed", title=None)])
    record_feedback(engine, "hashed", 0, ["x"], now=T0 + timedelta(minutes=2))
    record_feedback(engine, "kept", 0, ["y"], now=T0 + timedelta(minutes=3))
    import_feedback(engine, ["Imported title"], [["z"]], now=T0 + timedelta(minutes=1))
    rows, hash_only = labelled_rows(engine)
    assert [(r.title, r.tags, r.source) for r in rows] == [
        ("Imported title", ["z"], "import"),
        ("Kept title", ["y"], "api"),
    ]
    assert hash_only == 1
    assert rows[0].created_at == T0 + timedelta(minutes=1)
    later, hash_only = labelled_rows(engine, since=T0 + timedelta(minutes=1))
    assert [r.title for r in later] == ["Kept title"] and hash_only == 1
