"""Request and response models of every route (they also make the /docs page)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

EXAMPLE_TITLE = "How to merge two pandas DataFrames on a column?"


def _no_default(schema: dict[str, Any], **extra: Any) -> None:
    """A field one may leave out, with no default to show (its ``None`` means "not given")."""
    schema.pop("default", None)
    schema.update(extra)


class PredictRequest(BaseModel):
    """Exactly one of ``text`` (one title) or ``texts`` (several), and optionally ``top_k``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            # What the validator below enforces, stated in the document itself.
            "oneOf": [{"required": ["text"]}, {"required": ["texts"]}],
            "examples": [
                {"text": EXAMPLE_TITLE},
                {"texts": [EXAMPLE_TITLE, "Java NullPointerException in Spring bean"], "top_k": 3},
            ],
        },
    )

    # ``None`` stands for "not given"; an explicit null is refused, so the document shows
    # plain strings (SkipJsonSchema). Length limits come from the settings (api.limits).
    text: str | SkipJsonSchema[None] = Field(
        None, description="a question title", json_schema_extra=_no_default
    )
    texts: list[str] | SkipJsonSchema[None] = Field(
        None,
        description="several question titles, answered in order",
        json_schema_extra=lambda schema: _no_default(schema, minItems=1),
    )
    top_k: int | None = Field(
        None, ge=1, description="how many scored tags to return per text (null: the default)"
    )

    @field_validator("top_k", mode="before")
    @classmethod
    def _top_k_is_a_json_integer(cls, value: object) -> object:
        # JSON Schema's integer: 3 and 3.0, not true or "3" (which pydantic's lax mode takes).
        if isinstance(value, bool | str):
            raise ValueError("top_k must be an integer")
        return value

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text is empty or only whitespace")
        return value

    @field_validator("texts")
    @classmethod
    def _texts_not_blank(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("texts is empty: give at least one text")
        for i, text in enumerate(value or []):
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty or only whitespace")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        given = {"text", "texts"} & self.model_fields_set
        if len(given) != 1:
            raise ValueError("give exactly one of 'text' or 'texts'")
        (name,) = given
        if getattr(self, name) is None:
            raise ValueError(f"{name} must not be null")
        return self

    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class TagScoreOut(BaseModel):
    tag: str = Field(examples=["pandas"])
    score: float = Field(
        examples=[0.91],
        description="the tag's probability (per-tag sigmoid or softmax, as the model was trained)",
    )


class PredictionOut(BaseModel):
    tags: list[TagScoreOut] = Field(description="the top_k tags by score")
    predicted: list[str] = Field(
        description="tags scoring at least the model's tuned threshold (always the top one)",
        examples=[["python", "pandas"]],
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_version": "20261126T170110114Z-c2dcc7",
                    "predictions": [
                        {
                            "tags": [
                                {"tag": "pandas", "score": 0.61},
                                {"tag": "python", "score": 0.35},
                            ],
                            "predicted": ["pandas", "python"],
                        }
                    ],
                }
            ]
        }
    )

    model_version: str
    predictions: list[PredictionOut]


class ErrorResponse(BaseModel):
    error: str = Field(description="machine-readable code", examples=["model_not_ready"])
    message: str = Field(description="what went wrong and what to do")
    details: list[dict[str, Any]] | None = None
    request_id: str | None = Field(
        None,
        description="this request's id (the X-Request-ID header): quote it to find our log lines",
        examples=["3f2b9c1e8d7a4f60a1b2c3d4e5f60718"],
    )


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])


class ReadyResponse(BaseModel):
    status: str = Field(examples=["ready"])
    model_version: str


class StatusResponse(BaseModel):
    status: str = Field(description="'ready' or 'no_model'", examples=["ready"])
    model_version: str | None


class FailedVersion(BaseModel):
    version: str
    error: str = Field(description="why the last attempt to load it failed")
    attempts: int = Field(description="attempts so far")
    last_attempt_at: str = Field(description="when it was last tried (ISO 8601, UTC)")
    next_retry_at: str = Field(
        description="when it is tried again if LATEST still names it (ISO 8601, UTC); "
        "at once if LATEST is moved to it"
    )


class ModelInfo(BaseModel):
    version: str | None = Field(description="served version; null when none is loaded")
    created: str | None = None
    loaded_at: str | None = None
    base_model: str | None = None
    threshold: float | None = None
    precision: str | None = Field(None, description="fp32 or int8 (API_PRECISION)")
    backend: str | None = Field(
        None, description="the runtime serving this version: onnx or torch (API_BACKEND)"
    )
    labels: list[str] = []
    training: dict[str, Any] = {}
    metrics: dict[str, Any] = Field({}, description="validation metrics of the served version")
    latest: str | None = Field(None, description="the version LATEST named when last read")
    latest_error: str | None = Field(
        None, description="why LATEST cannot be read, when it cannot (null otherwise)"
    )
    batching: dict[str, Any] = Field(
        {}, description="micro-batching counters since start: batches, texts, mean batch size"
    )
    failed_versions: list[FailedVersion] = []
