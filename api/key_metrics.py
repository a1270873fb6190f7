"""The API keys' metrics: requests by key name and status, quota refusals by key name.

Label values are bounded: the names in the keys file, ``anonymous`` (a route that needs no
key, or keys off) and ``unknown`` (a request refused 401: no key or a wrong one). The key
itself is never a label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

ANONYMOUS = "anonymous"
UNKNOWN = "unknown"


class KeyMetrics:
    """``tagger_requests_by_key_total{key,status}`` and ``tagger_quota_rejections_total{key}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tagger_requests_by_key",
            "HTTP requests answered, by API key name (anonymous: no key needed; unknown: "
            "refused 401) and status",
            ["key", "status"],
            registry=registry,
        )
        self.rejections = Counter(
            "tagger_quota_rejections",
            "requests refused 429 quota_exceeded, by API key name",
            ["key"],
            registry=registry,
        )
        self._children: dict[tuple[str, int], Counter] = {}

    def observe(self, key: str, status: int) -> None:
        child = self._children.get((key, status))
        if child is None:
            child = self._children[(key, status)] = self.requests.labels(key, str(status))
        child.inc()

    def rejected(self, key: str) -> None:
        self.rejections.labels(key).inc()
