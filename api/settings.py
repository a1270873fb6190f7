"""API settings, read from ``API_*`` environment variables (and ``TAGGER_ARTEFACTS_DIR``);
invalid values stop start-up. The API's only reader of the environment, its commands included."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.predictor import Backend, Precision
from shared.settings import (
    ServiceSettings,
    database_password_file_field,
    database_url_field,
    store_field,
)


class ApiSettings(ServiceSettings):
    """Every setting of the API server and of ``tagger predict``."""

    model_config = SettingsConfigDict(
        env_prefix="API_", extra="ignore", env_ignore_empty=True, validate_by_name=True
    )

    artefacts_dir: Path = store_field(deprecated_env="API_ARTEFACTS_DIR")
    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8000, ge=1, le=65535, description="listen port")
    internal_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="a second listen port (same address) for /metrics, /model, /docs and "
        "/openapi.json, which then answer 404 on the public port (none: every route on port)",
    )
    poll_interval_s: float = Field(2.0, gt=0, le=3600, description="how often LATEST is checked")
    verify_checksums: bool = Field(True, description="check manifest sha256 before loading")
    max_text_chars: int = Field(2000, ge=1, description="longer texts are refused with 413")
    max_texts: int = Field(64, ge=1, description="most texts in one request (more: 422)")
    # 512 KiB: the largest request the other limits allow (64 texts x 2000 characters) as
    # UTF-8 JSON, at 4 bytes a character at worst, plus quotes, commas and top_k, is 512,216 bytes.
    max_body_bytes: int = Field(
        512 * 1024, ge=1024, description="larger request bodies get 413, unread and unparsed"
    )
    default_top_k: int = Field(5, ge=1, description="top_k when a request gives none")
    max_top_k: int = Field(100, ge=1, description="largest top_k a request may ask for")
    batching: bool = Field(True, description="micro-batch concurrent requests into one pass")
    max_batch_size: int = Field(32, ge=1, le=1024, description="most texts in one forward pass")
    max_wait_ms: float = Field(
        10.0, ge=0, le=1000, description="how long a batch under load waits for more texts"
    )
    queue_depth: int = Field(
        1024, ge=1, description="most texts waiting; beyond it requests get 503 + Retry-After"
    )
    retry_initial_s: float = Field(
        5.0, gt=0, description="first retry of a version that failed to load (then doubling)"
    )
    retry_max_s: float = Field(300.0, gt=0, description="longest wait between two retries")
    backend: Backend = Field(
        "auto",
        description="model runtime: onnx (ONNX Runtime on the version's graph), torch, or auto "
        "(onnx where the version has a graph, else torch where torch is installed)",
    )
    precision: Precision = Field(
        "fp32", description="fp32, or int8 (dynamic quantization of the linear layers)"
    )
    torch_threads: int = Field(
        0, ge=0, le=256, description="CPU threads of the model runtime, torch or ONNX (0: default)"
    )
    onnx_spinning: Literal["off", "in-run", "on"] = Field(
        "in-run",
        description="ONNX Runtime's idle threads: in-run spin between the operators of a "
        "forward pass and sleep between passes; off always sleep; on also spin after a pass",
    )
    log_level: str = Field("info", description="uvicorn and app log level")
    log_format: Literal["text", "json"] = Field(
        "text", description="text (human-readable lines) or json (one object per line)"
    )
    log_flush_s: float = Field(
        0.5,
        ge=0,
        le=60,
        description="access lines are written in batches at least this often (0: each at once); "
        "other lines, warnings and errors at once",
    )
    metrics: bool = Field(True, description="GET /metrics (Prometheus) and its instrumentation")
    graceful_timeout_s: int = Field(20, ge=1, description="time in-flight requests get on stop")
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a request's headers, then its whole body, must each arrive within this, "
        "else 408",
    )
    body_buffer_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="most request-body bytes held at once over all requests; a larger body "
        "beyond it gets 503 overloaded (bodies under 16 KiB are always read)",
    )
    max_concurrency: int = Field(
        2048,
        ge=1,
        description="most requests in flight; beyond it 503 overloaded (JSON), /health and "
        "/ready excepted; uvicorn refuses connections 512 above it (plain-text 503)",
    )
    keep_alive_s: float = Field(
        5.0, gt=0, le=3600, description="an idle keep-alive connection is closed after this"
    )
    database_url: str = database_url_field()
    database_password_file: Path | None = database_password_file_field()
    prediction_log_sample: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of /predict requests logged, all texts of a sampled request "
        "(0: nothing logged)",
    )
    prediction_log_titles: Literal["text", "hash"] = Field(
        "text",
        description="text: log each title; hash: only the sha256 of the normalised title "
        "(for sites that may not keep text; such rows cannot be retrained on)",
    )
    prediction_log_queue: int = Field(
        10000,
        ge=1,
        le=1_000_000,
        description="most prediction rows waiting to be written; beyond it rows are dropped "
        "and counted",
    )
    prediction_log_flush_s: float = Field(
        0.5, gt=0, le=60, description="how often the waiting prediction rows are written"
    )
    live_window_rows: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="the live figures cover the newest this many logged rows of a version",
    )
    live_window_s: float = Field(
        3600,
        ge=0,
        description="and no row older than this many seconds (0: by count only)",
    )
    live_refresh_s: float = Field(
        15,
        ge=0,
        le=86400,
        description="how often the live figures are recomputed from the database "
        "(0: no live figures)",
    )
    shadow_max_busy: float = Field(
        0.8,
        ge=0,
        le=1,
        description="shadow passes run only while the model thread was busy less than this "
        "share of the last second (and no request waits)",
    )
    shadow_queue: int = Field(
        256,
        ge=1,
        le=100_000,
        description="most texts waiting for a shadow pass; beyond it the oldest are shed and "
        "counted (as are those waiting over 2 s)",
    )
    keys_file: Path | None = Field(
        None,
        description="API keys file (NAME:SHA256HEX lines, made by tagger keys add); set, every "
        "route but /health and /ready needs a key (none: keys off)",
    )
    quota_requests_per_s: float = Field(
        0, ge=0, description="requests per second each key may make (0: no limit)"
    )
    quota_texts_per_s: float = Field(
        0, ge=0, description="texts per second each key may send for prediction (0: no limit)"
    )
    quota_burst_s: float = Field(
        2.0,
        gt=0,
        description="a key's quota bucket holds this many seconds of its rate (at least one "
        "request, or the request's texts)",
    )

    @model_validator(mode="after")
    def _two_ports(self) -> ApiSettings:
        if self.internal_port == self.port:
            raise ValueError(
                f"API_INTERNAL_PORT and API_PORT are both {self.port}: give the internal routes "
                "another port, or unset API_INTERNAL_PORT to serve every route on API_PORT"
            )
        return self
