"""``tagger versions compare`` and ``tagger versions decide``: the candidate served beside
``LATEST``'s version against it on live traffic, from the inference log (agreement on the
texts both scored, live quality on the ones that got feedback, compute time, texts seen), and
the policy that promotes or aborts it on those figures, recording why."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from shared.inference_log import RolloutRows, VersionActivity, rollout_rows, upgrade, window
from shared.live import LiveFigures, live_figures
from shared.store import ArtefactStore, Candidate
from trainer.config import ConfigError

ROW_LIMIT = 20000  # the newest paired texts (and compute times) a report or decision reads


@dataclass(frozen=True)
class Policy:
    """When ``decide`` promotes the candidate, aborts it, or waits for more evidence."""

    min_requests: int = 500  # paired texts (scored by both versions) before anything is decided
    min_agreement: float = 0.8  # top-1 agreement below this aborts
    min_feedback: int = 30  # paired texts with feedback before quality is judged
    max_quality_drop: float = 0.01  # candidate micro-F1 below stable's minus this aborts
    window_s: float | None = None  # only rows this recent (None: the newest ROW_LIMIT)

    def __post_init__(self) -> None:
        if self.min_requests < 1 or self.min_feedback < 0:
            raise ConfigError("min_requests must be at least 1 and min_feedback at least 0")
        if not 0.0 <= self.min_agreement <= 1.0 or self.max_quality_drop < 0:
            raise ConfigError("min_agreement must be in 0..1 and max_quality_drop at least 0")
        if self.window_s is not None and self.window_s <= 0:
            raise ConfigError("window_s must be above 0 (or None: no time bound)")


@dataclass(frozen=True)
class Evidence:
    """The figures a decision rests on."""

    rows: RolloutRows
    agreement: float | None  # share of paired texts with the same top-1 tag
    mean_jaccard: float | None
    mean_score_delta: float | None
    stable_quality: LiveFigures  # on the paired texts that got feedback
    candidate_quality: LiveFigures

    @property
    def paired(self) -> int:
        return len(self.rows.paired)

    @property
    def feedback(self) -> int:
        return self.stable_quality.feedback_rows


def gather(engine: Engine, stable: str, candidate: str, window_s: float | None) -> Evidence:
    """The candidate's and the stable version's figures from the log's newest rows."""
    since = datetime.now(UTC) - timedelta(seconds=window_s) if window_s else None
    rows = rollout_rows(engine, stable, candidate, since, limit=ROW_LIMIT)
    judged = rows.with_feedback()
    # P@1 and micro-F1 do not depend on the label set: a tag a version cannot know is a miss.
    return Evidence(
        rows=rows,
        agreement=_mean([float(p.agree_top1) for p in rows.paired]),
        mean_jaccard=_mean([p.jaccard for p in rows.paired]),
        mean_score_delta=_mean([p.score_delta for p in rows.paired]),
        stable_quality=live_figures(stable, [p.stable for p in judged], [], None),
        candidate_quality=live_figures(candidate, [p.candidate for p in judged], [], None),
    )


def compare(store: ArtefactStore, engine: Engine, window_s: float) -> str:
    """The report of ``tagger versions compare``: the candidate against the served version over
    the last ``window_s`` seconds (0: the newest rows, however old)."""
    latest = store.latest()
    candidate = _live_candidate(store, latest)
    if latest is None:
        return "nothing is served (no LATEST) and there is no candidate to compare"
    upgrade(engine)
    span = f"the last {window_s:g} s" if window_s else f"the newest {ROW_LIMIT} rows"
    if candidate is None:
        return _served_alone(engine, latest, window_s, span)
    evidence = gather(engine, latest, candidate.version, window_s or None)
    stable, cand = evidence.rows.stable, evidence.rows.candidate
    head = [
        f"served    {latest} (LATEST)",
        f"candidate {candidate.version} ({_describe(candidate)})",
        f"window: {span}",
        "",
        _line("", "served", "candidate"),
    ]
    table = [
        _line("texts answered", stable.answered, cand.answered),
        _line("requests answered", stable.requests, cand.requests),
        _line("texts shadow-scored", stable.shadowed, cand.shadowed),
        *_compute_lines(stable, cand),
        _line("paired texts", evidence.paired, evidence.paired),
        _line("  with feedback", evidence.feedback, evidence.feedback),
        _line("live P@1", *_both(evidence, "p_at_1")),
        _line("live micro-F1", *_both(evidence, "micro_f1")),
    ]
    summary = (
        f"on {evidence.paired} paired texts: top-1 agreement {_fmt(evidence.agreement)}, "
        f"mean Jaccard {_fmt(evidence.mean_jaccard)}, "
        f"mean score change {_fmt(evidence.mean_score_delta, signed=True)} (candidate - served)"
    )
    return "\n".join([*head, *table, "", summary])


def decide(store: ArtefactStore, engine: Engine, policy: Policy) -> str:
    """Promote, abort or keep waiting on the candidate by ``policy``; one line saying which and
    why. A promotion or an abort goes through the store only if the candidate is still the one
    the figures are about, with the figures as the recorded reason."""
    latest = store.latest()
    candidate = _live_candidate(store, latest)
    if latest is None or candidate is None:
        return f"waiting: no candidate beside LATEST ({latest or 'nothing served'}) to decide on"
    version = candidate.version
    upgrade(engine)
    evidence = gather(engine, latest, version, policy.window_s)
    agreement = evidence.agreement or 0.0  # min_requests >= 1: not None past the first check
    seen = f"top-1 agreement {agreement:.3f} on {evidence.paired} paired texts"
    if evidence.paired < policy.min_requests:
        return (
            f"waiting: {evidence.paired}/{policy.min_requests} paired texts of {version} beside "
            f"{latest} ({seen})"
        )
    if agreement < policy.min_agreement:
        reason = f"{seen} is below {policy.min_agreement:g}"
        store.abort_candidate(f"decide: {reason}", expected=version)
        return f"aborted {version} (LATEST stays {latest}): {reason}"
    if evidence.feedback < policy.min_feedback:
        return (
            f"waiting: {evidence.feedback}/{policy.min_feedback} paired texts with feedback "
            f"of {version} beside {latest} ({seen})"
        )
    stable_f1 = evidence.stable_quality.micro_f1 or 0.0
    candidate_f1 = evidence.candidate_quality.micro_f1 or 0.0
    quality = (
        f"live micro-F1 {candidate_f1:.3f} against {latest}'s {stable_f1:.3f} on "
        f"{evidence.feedback} paired texts with feedback"
    )
    if candidate_f1 < stable_f1 - policy.max_quality_drop:
        reason = f"{quality}: a drop over {policy.max_quality_drop:g} ({seen})"
        store.abort_candidate(f"decide: {reason}", expected=version)
        return f"aborted {version} (LATEST stays {latest}): {reason}"
    reason = f"{seen}, {quality}"
    previous = store.promote_candidate(version, f"decide: {reason}")
    return f"promoted {version} (LATEST was {previous}): {reason}"


def _live_candidate(store: ArtefactStore, latest: str | None) -> Candidate | None:
    """The candidate, unless it names what LATEST names (a promotion cut short: none)."""
    candidate = store.candidate()
    return None if candidate is None or candidate.version == latest else candidate


def _served_alone(engine: Engine, latest: str, window_s: float, span: str) -> str:
    rows = window(engine, latest, ROW_LIMIT, window_s or None)
    figures = live_figures(latest, rows, [], None)
    return "\n".join(
        [
            f"no candidate beside served {latest}; window: {span}",
            "",
            _line("texts logged", figures.rows),
            _line("  with feedback", figures.feedback_rows),
            _line("live P@1", _fmt(figures.p_at_1)),
            _line("live micro-F1", _fmt(figures.micro_f1)),
        ]
    )


def _describe(candidate: Candidate) -> str:
    share = f", answers {candidate.fraction:.0%}" if candidate.fraction else ""
    return f"{candidate.mode}, sample {candidate.sample:g}{share}, since {candidate.since}"


def _compute_lines(stable: VersionActivity, candidate: VersionActivity) -> list[str]:
    return [
        _line(
            f"compute ms p{q}",
            _fmt(_percentile(stable.compute_ms, q), 1),
            _fmt(_percentile(candidate.compute_ms, q), 1),
        )
        for q in (50, 95)
    ]


def _both(evidence: Evidence, field: str) -> tuple[str, str]:
    return (
        _fmt(getattr(evidence.stable_quality, field)),
        _fmt(getattr(evidence.candidate_quality, field)),
    )


def _line(name: str, *cells: object) -> str:
    return f"{name:<22}" + "".join(f"{cell!s:>12}" for cell in cells)


def _fmt(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (None without values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]
