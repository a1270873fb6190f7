"""``python -m api``: serve the API with uvicorn on ``API_HOST``:``API_PORT``."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from api.app import create_app
from api.settings import ApiSettings


def main() -> int:
    try:
        settings = ApiSettings()
    except ValidationError as exc:
        for err in exc.errors():
            key = "API_" + ".".join(str(p) for p in err["loc"]).upper()
            print(f"error: {key}: {err['msg']} (got {err.get('input')!r})", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
