"""Helpers every trainer command shares: logging set-up and turning user errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from shared import logs
from shared.data import DatasetError
from shared.inference_log import DatabaseError
from shared.store import ArtefactError
from trainer.config import ConfigError, load_settings

USER_ERRORS = (ConfigError, DatasetError, ArtefactError, DatabaseError)
EXIT_USER_ERROR = 2


def setup_logging(level: str = "INFO", fmt: str | None = None) -> None:
    """Log to stderr as text, or as JSON lines with ``fmt`` (default $TRAINER_LOG_FORMAT);
    then warn of any former variable name the environment still uses."""
    settings = load_settings()
    logs.setup_logging(level, fmt or settings.log_format, stream=sys.stderr)
    for line in settings.deprecations():
        logging.getLogger("trainer").warning(line)
    for noisy in ("huggingface_hub", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # transformers' load report lists the base model's unused pooler: expected, not news.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_main(main: Callable[[], int]) -> None:
    """Run ``main``; a user error becomes ``error: <one line>`` and exit code 2."""
    try:
        code = main()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except OSError as exc:  # the disk filled up, a folder vanished: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
