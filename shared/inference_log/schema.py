"""The inference log's tables (SQLAlchemy Core, one MetaData): logged predictions and the
feedback reported for them. Alembic's revisions under ``migrations/`` create them; this module
is what the queries and the writer use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

# BIGINT on PostgreSQL; SQLite autoincrements only an INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored in UTC and read back aware in UTC on every dialect.

    SQLite keeps no offset: values are converted to UTC before they are stored, so that text
    comparison orders them, and read back with UTC attached."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: give a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
    Column("version", String(64), nullable=False),
    Column("title", Text, nullable=True),
    Column("title_hash", String(64), nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("unknown_tokens", Integer, nullable=False),
    Column("top_tags", JSON, nullable=False),
    Column("predicted", JSON, nullable=False),
    Index("ix_predictions_version_id", "version", "id"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=True),
    Column("position", Integer, nullable=True),
    Column("source", String(16), nullable=False),
    Column("title", Text, nullable=True),
    Column("title_hash", String(64), nullable=False),
    Column("tags", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
    UniqueConstraint("request_id", "position", name="uq_feedback_request_position"),
)
