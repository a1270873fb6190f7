"""Live figures of the recently served versions, recomputed from the inference log on a timer.

Every ``refresh_s`` a worker thread reads each version's window (the newest ``window_rows``
logged rows, no older than ``window_s``) and computes its :class:`~shared.live.LiveFigures`
against its labels and reference profile: the served version's from the loaded model, the
others' from their folders in the store (read once per version). A version pruned from the
store has no labels: its figures leave out the share of feedback tags it cannot predict.
While the database cannot be read the figures are kept as they were, with their time, and one
warning is logged per outage. ``GET /model`` (``live``) and ``/metrics`` read the last figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy import Engine

from api.model_manager import LoadedModel
from api.schemas import LiveDrift, LiveQuality, LiveSection, LiveTagRate, LiveVersion, LiveWindow
from shared.inference_log import DatabaseError, recent_versions, window
from shared.live import LiveFigures, live_figures, load_profile, top_tags_for_labels
from shared.predictor.onnx_runner import read_labels
from shared.store import ArtefactError, ArtefactStore

log = logging.getLogger(__name__)

MAX_VERSIONS = 3  # the served version and up to two others seen recently
TOP_TAGS = 10  # tags with a metric label of their own; the rest are "other"
OTHER_TAG = "other"
NO_REFERENCE = "no reference"


@dataclass(frozen=True)
class VersionLive:
    """A version's figures with what they are compared to."""

    figures: LiveFigures
    profile: dict[str, Any] | None
    top_tags: list[str]

    def tag_rates(self) -> list[tuple[str, float, float | None]]:
        """The top tags' (tag, live rate, reference rate), then "other": the mean rates of the
        remaining tags (so it reads on the same scale as one tag; absent when none remain)."""
        rates = self.figures.tag_rates
        listed = [(tag, *rates[tag]) for tag in self.top_tags if tag in rates]
        rest = [rates[tag] for tag in rates if tag not in set(self.top_tags)]
        if rest:
            references = [ref for _, ref in rest if ref is not None]
            listed.append(
                (
                    OTHER_TAG,
                    sum(live for live, _ in rest) / len(rest),
                    sum(references) / len(references) if len(references) == len(rest) else None,
                )
            )
        return listed


@dataclass(frozen=True)
class _Reference:
    labels: list[str] | None  # None: the version's folder is gone (pruned)
    profile: dict[str, Any] | None
    threshold: float | None


class LiveMonitor:
    """Holds the last live figures and recomputes them (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        store: ArtefactStore,
        served: Callable[[], LoadedModel | None],
        window_rows: int,
        window_s: float,
        refresh_s: float,
    ) -> None:
        self.engine, self.store, self.served = engine, store, served
        self.window_rows, self.window_s, self.refresh_s = window_rows, window_s, refresh_s
        self.versions: tuple[VersionLive, ...] = ()
        self.updated_at: dt.datetime | None = None
        self.error: str | None = None
        self._references: dict[str, _Reference] = {}

    async def run(self) -> None:
        """Refresh every ``refresh_s`` until cancelled (the app's lifespan runs it)."""
        while True:
            try:
                await anyio.to_thread.run_sync(self.refresh)
            except Exception:  # the loop must outlive any one refresh
                log.exception("computing the live figures failed")
            await asyncio.sleep(self.refresh_s)

    def refresh(self, now: dt.datetime | None = None) -> None:
        """Recompute every version's figures (blocking: a worker thread)."""
        now = now or dt.datetime.now(dt.UTC)
        seconds = self.window_s or None
        try:
            current = self.served()
            names = recent_versions(self.engine, seconds, limit=MAX_VERSIONS, now=now)
            if current is not None:
                names = [current.version, *(v for v in names if v != current.version)]
            computed = tuple(
                self._figures(version, current, seconds, now) for version in names[:MAX_VERSIONS]
            )
        except DatabaseError as exc:
            if self.error is None:
                log.warning(
                    "live figures kept as they were: the inference log cannot be read: %s", exc
                )
            self.error = str(exc)
            return
        if self.error is not None:
            log.info("live figures: the inference log can be read again")
        self.versions, self.updated_at, self.error = computed, now, None

    def _figures(
        self, version: str, current: LoadedModel | None, seconds: float | None, now: dt.datetime
    ) -> VersionLive:
        rows = window(self.engine, version, self.window_rows, seconds, now=now)
        if current is not None and current.version == version:
            reference = _Reference(
                current.predictor.labels, current.profile, current.predictor.threshold
            )
        else:
            reference = self._reference(version)
        figures = live_figures(
            version, rows, reference.labels or [], reference.profile, reference.threshold
        )
        if reference.labels is None:
            figures = dataclasses.replace(figures, unknown_tag_share=None)
        return VersionLive(
            figures, reference.profile, top_tags_for_labels(figures, reference.profile, TOP_TAGS)
        )

    def _reference(self, version: str) -> _Reference:
        """Labels and profile of a version that is not served, from its folder (cached)."""
        known = self._references.get(version)
        if known is None:
            labels: list[str] | None = None
            profile: dict[str, Any] | None = None
            try:
                folder = self.store.version_path(version)
                labels = read_labels(folder)
                profile = load_profile(folder)
            except (OSError, ValueError, ArtefactError) as exc:
                log.info("live figures of %s: %s", version, exc)
            threshold = float(profile["threshold"]) if profile is not None else None
            known = self._references[version] = _Reference(labels, profile, threshold)
        return known

    def section(self, served: str | None) -> LiveSection:
        """The ``live`` section of ``GET /model``."""
        versions = [_version_out(v) for v in self.versions]
        return LiveSection(
            enabled=self.refresh_s > 0,
            window=LiveWindow(
                rows=self.window_rows, seconds=self.window_s or None, refresh_s=self.refresh_s
            ),
            updated_at=_iso(self.updated_at),
            error=self.error,
            served=next((v for v in versions if v.version == served), None),
            others=[v for v in versions if v.version != served],
        )


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _version_out(live: VersionLive) -> LiveVersion:
    f = live.figures
    metrics = live.profile.get("metrics") if live.profile is not None else None
    return LiveVersion(
        version=f.version,
        rows=f.rows,
        feedback_rows=f.feedback_rows,
        oldest=_iso(f.oldest),
        newest=_iso(f.newest),
        quality=LiveQuality(p_at_1=f.p_at_1, recall_at_5=f.recall_at_5, micro_f1=f.micro_f1),
        reference_quality=dict(metrics) if metrics is not None else None,
        drift=(
            LiveDrift(psi_top_score=f.psi_top_score, psi_tokens=f.psi_tokens)
            if f.reference
            else NO_REFERENCE
        ),
        unknown_feedback_tag_share=f.unknown_tag_share,
        no_tag_share=f.no_tag_share,
        unknown_token_rate=f.unknown_token_rate,
        tags=[LiveTagRate(tag=t, live=lv, reference=ref) for t, lv, ref in live.tag_rates()],
    )
