"""Log set-up both services share: human-readable lines or one JSON object per line.

``text`` (the default, for a terminal) keeps the classic ``time level logger: message`` line.
``json`` (the Compose production setting) writes one object per line through
python-json-logger, with ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, plus
every ``extra={...}`` field of the record and, while a request is being served, its
``request_id`` (see :data:`request_context`), so one bad answer can be followed from the
client's log to ours.

The API's access lines (one per request, the only high-volume log) may be *buffered*: held in
a stdlib :class:`~logging.handlers.MemoryHandler` and written in batches (see
:class:`AccessBuffer`), so the request path pays for building a record and not for encoding
and writing it while the CPU caches are cold from the model's forward pass.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import Collection
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class RequestContext:
    """What the API knows about the request being served; logs and the access line read it."""

    request_id: str
    texts: int | None = None
    model_version: str | None = None
    caller: str | None = None  # the API key's name (keys on), never the key


# Set by the API's request middleware for the task serving one request (each request runs in
# its own task with its own copy of the context, so nothing leaks between requests).
request_context: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records logged while a request is served (unless already set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = request_context.get()
        if context is not None and not hasattr(record, "request_id"):
            record.request_id = context.request_id
        return True


class UtcJsonFormatter(JsonFormatter):
    """One JSON object per line: time (UTC, ISO 8601 with ms), level, logger, message, extras."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            # uvicorn adds its message again with terminal colour codes: not for a log store.
            reserved_attrs=[*RESERVED_ATTRS, "color_message", "taskName"],
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``time level logger: message``, then the request's fields (or, in a data-parallel
    training run, the process's rank) in brackets when it has any."""

    FIELDS = ("request_id", "key", "texts", "model_version", "rank", "world_size")

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = [f"{k}={v}" for k in self.FIELDS if (v := getattr(record, k, None)) is not None]
        return f"{line} [{' '.join(fields)}]" if fields else line


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter for ``fmt`` (``text`` or ``json``); ValueError names the choices."""
    if fmt == "json":
        return UtcJsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")


HANDLER_NAME = "tagger"
# Most records an AccessBuffer holds before it writes them all (about 2 s at 500 requests/s).
BUFFER_CAPACITY = 1024


class AccessBuffer(logging.handlers.MemoryHandler):
    """Holds the info and debug records of the ``buffered`` loggers until :meth:`flush` (the
    API calls it every ``API_LOG_FLUSH_S``), until ``BUFFER_CAPACITY`` records wait, or until
    any other record comes: a warning or an error, or a line of any other logger, is written
    at once, after everything held before it, so the output keeps the order of events.

    Written later, encoded the same: each record is made (time, request id) when it is logged.
    A process killed by SIGKILL loses the lines still held (at most ``API_LOG_FLUSH_S`` of
    access lines); a normal exit or a SIGTERM writes them.
    """

    def __init__(self, target: logging.Handler, buffered: Collection[str]) -> None:
        super().__init__(BUFFER_CAPACITY, flushLevel=logging.WARNING, target=target)
        self.buffered = frozenset(buffered)

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        return super().shouldFlush(record) or record.name not in self.buffered


def setup_logging(
    level: str = "INFO",
    fmt: str = "text",
    stream: IO[str] | None = None,
    buffered: Collection[str] = (),
) -> None:
    """Route every logger (uvicorn's too) through one handler on the root logger; calling it
    again replaces that handler (writing what it still held; others, such as pytest's, stay).

    ``buffered``: loggers whose info and debug lines may wait for :func:`flush_logs` (see
    :class:`AccessBuffer`); empty (the default), every line is written when it is logged.
    """
    # No record field here names the thread or the process, so a record need not look them up
    # (the logging HOWTO's "Optimization" switches): less work on the API's request path.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    if buffered:
        handler = AccessBuffer(handler, buffered)
    handler.set_name(HANDLER_NAME)
    # On the outer handler, so the request id is the one of the request that logged the line,
    # not of whichever request happens to flush the buffer.
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        if isinstance(old, AccessBuffer):
            old.flush()  # what it held (a write error is reported by logging, not raised)
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def flush_logs() -> None:
    """Write the lines an :class:`AccessBuffer` holds (nothing to do without one)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, AccessBuffer):
            handler.flush()


def log_extra(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a record, without the ``None`` fields (absent, not null, in JSON)."""
    return {key: value for key, value in fields.items() if value is not None}
