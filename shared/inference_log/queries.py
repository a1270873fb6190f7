"""What is read back from the inference log: the window of a version's newest predictions with
their feedback (live figures), the versions recently served, and the labelled titles
(retraining)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from shared.inference_log.engine import database_errors
from shared.inference_log.schema import feedback, predictions


@dataclass(frozen=True)
class WindowRow:
    """A logged prediction with the tags reported for it (None: no feedback yet)."""

    created_at: datetime
    version: str
    tokens: int
    unknown_tokens: int
    top_tags: list[tuple[str, float]]
    predicted: list[str]
    feedback: list[str] | None


@dataclass(frozen=True)
class LabelledRow:
    """A title with the tags reported for it."""

    title: str
    tags: list[str]
    created_at: datetime
    source: str


def _since(seconds: float | None, now: datetime | None) -> datetime | None:
    if not seconds:
        return None
    return (now or datetime.now(UTC)) - timedelta(seconds=seconds)


def window(
    engine: Engine,
    version: str,
    rows: int,
    seconds: float | None,
    now: datetime | None = None,
) -> list[WindowRow]:
    """The newest ``rows`` logged predictions of ``version``, none older than ``seconds``
    (None or 0: by count only), newest first, each with its feedback."""
    joined = predictions.outerjoin(
        feedback,
        (feedback.c.request_id == predictions.c.request_id)
        & (feedback.c.position == predictions.c.position),
    )
    query = (
        select(
            predictions.c.created_at,
            predictions.c.version,
            predictions.c.tokens,
            predictions.c.unknown_tokens,
            predictions.c.top_tags,
            predictions.c.predicted,
            feedback.c.tags,
        )
        .select_from(joined)
        .where(predictions.c.version == version)
        .order_by(predictions.c.id.desc())
        .limit(max(rows, 0))
    )
    since = _since(seconds, now)
    if since is not None:
        query = query.where(predictions.c.created_at >= since)
    with database_errors(engine), engine.connect() as conn:
        result = conn.execute(query).all()
    return [
        WindowRow(
            created_at=row.created_at,
            version=row.version,
            tokens=row.tokens,
            unknown_tokens=row.unknown_tokens,
            top_tags=tag_pairs(row.top_tags),
            predicted=list(row.predicted),
            feedback=None if row.tags is None else list(row.tags),
        )
        for row in result
    ]


def tag_pairs(value: Any) -> list[tuple[str, float]]:
    """A ``top_tags`` column's value as (tag, score) pairs."""
    return [(str(tag), float(score)) for tag, score in value]


def recent_versions(
    engine: Engine, seconds: float | None, limit: int = 3, now: datetime | None = None
) -> list[str]:
    """Versions with predictions logged in the last ``seconds`` (None or 0: ever), the one
    logged most recently first."""
    newest = func.max(predictions.c.id).label("newest")
    query = (
        select(predictions.c.version, newest)
        .group_by(predictions.c.version)
        .order_by(newest.desc())
        .limit(limit)
    )
    since = _since(seconds, now)
    if since is not None:
        query = query.where(predictions.c.created_at >= since)
    with database_errors(engine), engine.connect() as conn:
        return [row.version for row in conn.execute(query)]


def labelled_rows(engine: Engine, since: datetime | None = None) -> tuple[list[LabelledRow], int]:
    """Every feedback row with a title, created after ``since``, oldest first; and how many
    rows were left out because only the title's hash was kept."""
    query = select(
        feedback.c.title, feedback.c.tags, feedback.c.created_at, feedback.c.source
    ).order_by(feedback.c.created_at, feedback.c.id)
    if since is not None:
        query = query.where(feedback.c.created_at > since)
    with database_errors(engine), engine.connect() as conn:
        result = conn.execute(query).all()
    labelled = [
        LabelledRow(
            title=row.title, tags=list(row.tags), created_at=row.created_at, source=row.source
        )
        for row in result
        if row.title is not None
    ]
    return labelled, len(result) - len(labelled)
