"""What is read back to decide on a candidate served beside the stable version: each version's
activity by role, and the texts both scored (one answering, the other as its shadow) with the
shadow row's comparison and, where a report came, the feedback both are judged on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, distinct, func, select

from shared.inference_log.engine import database_errors
from shared.inference_log.queries import WindowRow, tag_pairs
from shared.inference_log.rows import ROLE_ANSWER, ROLE_SHADOW
from shared.inference_log.schema import feedback, predictions


@dataclass(frozen=True)
class VersionActivity:
    """One version's logged rows in the window."""

    version: str
    answered: int  # texts it answered
    requests: int  # distinct requests it answered
    shadowed: int  # texts it scored as the shadow of the other version's answer
    compute_ms: list[float]  # its model passes' times (both roles), newest first


@dataclass(frozen=True)
class Paired:
    """A text both versions scored: who answered, how the candidate agreed with the stable
    version, and both rows as the live figures read them (feedback None: no report yet)."""

    answered_by: str
    agree_top1: bool
    jaccard: float
    score_delta: float
    stable: WindowRow
    candidate: WindowRow


@dataclass(frozen=True)
class RolloutRows:
    """The window's rows of a stable version and its candidate."""

    stable: VersionActivity
    candidate: VersionActivity
    paired: list[Paired]  # newest first

    def with_feedback(self) -> list[Paired]:
        """The paired texts that got a report."""
        return [p for p in self.paired if p.stable.feedback is not None]


def rollout_rows(
    engine: Engine,
    stable: str,
    candidate: str,
    since: datetime | None,
    limit: int = 20000,
) -> RolloutRows:
    """Activity of ``stable`` and ``candidate`` logged at or after ``since`` (None: ever), and
    their newest ``limit`` paired texts (a shadow row of one beside the answer row of the other;
    shadow rows of either beside a third version are left out), each with its feedback."""
    with database_errors(engine), engine.connect() as conn:
        counts = conn.execute(_counts((stable, candidate), since)).all()
        samples = {
            version: [
                float(ms) for ms in conn.execute(_compute_ms(version, since, limit)).scalars()
            ]
            for version in (stable, candidate)
        }
        joined = conn.execute(_paired((stable, candidate), since, limit)).all()

    def activity(version: str) -> VersionActivity:
        by_role = {row.role: row for row in counts if row.version == version}
        answer, shadow = by_role.get(ROLE_ANSWER), by_role.get(ROLE_SHADOW)
        return VersionActivity(
            version=version,
            answered=answer.texts if answer else 0,
            requests=answer.requests if answer else 0,
            shadowed=shadow.texts if shadow else 0,
            compute_ms=samples[version],
        )

    paired: list[Paired] = []
    seen: set[int] = set()
    for row in joined:
        if row.shadow_id in seen:  # a request id logged twice: its newest answer only
            continue
        seen.add(row.shadow_id)
        tags = None if row.tags is None else list(row.tags)
        answer_row = _window_row(row, "a_", tags)
        shadow_row = _window_row(row, "s_", tags)
        stable_row, candidate_row = (
            (answer_row, shadow_row) if row.a_version == stable else (shadow_row, answer_row)
        )
        paired.append(
            Paired(
                answered_by=row.a_version,
                agree_top1=bool(row.agree_top1),
                jaccard=float(row.jaccard),
                score_delta=float(row.score_delta),
                stable=stable_row,
                candidate=candidate_row,
            )
        )
    return RolloutRows(activity(stable), activity(candidate), paired)


def _counts(versions: tuple[str, str], since: datetime | None) -> Select[Any]:
    query = (
        select(
            predictions.c.version,
            predictions.c.role,
            func.count().label("texts"),
            func.count(distinct(predictions.c.request_id)).label("requests"),
        )
        .where(predictions.c.version.in_(versions))
        .group_by(predictions.c.version, predictions.c.role)
    )
    return query if since is None else query.where(predictions.c.created_at >= since)


def _compute_ms(version: str, since: datetime | None, limit: int) -> Select[Any]:
    query = (
        select(predictions.c.compute_ms)
        .where(predictions.c.version == version, predictions.c.compute_ms.is_not(None))
        .order_by(predictions.c.id.desc())
        .limit(max(limit, 0))
    )
    return query if since is None else query.where(predictions.c.created_at >= since)


def _paired(versions: tuple[str, str], since: datetime | None, limit: int) -> Select[Any]:
    shadow = predictions.alias("shadow")
    answer = predictions.alias("answer")
    same_text = (answer.c.request_id == shadow.c.request_id) & (
        answer.c.position == shadow.c.position
    )
    reported = (feedback.c.request_id == shadow.c.request_id) & (
        feedback.c.position == shadow.c.position
    )
    side = [
        table.c[name].label(prefix + name)
        for table, prefix in ((answer, "a_"), (shadow, "s_"))
        for name in ("created_at", "version", "tokens", "unknown_tokens", "top_tags", "predicted")
    ]
    query = (
        select(
            shadow.c.id.label("shadow_id"),
            shadow.c.agree_top1,
            shadow.c.jaccard,
            shadow.c.score_delta,
            feedback.c.tags,
            *side,
        )
        .select_from(shadow.join(answer, same_text).outerjoin(feedback, reported))
        .where(
            shadow.c.role == ROLE_SHADOW,
            shadow.c.version.in_(versions),
            shadow.c.agree_top1.is_not(None),
            answer.c.role == ROLE_ANSWER,
            answer.c.version.in_(versions),
            answer.c.version != shadow.c.version,
        )
        .order_by(shadow.c.id.desc(), answer.c.id.desc())
        .limit(max(limit, 0))
    )
    return query if since is None else query.where(shadow.c.created_at >= since)


def _window_row(row: Any, prefix: str, tags: list[str] | None) -> WindowRow:
    def get(name: str) -> Any:
        return getattr(row, prefix + name)

    return WindowRow(
        created_at=get("created_at"),
        version=str(get("version")),
        tokens=int(get("tokens")),
        unknown_tokens=int(get("unknown_tokens")),
        top_tags=tag_pairs(get("top_tags")),
        predicted=list(get("predicted")),
        feedback=tags,
    )
