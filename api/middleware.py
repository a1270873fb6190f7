"""Per-request plumbing as one pure ASGI middleware: request id, access log, HTTP metrics.

A request id is taken from ``X-Request-ID`` when the client sends a sane one (1-128 of
letters, digits and ``._:/+=-``), generated otherwise (32 hex digits); it is returned in the
``X-Request-ID`` header, put in every error body, and attached to every log record written
while the request is served (:data:`shared.logs.request_context`). Pure ASGI rather than
``BaseHTTPMiddleware``: no extra task or body copy on the prediction path.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import REQUEST_ID_HEADER
from api.key_metrics import ANONYMOUS, UNKNOWN
from api.metrics import UNMATCHED_ROUTE, ApiMetrics
from shared.logs import RequestContext, request_context

_HEADER_KEY = REQUEST_ID_HEADER.lower().encode()
_SANE_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")
# Probes and scrapes come every few seconds: their access lines are debug, not info.
QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})

ACCESS_LOGGER = "api.access"
access_log = logging.getLogger(ACCESS_LOGGER)


def request_id_from(scope: Scope) -> str:
    """The client's ``X-Request-ID`` if it is sane, else a new random one."""
    for key, value in scope["headers"]:
        if key == _HEADER_KEY:
            if _SANE_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


def route_of(scope: Scope) -> str:
    """The matched route's path template (bounded), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestMiddleware:
    """Request id, one access log line and the HTTP metrics of every request. With ``keys``
    on, the line names the caller's key (``unknown`` when refused 401); the requests-by-key
    metric names it either way (``anonymous`` with keys off)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics | None = None, keys: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        context = RequestContext(request_id_from(scope))
        # Not reset afterwards on purpose: the 500 handler runs outside this middleware (in
        # Starlette's ServerErrorMiddleware) and still needs it; every request runs in its
        # own task with its own copy of the context, so it cannot leak into another request.
        request_context.set(context)
        header = (_HEADER_KEY, context.request_id.encode())
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = route_of(scope)
            caller = context.caller or (UNKNOWN if self.keys else ANONYMOUS)
            if self.metrics is not None:
                self.metrics.observe_request(route, scope["method"], status, seconds, context.texts)
                self.metrics.keys.observe(caller, status)
            self._log(scope, route, status, seconds, context, caller if self.keys else None)

    @staticmethod
    def _log(
        scope: Scope,
        route: str,
        status: int,
        seconds: float,
        context: RequestContext,
        key: str | None,
    ) -> None:
        level = logging.DEBUG if route in QUIET_ROUTES and status < 500 else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        extra: dict[str, object] = {
            "request_id": context.request_id,
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        if key is not None:
            extra["key"] = key
        if context.texts is not None:
            extra["texts"] = context.texts
        if context.model_version is not None:
            extra["model_version"] = context.model_version
        access_log.log(
            level,
            "%s %s %d %.1f ms",
            scope["method"],
            scope["path"],
            status,
            seconds * 1000,
            extra=extra,
        )
