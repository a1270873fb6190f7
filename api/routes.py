"""HTTP routes. Handlers stay thin: validation here, inference in :mod:`api.inference`."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Form, Header, Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from api.auth import charge_texts
from api.errors import ApiError, ClientGone
from api.inference import InferenceService, ModelNotReady, QueueFull, VersionNotLoaded
from api.live import LiveMonitor
from api.model_manager import ModelManager
from api.observe import RolloutObserver
from api.prediction_log import InferenceLog
from api.rollout import (
    MODEL_VERSION_HEADER,
    PINNED_ROUTE,
    ROLLOUT_KEY_HEADER,
    answered_route,
    not_loaded,
    pinned_version,
    rollout_sections,
    route_for,
)
from api.schemas import (
    ErrorResponse,
    FailedVersion,
    HealthResponse,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
    StatusResponse,
)
from api.settings import ApiSettings
from api.shadow import ShadowRunner
from shared.logs import request_context
from shared.predictor import backend_of

# Every route may fail unexpectedly; the answer is then a JSON 500 without internals.
router = APIRouter(
    responses={500: {"model": ErrorResponse, "description": "unexpected error (see the log)"}}
)
T = TypeVar("T")


ERRORS: dict[int | str, dict[str, Any]] = {
    413: {
        "model": ErrorResponse,
        "description": "the body is over API_MAX_BODY_BYTES (`body_too_large`, not read), or "
        "a text is over API_MAX_TEXT_CHARS characters (`text_too_long`)",
    },
    409: {
        "model": ErrorResponse,
        "description": "the request names a version (X-Model-Version or model_version) that "
        "is not loaded (`version_not_loaded`; `loaded_versions` lists those that are)",
    },
    422: {
        "model": ErrorResponse,
        "description": "invalid request: a body that is not JSON (or not a form) or does not "
        "match the schema, a blank text, too many texts, top_k too large, a header out of "
        "bounds, or a header and a field naming different versions",
    },
    503: {
        "model": ErrorResponse,
        "description": "no model is loaded yet, or the queue is full (see Retry-After)",
        "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
    },
}


# Dependencies are async so FastAPI runs them inline, not on a worker thread per request.
async def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_manager(request: Request) -> ModelManager:
    return request.app.state.manager  # type: ignore[no-any-return]


async def get_inference(request: Request) -> InferenceService:
    return request.app.state.inference  # type: ignore[no-any-return]


async def get_shadow(request: Request) -> ShadowRunner:
    return request.app.state.shadow  # type: ignore[no-any-return]


PinHeader = Annotated[
    str | None,
    Header(
        alias=MODEL_VERSION_HEADER,
        min_length=1,
        max_length=128,
        description="answer with this loaded version (409 when it is not loaded; never shadowed)",
    ),
]
KeyHeader = Annotated[
    str | None,
    Header(
        alias=ROLLOUT_KEY_HEADER,
        min_length=1,
        max_length=128,
        description="during a canary, requests with the same key land on the same version "
        "(default: the request id)",
    ),
]


def not_ready() -> ApiError:
    """503 with no path or config in it (the store's folder and load errors are in GET /model)."""
    return ApiError(
        503,
        "model_not_ready",
        "no model is loaded: none is published yet (or none could be loaded; see GET /model). "
        "Run the trainer (make train, or docker compose run trainer); the API picks the new "
        "version up by itself.",
        headers={"Retry-After": "10"},
    )


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: asyncio.Future[T]) -> T:
    """Await ``work``, cancelling it (so queued texts are never computed) if the client
    disconnects first."""
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        waiting: set[asyncio.Future[Any]] = {work, watcher}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not work.done():
        work.cancel()
        raise ClientGone()
    return work.result()


async def _predict(
    request: Request,
    texts: list[str],
    top_k: int | None,
    settings: ApiSettings,
    inference: InferenceService,
    manager: ModelManager,
    pin: str | None = None,
    key: str | None = None,
) -> JSONResponse:
    context = request_context.get()
    if context is not None:  # for the access log and the texts-per-request histogram
        context.texts = len(texts)
    if len(texts) > settings.max_texts:
        raise ApiError(
            422,
            "too_many_texts",
            f"{len(texts)} texts given; at most {settings.max_texts} per request",
        )
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise ApiError(
                413,
                "text_too_long",
                f"text {i} has {len(text)} characters; the limit is {settings.max_text_chars}",
            )
    top_k = top_k or settings.default_top_k
    if top_k > settings.max_top_k:
        raise ApiError(422, "invalid_top_k", f"top_k is {top_k}; at most {settings.max_top_k}")
    if manager.current is None:
        raise not_ready()
    charge_texts(request, len(texts))
    request_id = context.request_id if context is not None else None
    route = route_for(manager, pin, key or request_id)
    try:
        caller = context.caller if context is not None else None
        work = inference.submit(texts, top_k, route.target, route.pinned, caller)
        answer = await unless_disconnected(request, work)
    except ModelNotReady:
        raise not_ready() from None
    except VersionNotLoaded as exc:
        raise not_loaded(manager, exc.version) from None
    except QueueFull:
        raise ApiError(
            503,
            "overloaded",
            "too many texts are waiting for the model; retry shortly",
            headers={"Retry-After": "1"},
        ) from None
    model, predictions = answer.model, answer.predictions
    answered = answered_route(route, model.version)
    observer: RolloutObserver | None = request.app.state.rollout_observer
    if observer is not None:
        observer.observe_answer(answered)
    logged = False
    if context is not None:
        context.model_version = model.version
        inference_log: InferenceLog = request.app.state.inference_log
        logged = inference_log.record(
            context.request_id, texts, model.version, predictions, answer.compute_s * 1000
        )
    # Built as plain JSON (the shape of PredictResponse, which documents it): validating our
    # own output again per request costs CPU the model needs.
    response = JSONResponse(
        {
            "model_version": model.version,
            "predictions": [
                {
                    "tags": [{"tag": t.tag, "score": t.score} for t in p.tags],
                    "predicted": p.predicted,
                }
                for p in predictions
            ],
        }
    )
    if answered != PINNED_ROUTE and request_id is not None:
        shadow: ShadowRunner = request.app.state.shadow
        job = shadow.job_for(request_id, texts, top_k, model, predictions, logged)
        if job is not None:  # queued once the answer is sent
            response.background = BackgroundTask(shadow.enqueue, job)
    return response


@router.post("/predict", response_model=PredictResponse, responses=ERRORS, tags=["predict"])
async def predict(
    request: Request,
    body: PredictRequest,
    settings: Annotated[ApiSettings, Depends(get_settings)],
    inference: Annotated[InferenceService, Depends(get_inference)],
    manager: Annotated[ModelManager, Depends(get_manager)],
    model_version: PinHeader = None,
    rollout_key: KeyHeader = None,
) -> JSONResponse:
    """Tags for one text or a list of texts, in order, from the served model version (or the
    canary's candidate for its share of keys, or the loaded version the request names)."""
    pin = pinned_version(model_version, body.model_version)
    return await _predict(
        request, body.all_texts(), body.top_k, settings, inference, manager, pin, rollout_key
    )


@router.post("/tag/predict/", response_model=PredictResponse, responses=ERRORS, tags=["capstone"])
async def tag_predict_form(
    request: Request,
    text: Annotated[str, Form(description="a question title", examples=["Sort a dict by value"])],
    settings: Annotated[ApiSettings, Depends(get_settings)],
    inference: Annotated[InferenceService, Depends(get_inference)],
    manager: Annotated[ModelManager, Depends(get_manager)],
    model_version: PinHeader = None,
    rollout_key: KeyHeader = None,
) -> JSONResponse:
    """The original capstone's route: form field ``text``; answers like ``POST /predict``."""
    if not text.strip():
        raise ApiError(422, "invalid_request", "text: text is empty or only whitespace")
    return await _predict(
        request, [text], None, settings, inference, manager, model_version, rollout_key
    )


@router.get("/tag/status/", response_model=StatusResponse, tags=["capstone"])
async def tag_status(manager: Annotated[ModelManager, Depends(get_manager)]) -> StatusResponse:
    """The original capstone's status route."""
    current = manager.current
    return StatusResponse(
        status="ready" if current else "no_model",
        model_version=current.version if current else None,
    )


@router.get("/health", response_model=HealthResponse, tags=["ops"])
async def health() -> HealthResponse:
    """The process is up (liveness)."""
    return HealthResponse(status="ok")


@router.get("/ready", response_model=ReadyResponse, responses={503: ERRORS[503]}, tags=["ops"])
async def ready(manager: Annotated[ModelManager, Depends(get_manager)]) -> ReadyResponse:
    """A model is loaded and requests can be served (readiness)."""
    if manager.current is None:
        raise not_ready()
    return ReadyResponse(status="ready", model_version=manager.current.version)


@router.get("/model", response_model=ModelInfo, tags=["ops"])
async def model_info(
    request: Request,
    manager: Annotated[ModelManager, Depends(get_manager)],
    inference: Annotated[InferenceService, Depends(get_inference)],
    shadow: Annotated[ShadowRunner, Depends(get_shadow)],
) -> ModelInfo:
    """The served version, when it was created and loaded, labels, training and metrics; and
    its live quality and drift (``live``) from the inference log, with those of other versions
    served recently; the rollout candidate beside it, the shadow counts and the agreement."""
    failed = [
        FailedVersion(
            version=version,
            error=f.error,
            attempts=f.attempts,
            last_attempt_at=f.last_attempt_at,
            next_retry_at=f.next_retry_at,
        )
        for version, f in manager.failed.items()
    ]
    stats = inference.stats
    batching = {
        "enabled": inference.batching,
        **asdict(stats),
        "mean_batch_size": round(stats.texts / stats.batches, 2) if stats.batches else None,
    }
    current = manager.current
    monitor: LiveMonitor = request.app.state.live
    live = monitor.section(current.version if current is not None else None)
    rollout = rollout_sections(manager, shadow)
    if current is None:
        return ModelInfo(
            version=None,
            latest=manager.latest_seen,
            latest_error=manager.latest_error,
            failed_versions=failed,
            batching=batching,
            live=live,
            **rollout,
        )
    valid = current.metrics.get("valid", {})
    return ModelInfo(
        version=current.version,
        created=current.manifest.get("created"),
        loaded_at=current.loaded_at,
        base_model=current.manifest.get("base_model"),
        threshold=current.predictor.threshold,
        precision=manager.precision,
        backend=backend_of(current.predictor),
        labels=current.predictor.labels,
        training=current.training,
        metrics={k: v for k, v in valid.items() if k != "per_tag"},
        latest=manager.latest_seen,
        latest_error=manager.latest_error,
        failed_versions=failed,
        batching=batching,
        live=live,
        **rollout,
    )
