"""Which routes are public and which internal, and the middleware that keeps the internal ones
off the public port.

With ``API_INTERNAL_PORT`` unset every route answers on ``API_PORT`` (the laptop quickstart).
With it set, uvicorn listens on both ports and a request learns which one it came in on from
``scope["server"]``: on the internal port every route answers; on the public port only the
public routes do, anything else is the same JSON 404 ``not_found`` as an unknown path. The
public list is an allowlist, so a route added later stays internal until it is named here.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from api.settings import ApiSettings

# The routes a client (through the edge) may reach. Seed (capstone) routes stay public.
PUBLIC_PATHS = frozenset(
    {"/predict", "/tag/predict/", "/tag/status/", "/feedback", "/health", "/ready"}
)
# For Prometheus, operators and API readers: on the internal port only (when there is one).
INTERNAL_PATHS = frozenset({"/metrics", "/model", "/docs", "/openapi.json"})
INTERNAL_PREFIXES = ("/docs-assets/",)
# Never refused by the auth or overload middlewares: probes must see the process as it is.
PROBE_PATHS = frozenset({"/health", "/ready"})


def is_public_path(path: str) -> bool:
    """Whether ``path`` may be served on the public port (a missing or extra final slash too,
    so the app's own redirect to the canonical path still happens)."""
    return path in PUBLIC_PATHS or path + "/" in PUBLIC_PATHS or path.rstrip("/") in PUBLIC_PATHS


def is_internal_path(path: str) -> bool:
    """Whether ``path`` is one of the internal routes (metrics, model, docs, OpenAPI)."""
    return path in INTERNAL_PATHS or path.startswith(INTERNAL_PREFIXES)


def is_internal_request(scope: Scope, settings: ApiSettings) -> bool:
    """True when ``API_INTERNAL_PORT`` is set and the request arrived on that port."""
    if settings.internal_port is None:
        return False
    server = scope.get("server")
    return server is not None and server[1] == settings.internal_port


def is_probe(scope: Scope) -> bool:
    """Whether the request is a health or readiness probe (never refused by a limit)."""
    return scope.get("path", "") in PROBE_PATHS


class InternalRoutes:
    """On the public port (when an internal one is set), 404 every path but the public ones."""

    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.settings.internal_port is None
            or is_internal_request(scope, self.settings)
            or is_public_path(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        response = error_response(404, "not_found", "Not Found")
        await response(scope, receive, send)
