"""How busy the one model thread is: passes in flight now, and its busy share of the last second.

Every forward pass (served or shadow) is bracketed by :meth:`BusyMeter.begin` and
:meth:`BusyMeter.end` on the event loop; overlapping passes (queued behind each other on the
one thread) count once, so the share is the union of the busy time, never above 1. The shadow
runner asks it whether a shadow pass may start.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable


class BusyMeter:
    """The model thread's busy intervals over the last ``window_s`` (event loop only)."""

    def __init__(self, window_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.clock = clock
        self.in_flight = 0
        self._since: float | None = None  # when the thread last became busy
        self._spans: collections.deque[tuple[float, float]] = collections.deque()

    @property
    def idle(self) -> bool:
        """No pass is running or queued on the model thread."""
        return self.in_flight == 0

    def begin(self) -> float:
        """A pass was handed to the model thread; returns the moment (the meter's clock)."""
        now = self.clock()
        if self.in_flight == 0:
            self._since = now
        self.in_flight += 1
        return now

    def end(self) -> float:
        """A pass finished (or failed); returns the moment."""
        now = self.clock()
        self.in_flight -= 1
        if self.in_flight == 0 and self._since is not None:
            self._spans.append((self._since, now))
            self._since = None
        return now

    def share(self) -> float:
        """Share of the last ``window_s`` the thread was busy, the running pass included."""
        now = self.clock()
        start = now - self.window_s
        while self._spans and self._spans[0][1] <= start:
            self._spans.popleft()
        busy = sum(min(end, now) - max(begin, start) for begin, end in self._spans)
        if self._since is not None:
            busy += now - max(self._since, start)
        return min(1.0, max(0.0, busy / self.window_s))
