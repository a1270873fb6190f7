"""Per-key quotas: a token bucket per key for requests and one for texts.

A bucket fills at ``rate`` tokens a second up to ``rate * burst_s`` (at least one request, or
the texts of the request being charged) and a request takes its tokens or is refused with the
whole seconds to wait (``Retry-After``). Requests are charged by the auth middleware before the
body is read; texts by the prediction routes once the body is parsed. A rate of 0 means no
limit. Only used when keys are on: callers are key names, a bounded set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from api.settings import ApiSettings

QUOTA_EXCEEDED = "quota_exceeded"


@dataclass
class TokenBucket:
    """``rate`` tokens a second, holding at most ``capacity``; starts full."""

    rate: float
    capacity: float
    tokens: float = field(init=False)
    updated: float = field(init=False)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.tokens = self.capacity
        self.updated = self.clock()

    def take(self, amount: float) -> float:
        """Take ``amount`` tokens and return 0, or take none and return the seconds until
        they are there. More than the capacity is granted once the bucket is full (leaving it
        in debt), so a request larger than the burst is slowed, never refused for ever."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(amount, self.capacity)
        if self.tokens >= needed:
            self.tokens -= amount
            return 0.0
        return (needed - self.tokens) / self.rate


def retry_after(seconds: float) -> str:
    """``Retry-After`` for a wait of ``seconds``: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


class Quotas:
    """Every key's buckets, made on a key's first request."""

    def __init__(
        self,
        requests_per_s: float,
        texts_per_s: float,
        burst_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests_per_s, self.texts_per_s, self.burst_s = requests_per_s, texts_per_s, burst_s
        self.clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._texts: dict[str, TokenBucket] = {}

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Quotas:
        return cls(
            settings.quota_requests_per_s, settings.quota_texts_per_s, settings.quota_burst_s
        )

    def charge_request(self, caller: str) -> float:
        """One request by ``caller``: 0 when it may go on, else the seconds to wait."""
        return self._charge(self._requests, self.requests_per_s, caller, 1)

    def charge_texts(self, caller: str, texts: int) -> float:
        """``texts`` texts by ``caller``: 0 when they may be predicted, else seconds to wait."""
        return self._charge(self._texts, self.texts_per_s, caller, texts)

    def _charge(
        self, buckets: dict[str, TokenBucket], rate: float, caller: str, amount: int
    ) -> float:
        if rate <= 0:
            return 0.0
        bucket = buckets.get(caller)
        if bucket is None:
            capacity = max(1.0, rate * self.burst_s)
            bucket = buckets[caller] = TokenBucket(rate, capacity, clock=self.clock)
        return bucket.take(amount)
