"""The inference log's tables (SQLAlchemy Core, one MetaData): logged predictions and the
feedback reported for them. Alembic's revisions under ``migrations/`` create them; this module
is what the queries and the writer use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

from shared.inference_log.rows import ROLE_ANSWER

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
    # ROLE_ANSWER: the version that answered; ROLE_SHADOW: the other loaded version, scoring the
    # same text off the response path (only its row carries the comparison, candidate vs stable).
    Column("role", String(8), nullable=False, server_default=ROLE_ANSWER),
    Column("compute_ms", Float, nullable=True),
    Column("agree_top1", Boolean, nullable=True),
    Column("jaccard", Float, nullable=True),
    Column("score_delta", Float, nullable=True),
    Index("ix_predictions_version_id", "version", "id"),
    Index("ix_predictions_request_id_position", "request_id", "position"),
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
