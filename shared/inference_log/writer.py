"""The background writer of prediction rows: the request path only appends to a bounded queue;
one daemon thread writes batches. When the queue is full or the database fails, rows are
dropped and counted (an observer gets the counts), never waited for: logging must not fail or
slow a prediction."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection, Engine, insert

from shared.inference_log.engine import DatabaseError, database_errors, redacted
from shared.inference_log.migrate import upgrade
from shared.inference_log.rows import PredictionRow
from shared.inference_log.schema import predictions

log = logging.getLogger(__name__)


class LogObserver(Protocol):
    """Told what became of the rows (the API's metrics implement it)."""

    def rows_written(self, count: int) -> None: ...

    def rows_dropped(self, count: int, reason: str) -> None: ...  # "queue_full" | "database"


class PredictionLog:
    """Bounded queue + one daemon writer thread; batched executemany inserts.

    ``start()`` brings the schema up to date on the writer thread, so a database that is down
    at start-up delays logging, not the service. While the database fails, each try (schema,
    then the next batch) waits twice as long as the one before, from ``flush_s`` up to
    ``max_backoff_s``."""

    def __init__(
        self,
        engine: Engine,
        max_queue: int = 10000,
        flush_s: float = 0.5,
        max_batch: int = 1000,
        observer: LogObserver | None = None,
        max_backoff_s: float = 5.0,
    ) -> None:
        if max_queue < 1 or max_batch < 1 or flush_s <= 0:
            raise ValueError("max_queue and max_batch must be at least 1, flush_s above 0")
        self._engine = engine
        self._max_queue = max_queue
        self._flush_s = flush_s
        self._max_batch = max_batch
        self._observer = observer
        self._max_backoff_s = max(max_backoff_s, flush_s)
        self._pending: deque[PredictionRow] = deque()
        self._in_flight = 0
        self._flushing = 0
        self._closing = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._schema_ready = False
        self._outage_drops: int | None = None  # rows dropped in the current outage; None: none

    def start(self) -> None:
        """Start the writer thread (once); returns at once."""
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="prediction-log-writer", daemon=True
            )
            self._thread.start()

    def add(self, rows: Sequence[PredictionRow]) -> None:
        """Queue ``rows`` for writing; rows beyond the queue's bound are dropped and counted.
        Never blocks on the database and never raises."""
        try:
            with self._cond:
                room = max(self._max_queue - len(self._pending), 0)
                taken = rows[:room]
                self._pending.extend(taken)
                if len(self._pending) >= self._max_batch:
                    self._cond.notify_all()
            if len(rows) > len(taken):
                self._dropped(len(rows) - len(taken), "queue_full")
        except Exception:  # logging must never fail a prediction
            log.exception("inference log: could not queue the rows of a request")

    def queued(self) -> int:
        """Rows waiting to be written."""
        with self._cond:
            return len(self._pending) + self._in_flight

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued row has been written (or dropped); False on timeout."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(
                    lambda: not self._pending and not self._in_flight, timeout
                )
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and stop the writer thread (waiting at most ``timeout``)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        backoff = self._flush_s
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: (
                        self._closing or self._flushing > 0 or len(self._pending) >= self._max_batch
                    ),
                    self._flush_s,
                )
                if self._closing and not self._pending:
                    return
                batch = [
                    self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))
                ]
                self._in_flight = len(batch)
            try:
                ok = self._write(batch)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()
            if ok:
                backoff = self._flush_s
            elif not self._closing:
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._cond:
            self._cond.wait_for(lambda: self._closing, max(deadline - time.monotonic(), 0))

    def _write(self, batch: list[PredictionRow]) -> bool:
        """Write ``batch`` (after bringing the schema up to date if needed); True if the
        database worked, the batch dropped and counted if not."""
        try:
            if not self._schema_ready:
                upgrade(self._engine)
                self._schema_ready = True
            if batch:
                with database_errors(self._engine), self._engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        _copy(conn, batch)
                    else:
                        conn.execute(insert(predictions), [row.values() for row in batch])
        except Exception as exc:
            # A table lost with its file (SQLite) comes back with the next upgrade.
            self._schema_ready = False
            self._failed(exc, len(batch))
            return False
        self._recovered()
        if batch:
            self._notify("rows_written", len(batch))
        return True

    def _failed(self, exc: Exception, rows: int) -> None:
        if self._outage_drops is None:
            reason = (
                str(exc)
                if isinstance(exc, DatabaseError)
                else f"{redacted(self._engine.url)}: {exc!r}"
            )
            log.warning(
                "inference log: the database cannot be written, prediction rows are dropped "
                "(and counted) until it can: %s",
                reason,
            )
            self._outage_drops = 0
        self._outage_drops += rows
        if rows:
            self._dropped(rows, "database")

    def _recovered(self) -> None:
        if self._outage_drops is not None:
            log.info(
                "inference log: the database is written again (%d rows dropped meanwhile)",
                self._outage_drops,
            )
            self._outage_drops = None

    def _dropped(self, count: int, reason: str) -> None:
        if self._observer is not None:
            self._notify("rows_dropped", count, reason)

    def _notify(self, method: str, *args: object) -> None:
        if self._observer is None:
            return
        try:
            getattr(self._observer, method)(*args)
        except Exception:
            log.exception("inference log: the observer failed on %s", method)


COPY_COLUMNS = (
    "request_id",
    "position",
    "created_at",
    "version",
    "title",
    "title_hash",
    "tokens",
    "unknown_tokens",
    "top_tags",
    "predicted",
    "role",
    "compute_ms",
    "agree_top1",
    "jaccard",
    "score_delta",
)


def _copy(conn: Connection, batch: list[PredictionRow]) -> None:
    """Write ``batch`` with PostgreSQL's COPY (psycopg's ``Cursor.copy``) in the transaction of
    ``conn``: per row, a fraction of the server's and the client's work for an INSERT (the
    log's cost at c=32 fell from 6.6% to the figure in docs/benchmarks.md)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    columns = ", ".join(COPY_COLUMNS)
    with cursor.copy(f"COPY {predictions.name} ({columns}) FROM STDIN") as copy:
        for row in batch:
            values = row.values()
            values["top_tags"] = json.dumps(values["top_tags"])
            values["predicted"] = json.dumps(values["predicted"])
            copy.write_row([values[column] for column in COPY_COLUMNS])
