"""Limits at the edge, applied before FastAPI reads or parses anything.

:class:`BodyLimit` is a pure ASGI middleware: a request whose ``Content-Length`` is over
``max_body_bytes`` is answered 413 at once, without reading its body; any other body (chunked
ones included) is read here, counting bytes as they arrive, and answered 413 as soon as the
count passes the limit. Only a body within the limit reaches the application, so at most
``max_body_bytes`` per request is ever held, however large the upload.

:func:`document_limits` writes the same limits (and those the routes check: characters per
text, texts per request, ``top_k``) into the OpenAPI document, so that it says exactly what is
accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import MAX_TAG_CHARS
from api.settings import ApiSettings
from shared.logs import request_context

BODY_TOO_LARGE = "body_too_large"
# JSON Schema ``pattern`` (a search, not anchored): at least one character that is not white
# space as ``str.strip()`` counts it (``str.isspace``). Spelt out code point by code point,
# because ``\s`` means a different set in each regex dialect (ECMA, Python, Rust).
WHITESPACE = (
    "\\u0009-\\u000d\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f"
    "\\u205f\\u3000"
)
NOT_BLANK = f"[^{WHITESPACE}]"


class BodyLimit:
    """Answer 413 ``body_too_large`` to a request body over ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(send, f"the request body has {declared} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before its body was complete: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(
                    send, f"the request body has more than {self.max_body_bytes} bytes"
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        del chunks
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only http.disconnect is left to see

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, what: str) -> None:
        error: dict[str, str] = {
            "error": BODY_TOO_LARGE,
            "message": f"{what}; the limit is {self.max_body_bytes} bytes "
            "(API_MAX_BODY_BYTES). Send fewer or shorter texts per request.",
        }
        context = request_context.get()
        if context is not None:  # set by the request middleware outside this one
            error["request_id"] = context.request_id
        body = json.dumps(error).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is never read: the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
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
