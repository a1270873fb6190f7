"""The rollout's parts of ``GET /model``: the candidate, the shadow counts and the agreement."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CandidateInfo(BaseModel):
    """What ``CANDIDATE`` names and whether it is loaded beside the served version."""

    version: str
    mode: str = Field(description="shadow (scores a sample off the response path) or canary")
    sample: float = Field(description="share of answered requests scored by the other version")
    fraction: float = Field(description="canary: share of requests the candidate answers")
    since: str = Field(description="when this mode was set (ISO 8601, UTC)")
    loaded: bool = Field(description="loaded and taking its share (false: loading or failed)")
    loaded_at: str | None = Field(description="when it was loaded (ISO 8601, UTC)")
    error: str | None = Field(description="why it cannot be loaded, when it cannot")


class ShadowCounts(BaseModel):
    """Texts of sampled requests for the other loaded version, since start."""

    scored: int = Field(description="scored by a shadow pass")
    shed: int = Field(
        description="dropped: the model thread was busy (queue full or over 2 s) or the "
        "version was let go"
    )
    queued: int = Field(description="waiting for a shadow pass now")


class AgreementSummary(BaseModel):
    """The candidate against the served version on the texts both scored, since start."""

    compared: int = Field(description="texts scored by both")
    top1_rate: float | None = Field(description="share with the same top tag")
    mean_jaccard: float | None = Field(description="mean overlap of the decided tags")
    mean_score_delta: float | None = Field(
        description="mean of the candidate's top score minus the served version's"
    )
