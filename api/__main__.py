"""``python -m api``: serve the API with uvicorn on ``API_HOST``:``API_PORT``."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from api.app import create_app
from api.keys import KeysFileError
from api.middleware import ACCESS_LOGGER
from api.settings import ApiSettings
from shared.logs import setup_logging
from shared.settings import SettingsError, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api",
        description="Serve the version LATEST names over HTTP with uvicorn; new versions are "
        "picked up without a restart. Every setting is an API_* environment variable "
        "(TAGGER_ARTEFACTS_DIR for the store; see the configuration reference); --host and "
        "--port override two of them.",
    )
    parser.add_argument("--host", help="listen address (default $API_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default $API_PORT or 8000)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = load(ApiSettings, **overrides)
    except SettingsError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
    # Access lines (one a request) are written in batches unless API_LOG_FLUSH_S is 0.
    buffered = (ACCESS_LOGGER,) if settings.log_flush_s > 0 else ()
    setup_logging(settings.log_level, settings.log_format, buffered=buffered)
    for line in ApiSettings.deprecations():
        logging.getLogger("api").warning(line)
    try:
        app = create_app(settings)
    except KeysFileError as exc:
        print(f"error: API_KEYS_FILE: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
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
