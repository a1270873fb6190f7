"""Which model the API serves, and hot reload: watch ``LATEST``, load off the request path, swap.

Verification (hashing files) runs on a helper thread; building the network and the warm-up
run on the torch thread that also serves predictions, because torch work spread over several
threads made every later forward pass measurably slower (see the README's benchmark notes).
A swap is one reference assignment: requests that already took the old :class:`LoadedModel`
finish on it, new ones get the new one. A version that fails verification, loading or the
warm-up is remembered as failed, reported by ``/model``, and not tried again; the model that
was serving keeps serving.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.artefacts import ArtefactError, ArtefactStore, verify
from shared.backends import load_predictor
from shared.prediction import TagPredictor

log = logging.getLogger(__name__)

WARMUP_TEXT = "How do I merge two dictionaries in Python?"


@dataclass(frozen=True)
class LoadedModel:
    """A verified, warmed-up model and what the API reports about it."""

    version: str
    predictor: TagPredictor
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    training: dict[str, Any]
    loaded_at: str


@dataclass
class ModelManager:
    """Holds the served model and loads new versions as ``LATEST`` moves."""

    store: ArtefactStore
    verify_checksums: bool = True
    torch_executor: Executor | None = None
    precision: str = "fp32"
    backend: str = "auto"
    threads: int = 0
    current: LoadedModel | None = None
    failed: dict[str, str] = field(default_factory=dict)
    latest_seen: str | None = None  # the last version name read from LATEST
    latest_error: str | None = None  # why LATEST cannot be read now
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def load_version(self, version: str) -> LoadedModel:
        """Build and warm up a verified version (blocking: run it on the torch thread)."""
        folder = self.store.version_path(version)
        predictor = load_predictor(
            folder,
            backend=self.backend,
            precision=self.precision,
            verify_checksums=False,
            threads=self.threads,
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
        )

    async def _try_load(self, version: str) -> LoadedModel | None:
        try:
            if self.verify_checksums:
                await asyncio.to_thread(verify, self.store.version_path(version))
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.torch_executor, self.load_version, version)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            self.failed[version] = message
            log.error("version %s cannot be served, skipping it: %s", version, message)
            return None

    async def refresh(self) -> bool:
        """Load the version ``LATEST`` names if it is new; True when a swap happened."""
        async with self._lock:
            try:
                latest = self.store.latest()
            except ArtefactError as exc:
                if self.latest_error != str(exc):
                    log.error("%s", exc)
                self.latest_error = str(exc)
                return False
            self.latest_seen, self.latest_error = latest, None
            if latest is None or latest in self.failed:
                return False
            if self.current is not None and self.current.version == latest:
                return False
            loaded = await self._try_load(latest)
            if loaded is None:
                return False
            previous = self.current.version if self.current else None
            self.current = loaded
            log.info("now serving version %s (was %s)", latest, previous)
            return True

    async def start(self) -> None:
        """Initial load: what ``LATEST`` names, else the newest older version that loads.

        When ``LATEST`` cannot be read there is no telling which versions were promoted, so
        nothing is guessed: the API stays not ready until ``LATEST`` is mended."""
        if await self.refresh():
            return
        if self.latest_error is not None:
            log.error(
                "serving nothing until LATEST names a version "
                "(python -m trainer.versions use VERSION)"
            )
            return
        if self.latest_seen is None:
            log.warning("no model published in %s yet: run the trainer", self.store.root)
            return
        older = [v.name for v in reversed(self.store.versions()) if v.name < self.latest_seen]
        for name in older:
            loaded = await self._try_load(name)
            if loaded is not None:
                self.current = loaded
                log.warning("serving fallback version %s: LATEST could not be served", name)
                return

    async def watch(self, interval_s: float) -> None:
        """Poll ``LATEST`` forever (cancel to stop)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("model refresh failed")

    @property
    def artefacts_dir(self) -> Path:
        return self.store.root
