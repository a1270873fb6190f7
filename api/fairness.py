"""The texts waiting for the model, in all and by caller, and who may add more.

The batcher's queue holds at most ``depth`` texts. While it is at most half full anyone may
add texts that fit; beyond half, a caller (an API key's name) may hold at most an equal share
of the queue, ``depth / callers with waiting texts`` (itself counted), so one caller sending
many large requests is refused (503, as for a full queue) while the others are still admitted.
Requests with no caller (keys off) are held to the total only.
"""

from __future__ import annotations


class WaitingTexts:
    """Counts of waiting texts and the fair-share admission rule (event loop only)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.total = 0
        self.by_caller: dict[str, int] = {}

    def admits(self, caller: str | None, texts: int) -> bool:
        """Whether ``texts`` more texts of ``caller`` may wait."""
        if self.total + texts > self.depth:
            return False
        if caller is None or self.total * 2 <= self.depth:
            return True
        callers = len(self.by_caller) + (caller not in self.by_caller)
        return self.by_caller.get(caller, 0) + texts <= self.depth / callers

    def add(self, caller: str | None, texts: int) -> None:
        self.total += texts
        if caller is not None:
            self.by_caller[caller] = self.by_caller.get(caller, 0) + texts

    def remove(self, caller: str | None, texts: int) -> None:
        self.total -= texts
        if caller is not None:
            left = self.by_caller.get(caller, 0) - texts
            if left > 0:
                self.by_caller[caller] = left
            else:
                self.by_caller.pop(caller, None)
