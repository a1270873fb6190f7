"""Comparing two distributions binned the same way: the population stability index."""

from __future__ import annotations

import math
from collections.abc import Sequence


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = 1e-4) -> float:
    """Population stability index of ``actual`` against ``expected`` (shares of the same bins):
    ``sum((a - e) * ln(a / e))``, each share floored at ``eps`` so an empty bin stays finite.
    Under 0.1 is read as stable, over 0.25 as a shift."""
    if len(expected) != len(actual):
        raise ValueError(f"psi: {len(expected)} expected shares but {len(actual)} actual ones")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(float(e), eps), max(float(a), eps)
        total += (a - e) * math.log(a / e)
    return total
