"""``POST /feedback``: the tags an author chose for a text the API answered, stored against its
logged prediction (the labels of the live figures and of retraining)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from api.prediction_log import InferenceLog
from api.schemas import ErrorResponse, FeedbackRequest, FeedbackResponse
from api.settings import ApiSettings
from shared.inference_log import DatabaseError, NotLogged

log = logging.getLogger(__name__)
router = APIRouter(
    responses={500: {"model": ErrorResponse, "description": "unexpected error (see the log)"}}
)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {
        "model": ErrorResponse,
        "description": "`not_logged`: the request id (and position) is not in the inference "
        "log: never logged, sampled out, or not written yet",
    },
    413: {
        "model": ErrorResponse,
        "description": "the body is over API_MAX_BODY_BYTES (`body_too_large`, not read)",
    },
    422: {
        "model": ErrorResponse,
        "description": "invalid request: a body that is not JSON or does not match the schema, "
        "no tags, a blank tag, a position past the texts a request may have",
    },
    503: {
        "model": ErrorResponse,
        "description": "`database_unavailable`: the inference log's database cannot be reached",
        "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
    },
}


@router.post("/feedback", response_model=FeedbackResponse, responses=ERRORS, tags=["feedback"])
async def feedback(request: Request, body: FeedbackRequest) -> FeedbackResponse:
    """Report the tags chosen for a text the API answered: ``request_id`` is the prediction's
    X-Request-ID, ``position`` the text's index in its request (0 for a single text).

    A second report for the same request id and position replaces the first (``replaced`` is
    then true). Tags the model does not know are kept (``unknown_tags`` lists them): that is
    how a new tag shows up. A prediction is in the log once it is written, within
    API_PREDICTION_LOG_FLUSH_S of its answer, and only if its request was sampled
    (API_PREDICTION_LOG_SAMPLE)."""
    settings: ApiSettings = request.app.state.settings
    if body.position >= settings.max_texts:
        raise ApiError(
            422,
            "invalid_position",
            f"position is {body.position}; a request has at most {settings.max_texts} texts",
        )
    inference_log: InferenceLog = request.app.state.inference_log
    try:
        result = await run_in_threadpool(
            inference_log.feedback, body.request_id, body.position, body.tags
        )
    except NotLogged:
        raise ApiError(
            404,
            "not_logged",
            f"request id {body.request_id!r} (text {body.position}) is not in the inference log: "
            "it was never answered, not sampled (API_PREDICTION_LOG_SAMPLE), or not written "
            f"yet (retry after API_PREDICTION_LOG_FLUSH_S, {settings.prediction_log_flush_s} s)",
        ) from None
    except DatabaseError as exc:
        log.warning("feedback not stored: %s", exc)
        raise ApiError(
            503,
            "database_unavailable",
            "the inference log's database cannot be reached; retry later",
            headers={"Retry-After": "5"},
        ) from None
    current = request.app.state.manager.current
    unknown = None
    if current is not None and current.version == result.version:
        labels = set(current.predictor.labels)
        unknown = [tag for tag in body.tags if tag not in labels]
    return FeedbackResponse(
        request_id=result.request_id,
        position=result.position,
        version=result.version,
        replaced=result.replaced,
        unknown_tags=unknown,
    )
