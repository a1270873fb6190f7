"""Which models the API holds, and hot reload: watch ``LATEST`` and ``CANDIDATE``, load off the
request path, swap.

A new version is verified (hashing its files), built and given a warm-up prediction on a
loader thread of its own, never on the torch thread that serves predictions, so serving does
not stall for the length of a load; the serving thread then runs one short warm-up prediction
of its own (it also proves the model works where it will serve). A swap is one reference
assignment: requests that already took the old :class:`LoadedModel` finish on it, new ones get
the new one.

A version that fails verification, loading or a warm-up is remembered as failed with its
error, reported by ``/model``, and the model that was serving keeps serving. While ``LATEST``
names it, it is tried again after ``retry_initial_s``, then after twice that, and so on up to
``retry_max_s`` between tries (a file being copied in, a full disk freed, a permission fixed);
at once when ``LATEST`` is moved to it (a rollback naming it on purpose).

The rollout candidate (``CANDIDATE``, :class:`~shared.store.Candidate`) is followed the same way,
on the same load path and with the same failure records, into :attr:`ModelManager.candidate`
beside the served model: at most two versions are loaded (an old candidate is let go before a
new one loads, and the candidate before a new ``LATEST`` that is not it). When ``LATEST`` moves
to the candidate, the candidate becomes the served model without a reload. A ``CANDIDATE`` that
is gone, names ``LATEST``'s version, names a version that fails, or whose folder is gone: no
candidate. An unreadable one: no candidate, its error in ``candidate_error``; the served model is
never touched by anything about the candidate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from api.observe import LoadObserver
from shared.live import load_profile
from shared.predictor import TagPredictor, load_predictor
from shared.store import MEND_LATEST, ArtefactError, ArtefactStore, Candidate, verify

log = logging.getLogger(__name__)

WARMUP_TEXT = "How do I merge two dictionaries in Python?"


def _now_iso(offset_s: float = 0.0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return moment.isoformat(timespec="seconds")


@dataclass
class FailedLoad:
    """Why a version could not be served, how often it was tried, and when it is tried next."""

    error: str
    attempts: int
    last_attempt_at: str  # ISO 8601, UTC
    next_retry_at: str  # ISO 8601, UTC; only tried then if LATEST still names it
    retry_after: float  # the same moment on the manager's monotonic clock


@dataclass(frozen=True)
class LoadedModel:
    """A verified, warmed-up model and what the API reports about it."""

    version: str
    predictor: TagPredictor
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    training: dict[str, Any]
    loaded_at: str
    profile: dict[str, Any] | None = None  # the reference for the live figures (shared.live)


def _read_profile(folder: Path) -> dict[str, Any] | None:
    """The version's reference profile; a version without one (or with a broken one, which
    only costs the drift figures) still serves."""
    try:
        return load_profile(folder)
    except ValueError as exc:
        log.warning("serving %s without a drift reference: %s", folder.name, exc)
        return None


@dataclass
class ModelManager:
    """Holds the served model and loads new versions as ``LATEST`` moves."""

    store: ArtefactStore
    verify_checksums: bool = True
    torch_executor: Executor | None = None  # the one thread that serves predictions
    loader_executor: Executor | None = None  # where versions are verified, built, warmed up
    precision: str = "fp32"
    retry_initial_s: float = 5.0
    retry_max_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    backend: str = "auto"
    threads: int = 0
    spinning: str | None = None  # ONNX Runtime's idle threads (API_ONNX_SPINNING)
    current: LoadedModel | None = None
    failed: dict[str, FailedLoad] = field(default_factory=dict)
    latest_seen: str | None = None  # the last version name read from LATEST
    latest_error: str | None = None  # why LATEST cannot be read now
    candidate: LoadedModel | None = None  # the rollout candidate, loaded beside ``current``
    rollout: Candidate | None = None  # what CANDIDATE names (None: none, or LATEST's version)
    candidate_error: str | None = None  # why CANDIDATE cannot be read now
    candidate_seen: str | None = None  # the last version name read from CANDIDATE
    observer: LoadObserver | None = None  # told of each load attempt and its outcome
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def load_version(self, version: str) -> LoadedModel:
        """Verify (if asked), build and warm up a version (blocking: the loader thread)."""
        folder = self.store.version_path(version)
        if self.verify_checksums:
            verify(folder)
        predictor = load_predictor(
            folder,
            backend=self.backend,
            precision=self.precision,
            verify_checksums=False,
            threads=self.threads,
            spinning=self.spinning,
        )
        predictor.predict([WARMUP_TEXT], top_k=1)
        manifest = json.loads((folder / "manifest.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        training = yaml.safe_load((folder / "train_config.yaml").read_text()) or {}
        return LoadedModel(
            version=version,
            predictor=predictor,
            manifest=manifest,
            metrics=metrics,
            training=training,
            loaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            profile=_read_profile(folder),
        )

    async def _try_load(self, version: str) -> LoadedModel | None:
        observer = self.observer
        if observer is not None:
            observer.observe_reload_attempt()
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            loaded = await loop.run_in_executor(self.loader_executor, self.load_version, version)
            # One short pass where it will serve (queued behind at most the running batch).
            await loop.run_in_executor(
                self.torch_executor, loaded.predictor.predict, [WARMUP_TEXT], 1
            )
        except Exception as exc:
            # ArtefactError: the manifest or a checksum; anything else: building or warming up.
            stage = "verification" if isinstance(exc, ArtefactError) else "load"
            if observer is not None:
                observer.observe_reload_failure(stage)
            self._record_failure(version, f"{type(exc).__name__}: {exc}", stage)
            return None
        if self.failed.pop(version, None) is not None:
            log.info("version %s loaded after earlier failures", version)
        if observer is not None:
            observer.observe_load(loaded.predictor.labels, time.monotonic() - started)
        return loaded

    def _record_failure(self, version: str, message: str, stage: str) -> None:
        previous = self.failed.get(version)
        attempts = previous.attempts + 1 if previous else 1
        delay = min(self.retry_initial_s * 2 ** (attempts - 1), self.retry_max_s)
        self.failed[version] = FailedLoad(
            error=message,
            attempts=attempts,
            last_attempt_at=_now_iso(),
            next_retry_at=_now_iso(delay),
            retry_after=self.clock() + delay,
        )
        log.error(
            "version %s cannot be served (attempt %d), retrying in %.0f s if LATEST still "
            "names it: %s",
            version,
            attempts,
            delay,
            message,
            extra={"version": version, "reason": stage},
        )

    def loaded(self, version: str) -> LoadedModel | None:
        """The loaded model of ``version`` (served or candidate), if it is loaded."""
        for model in (self.current, self.candidate):
            if model is not None and model.version == version:
                return model
        return None

    def loaded_versions(self) -> list[str]:
        """The versions loaded now: the served one first, then the candidate."""
        return [m.version for m in (self.current, self.candidate) if m is not None]

    def active_rollout(self) -> tuple[Candidate, LoadedModel] | None:
        """The candidate pointer and its loaded model, when the candidate can take traffic."""
        rollout, candidate = self.rollout, self.candidate
        if rollout is None or candidate is None or rollout.version != candidate.version:
            return None
        return rollout, candidate

    async def refresh(self, candidate: bool = True) -> bool:
        """Load the version ``LATEST`` names if it is not served (True when a swap happened),
        then (``candidate``) follow ``CANDIDATE``.

        A version that failed is tried again when its backoff has passed, or at once when
        its pointer has just been moved to it."""
        async with self._lock:
            swapped = await self._follow_latest()
            if candidate:
                await self._follow_candidate()
            return swapped

    async def _follow_latest(self) -> bool:
        try:
            latest = self.store.latest()
        except ArtefactError as exc:
            if self.latest_error != str(exc):
                log.error("%s", exc)
            self.latest_error = str(exc)
            return False
        moved = latest != self.latest_seen
        self.latest_seen, self.latest_error = latest, None
        if latest is None:
            return False
        if self.current is not None and self.current.version == latest:
            return False
        candidate = self.candidate
        if candidate is not None and candidate.version == latest:
            previous = self.current.version if self.current else None
            self.current, self.candidate = candidate, None
            log.info(
                "now serving version %s (was %s): the candidate, promoted without a reload",
                latest,
                previous,
                extra={"model_version": latest, "previous_version": previous},
            )
            return True
        failure = self.failed.get(latest)
        if failure is not None and not moved and self.clock() < failure.retry_after:
            return False
        self._drop_candidate(f"to load {latest}, which LATEST names now")
        loaded = await self._try_load(latest)
        if loaded is None:
            return False
        previous = self.current.version if self.current else None
        self.current = loaded
        log.info(
            "now serving version %s (was %s)",
            latest,
            previous,
            extra={"model_version": latest, "previous_version": previous},
        )
        return True

    async def _follow_candidate(self) -> None:
        """Load what ``CANDIDATE`` names beside the served model, or let the candidate go."""
        try:
            pointer = self.store.candidate()
        except ArtefactError as exc:
            if self.candidate_error != str(exc):
                log.error("no rollout candidate: %s", exc)
            self.candidate_error, self.rollout, self.candidate_seen = str(exc), None, None
            self._drop_candidate("CANDIDATE cannot be read")
            return
        self.candidate_error = None
        served = self.current.version if self.current is not None else None
        if pointer is None or pointer.version in (self.latest_seen, served):
            self.rollout, self.candidate_seen = None, None
            self._drop_candidate("CANDIDATE is gone or names the served version")
            return
        moved = pointer.version != self.candidate_seen
        self.rollout, self.candidate_seen = pointer, pointer.version
        held = self.candidate
        if held is not None and held.version == pointer.version:
            if self.store.version_path(held.version).is_dir():
                return
            self._drop_candidate("its folder is gone from the store")
        self._drop_candidate(f"CANDIDATE names {pointer.version} now")
        failure = self.failed.get(pointer.version)
        if served is None or (
            failure is not None and not moved and self.clock() < failure.retry_after
        ):
            return
        loaded = await self._try_load(pointer.version)
        if loaded is not None:
            self.candidate = loaded
            log.info(
                "candidate %s loaded beside %s (%s)",
                pointer.version,
                served,
                pointer.mode,
                extra={"model_version": pointer.version, "mode": pointer.mode},
            )

    def _drop_candidate(self, why: str) -> None:
        if self.candidate is not None:
            log.info("candidate %s let go: %s", self.candidate.version, why)
            self.candidate = None

    async def start(self) -> None:
        """Initial load: what ``LATEST`` names, else the newest older version that loads.
        The candidate follows on the first poll, so it never delays readiness.

        When ``LATEST`` cannot be read there is no telling which versions were promoted, so
        nothing is guessed: the API stays not ready until ``LATEST`` is mended."""
        if await self.refresh(candidate=False):
            return
        if self.latest_error is not None:
            log.error("serving nothing until LATEST names a version: %s", MEND_LATEST)
            return
        if self.latest_seen is None:
            log.warning("no model published in %s yet: run the trainer", self.store.root)
            return
        # Only versions once promoted (or from before promotions were recorded), newest
        # first: never one the gate rejected (the store decides which: fallback_candidates).
        older = self.store.fallback_candidates(before=self.latest_seen)
        for name in older:
            loaded = await self._try_load(name)
            if loaded is not None:
                self.current = loaded
                log.warning("serving fallback version %s: LATEST could not be served", name)
                return

    async def watch(self, interval_s: float) -> None:
        """Poll ``LATEST`` and ``CANDIDATE`` forever (cancel to stop)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("model refresh failed")

    @property
    def artefacts_dir(self) -> Path:
        return self.store.root
