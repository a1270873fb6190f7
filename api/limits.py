"""Limits at the edge, applied before FastAPI reads or parses anything.

:class:`BodyLimit` is a pure ASGI middleware: a request whose ``Content-Length`` is over
``max_body_bytes`` is answered 413 at once, without reading its body; any other body (chunked
ones included) is read here, counting bytes as they arrive, and answered 413 as soon as the
count passes the limit. Only a body within the limit reaches the application, so at most
``max_body_bytes`` per request is ever held, however large the upload. Slow clients get two
more bounds: the whole body must arrive within ``timeout_s`` of the request's start (else 408
``request_timeout``), and the bytes held by all requests together are counted in a
:class:`BodyBudget` (a chunk that would pass it: 503 ``overloaded``). A body still under
:data:`SMALL_BODY_BYTES` is never refused by the budget, so ordinary requests get through
while slow uploads hold it; they are counted, and bounded by the in-flight cap.

:class:`ConcurrencyLimit` answers 503 ``overloaded`` (JSON, ``Retry-After: 1``) to a request
beyond ``max_concurrency`` in flight; probes and the internal port are never refused.

:func:`document_limits` writes the same limits (and those the routes check: characters per
text, texts per request, ``top_k``) into the OpenAPI document, so that it says exactly what is
accepted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.exposure import is_internal_request, is_probe
from api.schemas import MAX_TAG_CHARS
from api.settings import ApiSettings
from shared.logs import request_context

BODY_TOO_LARGE = "body_too_large"
REQUEST_TIMEOUT = "request_timeout"
OVERLOADED = "overloaded"
# Bodies up to this size are read whatever the budget (a /predict of a few titles is < 1 KiB).
SMALL_BODY_BYTES = 16 * 1024
# JSON Schema ``pattern`` (a search, not anchored): at least one character that is not white
# space as ``str.strip()`` counts it (``str.isspace``). Spelt out code point by code point,
# because ``\s`` means a different set in each regex dialect (ECMA, Python, Rust).
WHITESPACE = (
    "\\u0009-\\u000d\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f"
    "\\u205f\\u3000"
)
NOT_BLANK = f"[^{WHITESPACE}]"


class BodyBudget:
    """The request-body bytes held at once by every request of the process (one event loop:
    no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int, body_so_far: int) -> bool:
        """Count ``size`` more bytes of a body that has ``body_so_far``; False (nothing
        counted) when that would pass the limit and the body is no longer small."""
        if body_so_far + size > SMALL_BODY_BYTES and self.held + size > self.limit:
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        self.held -= size


class BodyLimit:
    """Answer 413 ``body_too_large`` to a request body over ``max_body_bytes``, 408
    ``request_timeout`` to one not complete within ``timeout_s``, 503 ``overloaded`` when the
    ``budget`` of body bytes held over all requests is spent."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        timeout_s: float = 10.0,
        budget: BodyBudget | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.budget = budget or BodyBudget(64 * 1024 * 1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(send, f"the request body has {declared} bytes")
            return
        body = await self._read(receive, send)
        if body is None:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only http.disconnect is left to see

        try:
            await self.app(scope, replay, send)
        finally:
            self.budget.release(len(body))

    async def _read(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body (its bytes counted in the budget), or None once answered."""
        chunks: list[bytes] = []
        size = 0
        refusal = ""
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break  # the client went away before its body was complete
                    chunk = message.get("body", b"")
                    if size + len(chunk) > self.max_body_bytes:
                        refusal = BODY_TOO_LARGE
                        break
                    if not self.budget.take(len(chunk), size):
                        refusal = OVERLOADED
                        break
                    size += len(chunk)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        body = b"".join(chunks)
                        size = 0  # now the caller's to release
                        return body
        except TimeoutError:
            refusal = REQUEST_TIMEOUT
        finally:
            self.budget.release(size)
        del chunks
        if refusal == BODY_TOO_LARGE:
            await self._too_large(
                send, f"the request body has more than {self.max_body_bytes} bytes"
            )
        elif refusal == OVERLOADED:
            await send_error(
                send,
                503,
                OVERLOADED,
                "the server holds too many request bodies at once; retry shortly",
                retry_after=1,
            )
        elif refusal == REQUEST_TIMEOUT:
            await send_error(
                send,
                408,
                REQUEST_TIMEOUT,
                f"the request body did not arrive within {self.timeout_s:g} s "
                "(API_REQUEST_TIMEOUT_S); send it at once, or a smaller one",
            )
        return None

    async def _too_large(self, send: Send, what: str) -> None:
        await send_error(
            send,
            413,
            BODY_TOO_LARGE,
            f"{what}; the limit is {self.max_body_bytes} bytes "
            "(API_MAX_BODY_BYTES). Send fewer or shorter texts per request.",
        )


class ConcurrencyLimit:
    """Answer 503 ``overloaded`` (JSON) to a request beyond ``max_concurrency`` in flight.
    Probes and requests on the internal port are never refused: they are how operators see
    an overloaded process (uvicorn's own limit still bounds them)."""

    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_probe(scope) or is_internal_request(scope, self.settings):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.settings.max_concurrency:
            await send_error(
                send,
                503,
                OVERLOADED,
                f"more than {self.settings.max_concurrency} requests in flight "
                "(API_MAX_CONCURRENCY); retry shortly",
                retry_after=1,
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def send_error(
    send: Send, status: int, code: str, message: str, retry_after: int | None = None
) -> None:
    """Answer the API's JSON error from a pure ASGI middleware and close the connection (the
    rest of the body, if any, is never read, so the connection cannot be reused)."""
    error: dict[str, str] = {"error": code, "message": message}
    context = request_context.get()
    if context is not None:  # set by the request middleware outside this one
        error["request_id"] = context.request_id
    body = json.dumps(error).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses a malformed one before we see it
    return None


def document_limits(app: FastAPI, settings: ApiSettings) -> None:
    """Make ``app.openapi()`` state the limits the settings impose on request bodies."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _apply_limits(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _text_limits(prop: dict[str, Any], settings: ApiSettings) -> None:
    prop.update(minLength=1, maxLength=settings.max_text_chars, pattern=NOT_BLANK)


def _apply_limits(schema: dict[str, Any], settings: ApiSettings) -> None:
    schemas = schema["components"]["schemas"]
    request = schemas["PredictRequest"]["properties"]
    _text_limits(request["text"], settings)
    request["texts"]["maxItems"] = settings.max_texts
    _text_limits(request["texts"]["items"], settings)
    for option in request["top_k"].get("anyOf", [request["top_k"]]):
        if option.get("type") == "integer":
            option["maximum"] = settings.max_top_k
    feedback = schemas["FeedbackRequest"]["properties"]
    feedback["position"]["maximum"] = settings.max_texts - 1
    feedback["tags"]["items"].update(minLength=1, maxLength=MAX_TAG_CHARS, pattern=NOT_BLANK)
    form = schema["paths"]["/tag/predict/"]["post"]["requestBody"]["content"]
    ref = form["application/x-www-form-urlencoded"]["schema"]["$ref"].rsplit("/", 1)[-1]
    _text_limits(schemas[ref]["properties"]["text"], settings)
    schema["info"]["description"] += (
        f"\n\nLimits: a request body of at most {settings.max_body_bytes} bytes (else 413 "
        f"`body_too_large`), at most {settings.max_texts} texts per request, each of at most "
        f"{settings.max_text_chars} characters with at least one that is not white space, "
        f"`top_k` at most {settings.max_top_k}.\n"
    )
