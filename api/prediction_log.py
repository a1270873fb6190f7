"""The inference log on the API's side: the database engine and the background writer, made
and closed with the app, and the few microseconds ``/predict`` spends handing a sampled
request's rows to the writer (a bounded queue: it never waits for the database). The shadow
runner logs its rows here too (role ``shadow``, with the comparison against the answer).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from api.settings import ApiSettings
from shared.inference_log import (
    ROLE_SHADOW,
    FeedbackResult,
    LogObserver,
    PredictionLog,
    PredictionRow,
    connect,
    record_feedback,
    title_hash,
    upgrade,
)
from shared.live import Agreement
from shared.predictor import Prediction


@dataclass
class InferenceLog:
    """The engine (for feedback and the live figures), the writer, and what to log."""

    engine: Engine
    writer: PredictionLog
    sample: float
    keep_titles: bool
    schema_ready: bool = False

    @classmethod
    def open(cls, settings: ApiSettings, observer: LogObserver | None) -> InferenceLog:
        """Create the engine and start the writer; never connects here, so the API serves
        while the database is down (rows are dropped and counted until it is back)."""
        engine = connect(settings.database_url, settings.database_password_file)
        writer = PredictionLog(
            engine,
            max_queue=settings.prediction_log_queue,
            flush_s=settings.prediction_log_flush_s,
            observer=observer,
        )
        writer.start()
        return cls(
            engine,
            writer,
            settings.prediction_log_sample,
            settings.prediction_log_titles == "text",
        )

    def close(self) -> None:
        """Write what is queued (a few seconds at most), then let the connections go."""
        self.writer.close()
        self.engine.dispose()

    def feedback(self, request_id: str, position: int, tags: list[str]) -> FeedbackResult:
        """Store a report (blocking: a worker thread). The schema is brought up to date first
        (once) in case the writer has not done it yet: a fresh database serves feedback too.
        Raises NotLogged or DatabaseError as record_feedback does."""
        if not self.schema_ready:
            upgrade(self.engine)
            self.schema_ready = True
        return record_feedback(self.engine, request_id, position, tags)

    def queued(self) -> int:
        return self.writer.queued()

    def record(
        self,
        request_id: str,
        texts: Sequence[str],
        version: str,
        predictions: Sequence[Prediction],
        compute_ms: float | None = None,
    ) -> bool:
        """Queue one row per text of a request, if the request is sampled; whether it was."""
        if self.sample < 1.0 and random.random() >= self.sample:
            return False
        self.writer.add(self._rows(request_id, texts, version, predictions, compute_ms))
        return True

    def record_shadow(
        self,
        request_id: str,
        texts: Sequence[str],
        version: str,
        predictions: Sequence[Prediction],
        compute_ms: float,
        found: Sequence[Agreement],
    ) -> None:
        """Queue the shadow rows of a request whose answer rows were logged: ``version``'s
        predictions of its first texts, each with its comparison (candidate vs served)."""
        rows = self._rows(request_id, texts, version, predictions, compute_ms)
        self.writer.add(
            [
                dataclasses.replace(
                    row,
                    role=ROLE_SHADOW,
                    agree_top1=one.top1,
                    jaccard=one.jaccard,
                    score_delta=one.score_delta,
                )
                for row, one in zip(rows, found, strict=True)
            ]
        )

    def _rows(
        self,
        request_id: str,
        texts: Sequence[str],
        version: str,
        predictions: Sequence[Prediction],
        compute_ms: float | None,
    ) -> list[PredictionRow]:
        now = dt.datetime.now(dt.UTC)
        keep = self.keep_titles
        return [
            PredictionRow(
                request_id=request_id,
                position=position,
                created_at=now,
                version=version,
                title=text if keep else None,
                title_hash=title_hash(text),
                tokens=p.tokens,
                unknown_tokens=p.unknown,
                top_tags=[(t.tag, t.score) for t in p.tags],
                predicted=p.predicted,
                compute_ms=compute_ms,
            )
            for position, (text, p) in enumerate(zip(texts, predictions, strict=True))
        ]
