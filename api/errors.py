"""Every error leaves the API as JSON ``{"error", "message", "details"?, "request_id"}``: no
HTML, no traces."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.logs import request_context

REQUEST_ID_HEADER = "X-Request-ID"

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a client caused or should know about, with its HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers
        self.extra = extra  # more fields of the body (ErrorResponse documents them)


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if details is not None:
        body["details"] = jsonable_encoder(details)
    body.update(extra or {})
    context = request_context.get()
    if context is not None:
        body["request_id"] = context.request_id
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        if err.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            exc.status, exc.code, exc.message, headers=exc.headers, extra=exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return error_response(422, "invalid_request", _validation_message(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's and Starlette's "cannot parse the body" (bytes that are not UTF-8, a
            # broken form): the same 422 as invalid JSON, as the OpenAPI document says.
            return error_response(
                422, "invalid_request", f"the request body cannot be read: {exc.detail}"
            )
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, __: ClientGone) -> JSONResponse:
        # Nobody reads this; 499 is the conventional "client closed request" in access logs.
        return error_response(499, "client_closed_request", "the client disconnected")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # This handler runs outside the request middleware, which cannot add the header here.
        context = request_context.get()
        headers = {REQUEST_ID_HEADER: context.request_id} if context is not None else None
        return error_response(
            500, "internal_error", "internal server error; see the API log", headers=headers
        )
