"""Request and response models of every route (they also make the /docs page)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EXAMPLE_TITLE = "How to merge two pandas DataFrames on a column?"


class PredictRequest(BaseModel):
    """One text (``text``) or several (``texts``); not both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": EXAMPLE_TITLE},
                {"texts": [EXAMPLE_TITLE, "Java NullPointerException in Spring bean"], "top_k": 3},
            ]
        },
    )

    text: str | None = Field(None, description="a question title")
    texts: list[str] | None = Field(None, description="several question titles", min_length=1)
    top_k: int | None = Field(None, ge=1, description="how many scored tags to return per text")

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text is empty or only whitespace")
        return value

    @field_validator("texts")
    @classmethod
    def _texts_not_blank(cls, value: list[str] | None) -> list[str] | None:
        for i, text in enumerate(value or []):
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty or only whitespace")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
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
    error: str


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
