"""Which requests a canary answers: one deterministic share per key, the same everywhere.

Every replica, the benchmarks, the tests and the documentation use this one function, so a
key (the caller's ``X-Rollout-Key``, else the request id) lands on the same version on every
replica and on every run.
"""

from __future__ import annotations

import hashlib

_SPAN = 2**64


def canary_share(key: str) -> float:
    """A number in [0, 1) fixed by ``key``: the first 8 bytes of its sha256, over 2**64. The
    candidate answers a canary request when it is below the canary's fraction."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _SPAN
