"""What every chaos scenario fails with (:mod:`tests.chaos.run` and the modules beside it)."""

from __future__ import annotations


class ChaosFailure(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ChaosFailure(message)
