"""API keys on requests: who is calling, refused 401 without a valid key, 429 over quota.

:class:`KeyGuard` holds the key ring (re-read off the request path when the file changes),
the per-key quotas (:mod:`api.quota`) and the key metrics. :class:`AuthMiddleware` is a pure
ASGI middleware inside the request middleware (so the access line and the metrics see its
401s and 429s) and before the body is read: a request that needs a key and brings none, or a
wrong one, costs no body read and no parsing. A key comes as ``Authorization: Bearer KEY`` or
``X-API-Key: KEY``; only its NAME is kept (in :class:`shared.logs.RequestContext`, hence the
access line, and in the metrics), never the key. Every route needs a key except ``/health``,
``/ready`` and any request on the internal port (:func:`needs_key`). With no keys file
(``API_KEYS_FILE`` unset) none of this is installed: no check, no quota.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import ApiError, error_response
from api.exposure import PROBE_PATHS, is_internal_path, is_internal_request, is_probe
from api.key_metrics import ANONYMOUS, KeyMetrics
from api.keys import KeyRing, KeysFileError, load_keys
from api.quota import QUOTA_EXCEEDED, Quotas, retry_after
from api.settings import ApiSettings
from shared.logs import request_context

log = logging.getLogger(__name__)

UNAUTHORIZED = "unauthorized"
_BEARER = "bearer "


def needs_key(scope: Scope, settings: ApiSettings) -> bool:
    """Whether this request must bring a key (keys on): every route but the probes, except
    on the internal port."""
    return not is_probe(scope) and not is_internal_request(scope, settings)


def presented_key(scope: Scope) -> str | None:
    """The key in ``Authorization: Bearer KEY`` or else ``X-API-Key: KEY``, if any."""
    api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[: len(_BEARER)].lower() == _BEARER and text[len(_BEARER) :].strip():
                return text[len(_BEARER) :].strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.decode("latin-1").strip()
    return api_key


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class KeyGuard:
    """The keys (from ``path``), the per-key quotas, and the key metrics (if any)."""

    def __init__(self, path: Path, quotas: Quotas, metrics: KeyMetrics | None = None) -> None:
        self.path, self.quotas, self.metrics = path, quotas, metrics
        self._stamp = _stamp(path)
        self.ring: KeyRing = load_keys(path)  # KeysFileError stops start-up
        self._count_from_zero()

    @classmethod
    def from_settings(cls, settings: ApiSettings, metrics: KeyMetrics | None) -> KeyGuard | None:
        """The guard for ``API_KEYS_FILE``, or None when keys are off."""
        if settings.keys_file is None:
            return None
        return cls(settings.keys_file, Quotas.from_settings(settings), metrics)

    def refresh(self) -> bool:
        """Re-read the file if its mtime or size changed; True if a new ring is in use. An
        unreadable new file keeps the old ring and logs one error (until it changes again)."""
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            ring = load_keys(self.path)
        except KeysFileError as exc:
            log.error("API_KEYS_FILE changed but cannot be used (the old keys stay): %s", exc)
            return False
        self.ring = ring
        self._count_from_zero()
        log.info("API keys re-read: %d keys", len(ring.entries))
        return True

    def _count_from_zero(self) -> None:
        """Each key's refusals start at 0, so their rate is defined before the first."""
        if self.metrics is not None:
            for name in self.ring.names:
                self.metrics.rejections.labels(name)

    async def watch(self, interval_s: float) -> None:
        """Check the file every ``interval_s`` on a thread, never on a request's path."""
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self.refresh)

    def over_quota(self, caller: str, wait_s: float) -> ApiError:
        """The 429 for ``caller``, counted."""
        if self.metrics is not None:
            self.metrics.rejected(caller)
        return ApiError(
            429,
            QUOTA_EXCEEDED,
            f"the key {caller!r} is over its quota; retry after the Retry-After seconds",
            headers={"Retry-After": retry_after(wait_s)},
        )


class AuthMiddleware:
    """401 without a valid key where one is needed, 429 over the request quota."""

    def __init__(self, app: ASGIApp, guard: KeyGuard, settings: ApiSettings) -> None:
        self.app, self.guard, self.settings = app, guard, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = request_context.get()
        if not needs_key(scope, self.settings):
            if context is not None:
                context.caller = ANONYMOUS
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        caller = self.guard.ring.match(key) if key is not None else None
        if caller is None:
            message = (
                "this route needs an API key: send Authorization: Bearer KEY or X-API-Key: KEY"
                if key is None
                else "the API key is not valid"
            )
            response = error_response(
                401, UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        if context is not None:
            context.caller = caller
        wait = self.guard.quotas.charge_request(caller)
        if wait > 0:
            error = self.guard.over_quota(caller, wait)
            refused = error_response(error.status, error.code, error.message, headers=error.headers)
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def charge_texts(request: Request, texts: int) -> None:
    """Charge ``texts`` to the caller's text quota; ApiError 429 when it is over (keys on)."""
    guard: KeyGuard | None = request.app.state.key_guard
    context = request_context.get()
    if guard is None or context is None or context.caller is None:
        return
    wait = guard.quotas.charge_texts(context.caller, texts)
    if wait > 0:
        raise guard.over_quota(context.caller, wait)


SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]


def document_security(app: FastAPI, settings: ApiSettings) -> None:
    """With keys on, ``app.openapi()`` names the two ways to send a key, and every operation
    that needs one (all but the probes and, with an internal port, the internal routes) lists
    them and its 401 and 429 answers."""
    if settings.keys_file is None:
        return
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        components = schema.setdefault("components", {})
        if "securitySchemes" not in components:
            _apply_security(schema, settings)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _apply_security(schema: dict[str, Any], settings: ApiSettings) -> None:
    internal_only = settings.internal_port is not None  # internal routes need no key there
    schema["components"]["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API key"},
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for path, operations in schema["paths"].items():
        if path in PROBE_PATHS or (internal_only and is_internal_path(path)):
            continue
        for operation in operations.values():
            operation["security"] = SECURITY
            operation["responses"].setdefault(
                "401",
                {
                    "description": "no API key, or not a valid one (`unauthorized`)",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                    "content": error,
                },
            )
            operation["responses"].setdefault(
                "429",
                {
                    "description": "the key is over its quota (`quota_exceeded`; see Retry-After)",
                    "headers": {
                        "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}
                    },
                    "content": error,
                },
            )
    schema["info"]["description"] += (
        "\n\n**API keys.** Every route but `/health` and `/ready` needs a key, sent as "
        "`Authorization: Bearer KEY` or `X-API-Key: KEY` (401 `unauthorized` without a valid "
        "one). Each key has a quota of requests and texts per second; over it, 429 "
        "`quota_exceeded` with `Retry-After`.\n"
    )
