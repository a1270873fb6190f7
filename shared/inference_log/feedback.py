"""Feedback: the tags an author chose for a logged prediction (one report per text, a later
one replacing it), and labelled titles imported in bulk."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from shared.inference_log.engine import database_errors
from shared.inference_log.rows import ROLE_ANSWER, title_hash
from shared.inference_log.schema import feedback, predictions

SOURCE_API = "api"
SOURCE_IMPORT = "import"


class NotLogged(LookupError):
    """The request id (and position) is not in the inference log."""


@dataclass(frozen=True)
class FeedbackResult:
    """A stored report: which prediction it labels and whether it replaced an earlier one."""

    request_id: str
    position: int
    version: str
    replaced: bool


def record_feedback(
    engine: Engine,
    request_id: str,
    position: int,
    tags: list[str],
    now: datetime | None = None,
) -> FeedbackResult:
    """Store ``tags`` as the report for the newest logged answer of ``request_id`` at
    ``position`` (never a shadow row), replacing an earlier report for it; raise NotLogged when
    none is logged."""
    created_at = now or datetime.now(UTC)
    with database_errors(engine):
        try:
            return _record(engine, request_id, position, tags, created_at)
        except IntegrityError:
            # Two first reports at once: both found none to replace; the other one won.
            return _record(engine, request_id, position, tags, created_at)


def _record(
    engine: Engine, request_id: str, position: int, tags: list[str], created_at: datetime
) -> FeedbackResult:
    with engine.begin() as conn:
        logged = _logged(conn, request_id, position)
        if logged is None:
            raise NotLogged(
                f"request id {request_id!r} (text {position}) is not in the inference log"
            )
        version, title, hashed = logged
        same = (feedback.c.request_id == request_id) & (feedback.c.position == position)
        replaced = conn.execute(delete(feedback).where(same)).rowcount > 0
        conn.execute(
            insert(feedback).values(
                request_id=request_id,
                position=position,
                source=SOURCE_API,
                title=title,
                title_hash=hashed,
                tags=list(tags),
                created_at=created_at,
            )
        )
    return FeedbackResult(request_id, position, version, replaced)


def _logged(conn: Connection, request_id: str, position: int) -> tuple[str, str | None, str] | None:
    row = conn.execute(
        select(predictions.c.version, predictions.c.title, predictions.c.title_hash)
        .where(
            predictions.c.request_id == request_id,
            predictions.c.position == position,
            # The version that answered: a shadow row of the same text labels nothing.
            predictions.c.role == ROLE_ANSWER,
        )
        .order_by(predictions.c.id.desc())
        .limit(1)
        # PostgreSQL: reports for one text wait for each other here, so a later one always
        # sees (and replaces) the earlier; SQLite has one writer at a time anyway.
        .with_for_update()
    ).first()
    return None if row is None else (row.version, row.title, row.title_hash)


def import_feedback(
    engine: Engine, titles: list[str], tags: list[list[str]], now: datetime | None = None
) -> int:
    """Store labelled titles (source "import"); returns how many rows were inserted."""
    if len(titles) != len(tags):
        raise ValueError(f"{len(titles)} titles but {len(tags)} tag lists")
    if not titles:
        return 0
    created_at = now or datetime.now(UTC)
    values = [
        {
            "request_id": None,
            "position": None,
            "source": SOURCE_IMPORT,
            "title": title,
            "title_hash": title_hash(title),
            "tags": list(row_tags),
            "created_at": created_at,
        }
        for title, row_tags in zip(titles, tags, strict=True)
    ]
    with database_errors(engine), engine.begin() as conn:
        conn.execute(insert(feedback), values)
    return len(values)
