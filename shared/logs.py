"""Log set-up both services share: human-readable lines or one JSON object per line.

``text`` (the default, for a terminal) keeps the classic ``time level logger: message`` line.
``json`` (the Compose production setting) writes one object per line through
python-json-logger, with ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, plus
every ``extra={...}`` field of the record and, while a request is being served, its
``request_id`` (see :data:`request_context`), so one bad answer can be followed from the
client's log to ours.
"""

from __future__ import annotations

import logging
import sys
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

    FIELDS = ("request_id", "texts", "model_version", "rank", "world_size")

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


def setup_logging(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Route every logger (uvicorn's too) through one handler on the root logger; calling it
    again replaces that handler (and leaves others, such as pytest's, alone)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def log_extra(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a record, without the ``None`` fields (absent, not null, in JSON)."""
    return {key: value for key, value in fields.items() if value is not None}
