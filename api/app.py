"""``create_app(settings)``: the FastAPI application, its model manager and watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from api.auth import AuthMiddleware, KeyGuard, document_security
from api.errors import install_error_handlers
from api.exposure import InternalRoutes
from api.feedback import router as feedback_router
from api.inference import InferenceService
from api.limits import BodyBudget, BodyLimit, ConcurrencyLimit, document_limits
from api.live import LiveMonitor
from api.metrics import ApiMetrics
from api.middleware import RequestMiddleware
from api.model_manager import ModelManager
from api.prediction_log import InferenceLog
from api.routes import router
from api.settings import ApiSettings
from api.shadow import ShadowRunner
from shared.logs import flush_logs
from shared.store import ArtefactStore

log = logging.getLogger(__name__)

DESCRIPTION = """
Tags Stack Overflow questions from their titles with a fine-tuned MiniLM model.

The service serves the version named by `LATEST` in the artefacts directory and switches to a
newly published version by itself (no restart, no failed request). Every error is JSON:
`{"error": code, "message": text, "request_id": id}`.

**Rolling out a version.** A candidate named by `CANDIDATE` (`tagger versions shadow|canary`)
is loaded beside the served version. In shadow mode a sampled share of answered requests is
scored by it off the response path (shed first when the model is busy); as a canary it answers
a deterministic share of requests, by a hash of `X-Rollout-Key` (else the request id), so the
same key always lands on the same version. `model_version` in every answer names the version
that computed it. A request may name a loaded version with `X-Model-Version` (or the body's
`model_version`); naming one that is not loaded is a JSON 409 listing `loaded_versions`.
`GET /model` shows the candidate, the shadow counts and how the two versions agree.

**Request ids.** Send `X-Request-ID` (1-128 of letters, digits and `._:/+=-`) to have it
echoed in the response header, in error bodies and in every log line of the request;
without one (or with another value) the API makes one up and returns it the same way.

**Inference log and feedback.** Each answered text of a sampled request
(`API_PREDICTION_LOG_SAMPLE`) is logged with its request id, version, title (or its hash) and
tags; `POST /feedback` reports the tags the author chose for it, and `GET /model` (`live`)
shows each recent version's live quality and drift against its validation data.

**Monitoring.** `GET /metrics` answers in the Prometheus text format (OpenMetrics when the
scraper asks for it): requests by route, method and status, latency histograms, batch sizes
and queue waits, queue depth, overload refusals, the served model version and its reloads,
the top predicted tag per tag, input lengths in tokens, the inference log's written and
dropped rows, each recent version's live quality and drift, and process metrics. It is for a
Prometheus server, not for clients, so it is not listed among the routes below
(`API_METRICS=false` turns it off).

**Internal routes.** With `API_INTERNAL_PORT` set, `/metrics`, `/model`, `/docs` and
`/openapi.json` answer only on that port; on the public port they are a 404 like any unknown
path.
"""


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the app; the model is loaded in the lifespan, before the first request.
    KeysFileError when ``API_KEYS_FILE`` is set and cannot be used."""
    settings = settings or ApiSettings()
    metrics = ApiMetrics() if settings.metrics else None
    guard = KeyGuard.from_settings(settings, metrics.keys if metrics is not None else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Every forward pass happens on this one thread; new versions load on another. torch is
        # imported (by the torch backend) only when a version is served with it.
        torch_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")
        loader_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        manager = ModelManager(
            ArtefactStore(settings.artefacts_dir),
            verify_checksums=settings.verify_checksums,
            torch_executor=torch_executor,
            loader_executor=loader_executor,
            precision=settings.precision,
            retry_initial_s=settings.retry_initial_s,
            retry_max_s=settings.retry_max_s,
            observer=metrics,
            backend=settings.backend,
            threads=settings.torch_threads,
            spinning=settings.onnx_spinning,
        )
        inference = InferenceService(
            manager,
            batching=settings.batching,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queue_depth=settings.queue_depth,
            torch_executor=torch_executor,
            observer=metrics,
        )
        inference_log = InferenceLog.open(settings, observer=metrics)
        shadow = ShadowRunner(
            manager,
            torch_executor,
            inference.busy,
            lambda: inference.served_waiting,
            inference_log,
            observer=app.state.rollout_observer,
            max_busy=settings.shadow_max_busy,
            max_texts=settings.shadow_queue,
        )
        live = LiveMonitor(
            inference_log.engine,
            manager.store,
            lambda: manager.current,
            window_rows=settings.live_window_rows,
            window_s=settings.live_window_s,
            refresh_s=settings.live_refresh_s,
        )
        app.state.manager, app.state.inference = manager, inference
        app.state.inference_log, app.state.live = inference_log, live
        app.state.shadow = shadow
        if metrics is not None:
            metrics.watch(manager, inference, live=live, log=inference_log, rollout=manager)
        await manager.start()
        inference.start()
        shadow.start()
        tasks = [asyncio.create_task(manager.watch(settings.poll_interval_s), name="watch-latest")]
        if settings.log_flush_s > 0:
            tasks.append(asyncio.create_task(_flush_logs_every(settings.log_flush_s)))
        if settings.live_refresh_s > 0:
            tasks.append(asyncio.create_task(live.run(), name="live-figures"))
        if guard is not None:
            tasks.append(asyncio.create_task(guard.watch(settings.poll_interval_s), name="keys"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            flush_logs()
            await shadow.close()
            await inference.close()
            await asyncio.to_thread(inference_log.close)
            torch_executor.shutdown(wait=True, cancel_futures=True)
            loader_executor.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="tagger",
        summary="Stack Overflow tag prediction",
        description=DESCRIPTION,
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.key_guard = guard
    app.state.rollout_observer = metrics.rollout if metrics is not None else None
    install_error_handlers(app)
    # The last added is the outermost: the request id, access log and metrics see every
    # request, one refused by a limit or kept off the public port included.
    app.state.body_budget = BodyBudget(settings.body_buffer_bytes)
    app.add_middleware(
        BodyLimit,
        max_body_bytes=settings.max_body_bytes,
        timeout_s=settings.request_timeout_s,
        budget=app.state.body_budget,
    )
    if guard is not None:  # before the body is read; an internal route on the public port 404s
        app.add_middleware(AuthMiddleware, guard=guard, settings=settings)
    app.add_middleware(InternalRoutes, settings=settings)
    app.add_middleware(ConcurrencyLimit, settings=settings)
    app.add_middleware(RequestMiddleware, metrics=metrics, keys=guard is not None)
    app.include_router(router)
    app.include_router(feedback_router)
    if metrics is not None:
        _serve_metrics(app, metrics)
    document_limits(app, settings)
    document_security(app, settings)
    _serve_docs_offline(app)
    return app


async def _flush_logs_every(interval_s: float) -> None:
    """Write the buffered access lines every ``interval_s`` (see shared.logs.AccessBuffer)."""
    while True:
        await asyncio.sleep(interval_s)
        flush_logs()


def _serve_metrics(app: FastAPI, metrics: ApiMetrics) -> None:
    """GET /metrics for Prometheus (described in the page's text, not among the routes)."""

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        body, content_type = metrics.render(request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": content_type})


def _serve_docs_offline(app: FastAPI) -> None:
    """/docs with Swagger UI served from the image itself, not from a CDN (offline sites)."""
    app.mount(
        "/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets"
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )
