"""The live figures of one served version over a window of its logged predictions: quality on
the rows that got feedback, each tag's predicted rate against the reference, the drift of the
top score and of the title length (PSI), and the share of feedback tags the model cannot know.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.live.drift import psi
from shared.live.profile import histogram


class RowLike(Protocol):
    """A logged prediction with its feedback (``shared.inference_log.WindowRow`` is one)."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def tokens(self) -> int: ...
    @property
    def unknown_tokens(self) -> int: ...
    @property
    def top_tags(self) -> Sequence[tuple[str, float]]: ...
    @property
    def predicted(self) -> Sequence[str]: ...
    @property
    def feedback(self) -> Sequence[str] | None: ...


@dataclass(frozen=True)
class LiveFigures:
    """A version's figures over a window; None where the window cannot say (no feedback, no
    rows, or no reference profile)."""

    version: str
    rows: int
    feedback_rows: int
    p_at_1: float | None
    recall_at_5: float | None
    micro_f1: float | None
    unknown_tag_share: float | None
    no_tag_share: float | None
    unknown_token_rate: float | None
    psi_top_score: float | None
    psi_tokens: float | None
    tag_rates: dict[str, tuple[float, float | None]]  # tag: (live, reference) predicted rate
    reference: bool
    oldest: datetime | None
    newest: datetime | None


def live_figures(
    version: str,
    rows: Sequence[RowLike],
    labels: list[str],
    profile: dict[str, Any] | None,
    threshold: float | None = None,
) -> LiveFigures:
    """The figures of ``rows`` (a version's window) for a model with ``labels``, compared to its
    ``profile``. ``threshold`` (default: the profile's) tells which rows no tag reached it for."""
    if threshold is None and profile is not None:
        threshold = float(profile["threshold"])
    top_scores = [row.top_tags[0][1] for row in rows if row.top_tags]
    tokens = [row.tokens for row in rows]
    total_tokens = sum(tokens)
    quality = _quality(rows, set(labels))
    return LiveFigures(
        version=version,
        rows=len(rows),
        feedback_rows=quality.rows,
        p_at_1=quality.p_at_1,
        recall_at_5=quality.recall_at_5,
        micro_f1=quality.micro_f1,
        unknown_tag_share=quality.unknown_tag_share,
        no_tag_share=(
            sum(score < threshold for score in top_scores) / len(top_scores)
            if threshold is not None and top_scores
            else None
        ),
        unknown_token_rate=(
            sum(row.unknown_tokens for row in rows) / total_tokens if total_tokens else None
        ),
        psi_top_score=_psi_against(profile, "top_score", top_scores),
        psi_tokens=_psi_against(profile, "tokens", tokens),
        tag_rates=_tag_rates(rows, labels, profile),
        reference=profile is not None,
        oldest=min((row.created_at for row in rows), default=None),
        newest=max((row.created_at for row in rows), default=None),
    )


def top_tags_for_labels(
    figures: LiveFigures, profile: dict[str, Any] | None, n: int = 10
) -> list[str]:
    """The ``n`` tags worth a metric label of their own (the rest go under "other"): those with
    the highest true rate in the reference, or without one the highest live predicted rate."""
    if profile is not None:
        rates = {tag: float(v["true_rate"]) for tag, v in profile["tags"].items()}
    else:
        rates = {tag: live for tag, (live, _) in figures.tag_rates.items()}
    return sorted(rates, key=lambda tag: (-rates[tag], tag))[: max(n, 0)]


@dataclass(frozen=True)
class _Quality:
    rows: int
    p_at_1: float | None = None
    recall_at_5: float | None = None
    micro_f1: float | None = None
    unknown_tag_share: float | None = None


def _quality(rows: Sequence[RowLike], labels: set[str]) -> _Quality:
    """P@1, R@5 and micro-F1 of decided tags on the rows with (non-empty) feedback; a feedback
    tag the model does not know is a miss for each."""
    hits_at_1 = 0
    recall_sum = 0.0
    tp = fp = fn = 0
    occurrences = unknown = 0
    judged = 0
    for row in rows:
        if not row.feedback:
            continue
        truth = set(row.feedback)
        judged += 1
        occurrences += len(row.feedback)
        unknown += sum(tag not in labels for tag in row.feedback)
        ranked = [tag for tag, _ in row.top_tags]
        hits_at_1 += bool(ranked) and ranked[0] in truth
        recall_sum += len(set(ranked[:5]) & truth) / len(truth)
        decided = set(row.predicted)
        tp += len(decided & truth)
        fp += len(decided - truth)
        fn += len(truth - decided)
    if not judged:
        return _Quality(rows=0)
    return _Quality(
        rows=judged,
        p_at_1=hits_at_1 / judged,
        recall_at_5=recall_sum / judged,
        micro_f1=2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        unknown_tag_share=unknown / occurrences,
    )


def _psi_against(profile: dict[str, Any] | None, key: str, values: Sequence[float]) -> float | None:
    """PSI of ``values`` binned as the profile's ``key`` histogram; None without either."""
    if profile is None or not values:
        return None
    reference = profile[key]
    return psi(reference["shares"], histogram(values, reference["edges"]))


def _tag_rates(
    rows: Sequence[RowLike], labels: list[str], profile: dict[str, Any] | None
) -> dict[str, tuple[float, float | None]]:
    counts = dict.fromkeys(labels, 0)
    for row in rows:
        for tag in set(row.predicted):
            if tag in counts:
                counts[tag] += 1
    reference = profile["tags"] if profile is not None else {}
    return {
        tag: (
            count / len(rows) if rows else 0.0,
            float(reference[tag]["predicted_rate"]) if tag in reference else None,
        )
        for tag, count in counts.items()
    }
