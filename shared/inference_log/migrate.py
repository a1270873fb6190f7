"""Bringing a database's schema to the newest Alembic revision, safely when several processes
start at once (API replicas, a trainer): one holds a lock while the others wait, then find the
schema current."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, text

from shared.inference_log.engine import database_errors, redacted, sqlite_file

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_lock's key for this package's migrations (any constant shared by all processes).
ADVISORY_LOCK_KEY = 0x7A6767_0020


def alembic_config() -> Config:
    """Alembic's configuration, without an alembic.ini: the scripts are in this package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema to the newest revision; raise DatabaseError on failure."""
    # Alembic's own lines (one per step, on every call) would repeat on each retry of the
    # writer; one line of ours says when the schema changed.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with database_errors(engine), _file_lock(engine), engine.connect() as conn:
        with _advisory_lock(conn):
            before = MigrationContext.configure(conn).get_current_revision()
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
            after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        log.info(
            "inference log: schema of %s upgraded from %s to %s",
            redacted(engine.url),
            before or "empty",
            after,
        )


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """On a SQLite file: an exclusive flock on ``<file>.lock`` beside it."""
    file = sqlite_file(engine)
    if file is None:
        yield
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file.with_name(file.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(conn: Connection) -> Iterator[None]:
    """On PostgreSQL: a session-level advisory lock held by ``conn``."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    conn.commit()
    try:
        yield
    finally:
        conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
        conn.commit()
