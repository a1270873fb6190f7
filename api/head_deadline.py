"""A deadline for each request's head (request line and headers), which uvicorn lacks.

uvicorn's keep-alive timer runs only between requests and stops at the first byte, so a client
that opens a connection and sends nothing, or sends its headers a byte at a time, holds the
connection (one of ``limit_concurrency``) for ever. :func:`head_deadline_protocol` makes a
subclass of uvicorn's httptools protocol that closes such a connection once ``timeout_s`` has
passed since it opened (or since the request began, on a kept-alive connection) without a whole
head: with a JSON 408 ``request_timeout`` when a request had begun, silently when nothing came.
The body has its own deadline, from the head's end (:class:`api.limits.BodyLimit`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MESSAGE = "the request line and headers did not arrive within {timeout:g} s (API_REQUEST_TIMEOUT_S)"


class HeadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for each request's head."""

    head_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_begun = False
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_begun:
            body = json.dumps(
                {
                    "error": "request_timeout",
                    "message": MESSAGE.format(timeout=self.head_timeout_s),
                }
            ).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()


def head_deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, closing late heads after
    ``timeout_s``."""
    return type("HeadDeadline", (HeadDeadlineProtocol,), {"head_timeout_s": timeout_s})
