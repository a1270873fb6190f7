"""``python -m api``: serve the API with uvicorn on ``API_HOST``:``API_PORT``."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from api.app import create_app
from api.settings import ApiSettings
from shared.logs import setup_logging


def main() -> int:
    try:
        settings = ApiSettings()
    except ValidationError as exc:
        for err in exc.errors():
            key = "API_" + ".".join(str(p) for p in err["loc"]).upper()
            print(f"error: {key}: {err['msg']} (got {err.get('input')!r})", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()  # its errors go through our handler (text or JSON)
    hf_logging.enable_propagation()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        # uvicorn's loggers go through the handler set up above (text or JSON); the access
        # log is the app's own (api.access: request id, route, duration, texts, version).
        log_config=None,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
