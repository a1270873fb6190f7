"""What ``tagger report`` shows, gathered and laid out: each version's window of logged rows,
its labels and reference profile from the artefact store, its live figures (as a whole and per
time bucket), and the table of them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.inference_log import WindowRow
from shared.live import LiveFigures, live_figures, load_profile, top_tags_for_labels
from shared.store import ArtefactError, ArtefactStore

log = logging.getLogger(__name__)

TOP_TAGS = 10
BUCKETS = 10


@dataclass(frozen=True)
class VersionWindow:
    """One version's logged rows over the window, what the store says of it, its figures."""

    version: str
    rows: list[WindowRow]
    labels: list[str]
    profile: dict[str, Any] | None
    in_store: bool
    figures: LiveFigures
    top_tags: list[str]


def gather(version: str, rows: list[WindowRow], store: ArtefactStore) -> VersionWindow:
    """The figures of ``version``'s rows, against its profile when the store still has it."""
    labels, profile, in_store = _from_store(store, version)
    if not in_store:
        labels = sorted({tag for row in rows for tag, _ in row.top_tags})
    figures = live_figures(version, rows, labels, profile)
    if not in_store:  # its label set is unknown: which feedback tags it knew cannot be said
        figures = dataclasses.replace(figures, unknown_tag_share=None)
    top = top_tags_for_labels(figures, profile, TOP_TAGS)
    return VersionWindow(version, rows, labels, profile, in_store, figures, top)


def _from_store(
    store: ArtefactStore, version: str
) -> tuple[list[str], dict[str, Any] | None, bool]:
    from shared.predictor.onnx_runner import read_labels

    try:
        folder = store.version_path(version)
        labels = read_labels(folder)
    except (ArtefactError, OSError, ValueError):
        return [], None, False
    try:
        profile = load_profile(folder)
    except ValueError as exc:
        log.warning("%s: no reference (%s)", version, exc)
        profile = None
    return labels, profile, True


# (row name, LiveFigures field, where the reference is in the profile)
METRIC_ROWS: list[tuple[str, str, tuple[str, ...] | None]] = [
    ("rows", "rows", None),
    ("feedback rows", "feedback_rows", None),
    ("P@1", "p_at_1", ("metrics", "p_at_1")),
    ("R@5", "recall_at_5", ("metrics", "recall_at_5")),
    ("micro-F1", "micro_f1", ("metrics", "micro_f1")),
    ("PSI top score", "psi_top_score", None),
    ("PSI tokens", "psi_tokens", None),
    ("no-tag share", "no_tag_share", ("no_tag_share",)),
    ("unknown-tag share", "unknown_tag_share", None),
    ("unknown-token rate", "unknown_token_rate", ("unknown_token_rate",)),
]


def _number(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _reference(profile: dict[str, Any] | None, path: tuple[str, ...] | None) -> float | None:
    value: Any = profile
    for key in path or ():
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if path and isinstance(value, int | float) else None


def table_rows(windows: list[VersionWindow]) -> list[tuple[str, list[str]]]:
    """The metric table: one row per figure, one cell per version (``live / reference``)."""
    table = []
    for name, field, path in METRIC_ROWS:
        cells = []
        for w in windows:
            cell = _number(getattr(w.figures, field))
            if path is not None:
                cell += f" / {_number(_reference(w.profile, path))}"
            cells.append(cell)
        table.append((name, cells))
    return table


def tag_rows(w: VersionWindow) -> list[tuple[str, str, str]]:
    """The version's top tags: (tag, live predicted rate, reference predicted rate)."""
    return [
        (tag, _number(live), _number(ref))
        for tag in w.top_tags
        for live, ref in [w.figures.tag_rates.get(tag, (0.0, None))]
    ]


def version_note(w: VersionWindow) -> str:
    """Why a version's figures have no reference, or an empty string."""
    if not w.in_store:
        return "no longer in the artefact store: figures without reference"
    if w.profile is None:
        return "no reference profile (published before profiles): figures without reference"
    return ""


def render_text(windows: list[VersionWindow]) -> str:
    """The terminal table, then each version's top tags' predicted rates against the reference."""
    table = [("", [w.version for w in windows]), *table_rows(windows)]
    width = max(len(name) for name, _ in table)
    columns = [max(len(cells[i]) for _, cells in table) for i in range(len(windows))]
    lines = [
        "  ".join(
            [name.ljust(width), *(c.ljust(n) for c, n in zip(cells, columns, strict=True))]
        ).rstrip()
        for name, cells in table
    ]
    for w in windows:
        note = version_note(w)
        if note:
            lines.append(f"{w.version}: {note}")
    for w in windows:
        lines.append("")
        lines.append(f"top {len(w.top_tags)} tags of {w.version}: predicted rate, live / reference")
        tag_width = max((len(t) for t in w.top_tags), default=3)
        lines += [f"  {tag.ljust(tag_width)}  {live} / {ref}" for tag, live, ref in tag_rows(w)]
    return "\n".join(lines)


@dataclass(frozen=True)
class Timeline:
    """The window cut into equal time buckets: their mid-times, and each version's figures per
    bucket (None where it logged nothing)."""

    times: list[datetime]
    figures: dict[str, list[LiveFigures | None]]


def timeline(windows: list[VersionWindow], buckets: int = BUCKETS) -> Timeline:
    """The live figures over time, the span of every version's rows cut into ``buckets``."""
    stamps = [row.created_at for w in windows for row in w.rows]
    start, end = min(stamps), max(stamps)
    n = buckets if end > start else 1
    width = (end - start) / n
    times = [start + width * (i + 0.5) for i in range(n)]
    figures: dict[str, list[LiveFigures | None]] = {}
    for w in windows:
        cut: list[list[WindowRow]] = [[] for _ in range(n)]
        for row in w.rows:
            cut[min(n - 1, int((row.created_at - start) / width)) if n > 1 else 0].append(row)
        figures[w.version] = [
            live_figures(w.version, rows, w.labels, w.profile) if rows else None for rows in cut
        ]
    return Timeline(times, figures)
