"""Request and response models of every route (they also make the /docs page)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from api.rollout_schemas import AgreementSummary, CandidateInfo, ShadowCounts

EXAMPLE_TITLE = "How to merge two pandas DataFrames on a column?"
VersionName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


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
    model_version: VersionName | SkipJsonSchema[None] = Field(
        None,
        description="answer with this loaded version (as the X-Model-Version header; 409 when "
        "it is not loaded)",
        json_schema_extra=_no_default,
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
        if "model_version" in self.model_fields_set and self.model_version is None:
            raise ValueError("model_version must not be null (leave it out for the default)")
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
    loaded_versions: list[str] | None = Field(
        None, description="version_not_loaded: the versions that can be named (served first)"
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


# The request id pattern of api.middleware (X-Request-ID), as JSON Schema states it.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:/+=-]{1,128}$"
MAX_FEEDBACK_TAGS = 100
MAX_TAG_CHARS = 100


class FeedbackRequest(BaseModel):
    """The tags the author chose for a text the API answered (``request_id`` and
    ``position`` name it)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"request_id": "3f2b9c1e8d7a4f60a1b2c3d4e5f60718", "tags": ["python", "pandas"]}
            ]
        },
    )

    request_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="the X-Request-ID of the prediction (sent by the client or made up by the "
        "API and returned in that header)",
    )
    tags: list[str] = Field(
        min_length=1,
        max_length=MAX_FEEDBACK_TAGS,
        description="the tags chosen, each of 1 to 100 characters, not blank (kept even when "
        "the model does not know them: that is how a new tag shows up)",
        examples=[["python", "pandas"]],
    )
    position: int = Field(
        0, ge=0, description="which text of the request (its index in `texts`; 0 for `text`)"
    )

    @field_validator("position", mode="before")
    @classmethod
    def _position_is_a_json_integer(cls, value: object) -> object:
        if isinstance(value, bool | str):
            raise ValueError("position must be an integer")
        return value

    @field_validator("tags")
    @classmethod
    def _tags_not_blank(cls, value: list[str]) -> list[str]:
        tags: list[str] = []
        for i, tag in enumerate(value):
            if len(tag) > MAX_TAG_CHARS:
                raise ValueError(f"tags[{i}] has {len(tag)} characters; at most {MAX_TAG_CHARS}")
            if not tag.strip():
                raise ValueError(f"tags[{i}] is empty or only whitespace")
            if tag.strip() not in tags:
                tags.append(tag.strip())
        return tags


class FeedbackResponse(BaseModel):
    request_id: str
    position: int
    version: str = Field(description="the model version that answered the request")
    replaced: bool = Field(description="true when an earlier report for this text was replaced")
    unknown_tags: list[str] | None = Field(
        description="the reported tags the served model cannot predict (null when another "
        "version answered the request)",
        examples=[["polars"]],
    )


class LiveQuality(BaseModel):
    p_at_1: float | None = Field(description="share of texts whose top tag was chosen")
    recall_at_5: float | None = Field(description="chosen tags found among the top 5, on average")
    micro_f1: float | None = Field(description="micro-F1 of the decided tags")


class LiveDrift(BaseModel):
    psi_top_score: float | None = Field(description="PSI of the top score against the reference")
    psi_tokens: float | None = Field(description="PSI of tokens per title against the reference")


class LiveTagRate(BaseModel):
    tag: str = Field(description="a tag, or 'other': the mean of the tags not listed")
    live: float = Field(description="share of the window's texts the tag was decided for")
    reference: float | None = Field(description="the same share on the validation rows")


class LiveVersion(BaseModel):
    version: str
    rows: int = Field(description="logged predictions in the window")
    feedback_rows: int = Field(description="those with feedback")
    oldest: str | None = Field(description="the window's oldest row (ISO 8601)")
    newest: str | None = Field(description="the window's newest row (ISO 8601)")
    quality: LiveQuality = Field(description="on the rows with feedback (null: none yet)")
    reference_quality: dict[str, float] | None = Field(
        description="the validation figures of the version's profile (null: no reference)"
    )
    drift: LiveDrift | str = Field(
        description="input drift against the reference, or 'no reference' for a version "
        "published without a profile"
    )
    unknown_feedback_tag_share: float | None = Field(
        description="share of the reported tags the version cannot predict"
    )
    no_tag_share: float | None = None
    unknown_token_rate: float | None = None
    tags: list[LiveTagRate] = Field(description="the most frequent tags, then 'other'")


class LiveWindow(BaseModel):
    rows: int = Field(description="newest logged rows per version (API_LIVE_WINDOW_ROWS)")
    seconds: float | None = Field(description="and no older than this (API_LIVE_WINDOW_S)")
    refresh_s: float = Field(description="how often the figures are computed (API_LIVE_REFRESH_S)")


class LiveSection(BaseModel):
    enabled: bool = Field(description="false when API_LIVE_REFRESH_S is 0")
    window: LiveWindow
    updated_at: str | None = Field(description="when the figures were computed (ISO 8601)")
    error: str | None = Field(
        None, description="why the last refresh failed (the figures are then older)"
    )
    served: LiveVersion | None = Field(description="the served version's figures")
    others: list[LiveVersion] = Field(description="other recently served versions")


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
    live: LiveSection | None = Field(
        None, description="live quality and drift from the inference log (null: not yet)"
    )
    loaded_versions: list[str] = Field(
        [], description="versions a request may name (X-Model-Version): served, then candidate"
    )
    candidate: CandidateInfo | None = Field(
        None, description="the rollout candidate CANDIDATE names (null: none)"
    )
    candidate_error: str | None = Field(
        None, description="why CANDIDATE cannot be read, when it cannot (no candidate is served)"
    )
    shadow: ShadowCounts | None = None
    agreement: AgreementSummary | None = None
