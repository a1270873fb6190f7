"""Engines for the inference log: the URL (with its password read from a file), SQLite's and
PostgreSQL's connection settings, and :class:`DatabaseError`, the one-line error every public
operation of the package raises when the database cannot be used."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

SQLITE_BUSY_TIMEOUT_MS = 5000
POSTGRES_CONNECT_TIMEOUT_S = 3


class DatabaseError(Exception):
    """The database cannot be used: unreachable, a bad URL, a failed statement (one line)."""


def database_url(url: str, password_file: Path | None) -> URL:
    """``url`` parsed, with the password read from ``password_file`` when one is given."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(
            f"not a database URL: {url!r} (expected e.g. sqlite:///data/inference.db or "
            "postgresql+psycopg://user@host:5432/name)"
        ) from exc
    return parsed if password_file is None else parsed.set(password=_password(password_file))


def _password(password_file: Path) -> str:
    try:
        password = Path(password_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise DatabaseError(
            f"{password_file}: cannot read the database password ({reason})"
        ) from exc
    if not password:
        raise DatabaseError(f"{password_file}: the database password file is empty")
    return password


def connect(url: str | URL, password_file: Path | None = None) -> Engine:
    """An engine for ``url``; nothing is connected until it is first used.

    SQLite: the file's folder is made on first connection, WAL journal, a busy timeout, foreign
    keys on. PostgreSQL: a connect timeout. Both check a pooled connection before using it."""
    if isinstance(url, str):
        parsed = database_url(url, password_file)
    else:
        parsed = url if password_file is None else url.set(password=_password(password_file))
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    try:
        engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(f"{redacted(parsed)}: {exc}".replace("\n", " ")) from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def sqlite_file(engine: Engine) -> Path | None:
    """The file of a SQLite engine (None for another database or an in-memory one)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return Path(database)


def _configure_sqlite(engine: Engine) -> None:
    file = sqlite_file(engine)

    @event.listens_for(engine, "do_connect")
    def _make_folder(*_: Any) -> None:
        # Made here, not when the engine is created, so a folder removed while the service
        # runs comes back with the next connection.
        if file is not None:
            with contextlib.suppress(OSError):
                file.parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()


def redacted(url: URL | str) -> str:
    """``url`` without its password, for messages."""
    return url.render_as_string(hide_password=True) if isinstance(url, URL) else url


def describe(exc: BaseException) -> str:
    """One line saying why a database operation failed."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    text = "; ".join(lines) or type(cause).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@contextlib.contextmanager
def database_errors(engine: Engine) -> Iterator[None]:
    """Turn a failure of the database (a SQLAlchemy error, a file it cannot open) into
    :class:`DatabaseError` naming the database."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseError(f"{redacted(engine.url)}: {describe(exc)}") from exc
