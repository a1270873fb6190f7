"""The one place where requests meet the model.

Every prediction goes through :meth:`InferenceService.predict`: it takes the model that is
being served at that moment (so a whole request runs on one version, even across a hot swap)
and runs the forward pass on a dedicated worker thread, never on the event loop. One worker
keeps concurrent requests from fighting over the CPU cores torch already uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from api.model_manager import LoadedModel, ModelManager
from shared.predictor import Prediction


class ModelNotReady(RuntimeError):
    """No model is loaded yet."""


class InferenceService:
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def predict(
        self, texts: Sequence[str], top_k: int
    ) -> tuple[LoadedModel, list[Prediction]]:
        model = self.manager.current
        if model is None:
            raise ModelNotReady()
        loop = asyncio.get_running_loop()
        predictions = await loop.run_in_executor(
            self._executor, model.predictor.predict, list(texts), top_k
        )
        return model, predictions

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
