"""Which loaded version answers a prediction request, and the rollout's part of ``GET /model``.

A request may pin a loaded version (``X-Model-Version`` or ``model_version``): that version
answers it, or the answer is a JSON 409 naming the loaded ones. Otherwise, while a canary is on,
the candidate answers the requests whose key (``X-Rollout-Key``, else the request id) has a
:func:`~shared.live.canary_share` below the canary's fraction: the same key always lands on the
same version, on every replica. Everything else goes to the served version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.errors import ApiError
from api.model_manager import ModelManager
from api.rollout_schemas import AgreementSummary, CandidateInfo, ShadowCounts
from api.shadow import ShadowRunner
from shared.live import canary_share
from shared.store import CANARY

MODEL_VERSION_HEADER = "X-Model-Version"
ROLLOUT_KEY_HEADER = "X-Rollout-Key"
STABLE_ROUTE, CANARY_ROUTE, PINNED_ROUTE = "stable", "canary", "pinned"


@dataclass(frozen=True)
class Route:
    """Where a request goes: ``target`` None is the served version."""

    name: str  # STABLE_ROUTE, CANARY_ROUTE or PINNED_ROUTE
    target: str | None = None

    @property
    def pinned(self) -> bool:
        return self.name == PINNED_ROUTE


STABLE = Route(STABLE_ROUTE)


def pinned_version(header: str | None, field: str | None) -> str | None:
    """The version a request names, by header or body field (422 when they differ)."""
    if header is not None and field is not None and header != field:
        raise ApiError(
            422,
            "conflicting_model_version",
            f"the {MODEL_VERSION_HEADER} header names {header} and model_version names "
            f"{field}: give one, or the same in both",
        )
    return header if header is not None else field


def not_loaded(manager: ModelManager, version: str) -> ApiError:
    """The 409 for a request naming a version that is not loaded."""
    loaded = manager.loaded_versions()
    return ApiError(
        409,
        "version_not_loaded",
        f"version {version} is not loaded here; name one of: {', '.join(loaded) or 'none'}",
        extra={"loaded_versions": loaded},
    )


def route_for(manager: ModelManager, pin: str | None, key: str | None) -> Route:
    """The route of a request pinning ``pin`` (or None) with canary key ``key``."""
    if pin is not None:
        if manager.loaded(pin) is None:
            raise not_loaded(manager, pin)
        return Route(PINNED_ROUTE, pin)
    active = manager.active_rollout()
    if active is None or key is None:
        return STABLE
    rollout, candidate = active
    if rollout.mode == CANARY and canary_share(key) < rollout.fraction:
        return Route(CANARY_ROUTE, candidate.version)
    return STABLE


def answered_route(route: Route, version: str) -> str:
    """The route that answered: a canary request whose candidate was gone by compute time
    was answered by the served version."""
    if route.name == CANARY_ROUTE and version != route.target:
        return STABLE_ROUTE
    return route.name


def rollout_sections(manager: ModelManager, shadow: ShadowRunner) -> dict[str, Any]:
    """The rollout's fields of ``GET /model`` (:class:`~api.schemas.ModelInfo`)."""
    return {
        "loaded_versions": manager.loaded_versions(),
        "candidate": candidate_info(manager),
        "candidate_error": manager.candidate_error,
        "shadow": shadow_counts(shadow),
        "agreement": agreement_summary(shadow),
    }


def candidate_info(manager: ModelManager) -> CandidateInfo | None:
    """``GET /model``'s ``candidate``: what CANDIDATE names, whether it is loaded, its error."""
    rollout = manager.rollout
    if rollout is None:
        return None
    loaded = manager.loaded(rollout.version)
    failure = manager.failed.get(rollout.version)
    return CandidateInfo(
        version=rollout.version,
        mode=rollout.mode,
        sample=rollout.sample,
        fraction=rollout.fraction,
        since=rollout.since,
        loaded=loaded is not None,
        loaded_at=loaded.loaded_at if loaded is not None else None,
        error=failure.error if failure is not None else None,
    )


def shadow_counts(shadow: ShadowRunner) -> ShadowCounts:
    stats = shadow.stats
    return ShadowCounts(scored=stats.scored, shed=stats.shed, queued=shadow.queued_texts)


def agreement_summary(shadow: ShadowRunner) -> AgreementSummary:
    stats = shadow.stats
    n = stats.compared

    def mean(total: float) -> float | None:
        return round(total / n, 4) if n else None

    return AgreementSummary(
        compared=n,
        top1_rate=mean(stats.top1_agreed),
        mean_jaccard=mean(stats.jaccard_sum),
        mean_score_delta=mean(stats.score_delta_sum),
    )
