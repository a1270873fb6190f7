"""``python -m api``: serve the API with uvicorn on ``API_HOST``:``API_PORT`` (and on
``API_INTERNAL_PORT`` too when it is set: one server, one app, two sockets)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import socket
import sys

import uvicorn

from api.app import create_app
from api.keys import KeysFileError
from api.middleware import ACCESS_LOGGER
from api.settings import ApiSettings
from shared.logs import setup_logging
from shared.settings import SettingsError, load

# uvicorn's connection limit is this far above API_MAX_CONCURRENCY.
CONCURRENCY_BACKSTOP = 512


def _bind_internal(host: str, port: int) -> socket.socket:
    """The internal port's listening socket, on the same address as the public one."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"error: API_INTERNAL_PORT {port} on {host}: {exc.strerror}") from None
    logging.getLogger("api").info("internal routes on http://%s:%d", host, port)
    return sock


def _http_protocol(timeout_s: float) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol with a deadline for the request head; without httptools
    (not the API image), uvicorn's choice, with none."""
    try:
        from api.head_deadline import head_deadline_protocol
    except ImportError:
        return "auto"
    return head_deadline_protocol(timeout_s)


def _raise_open_files_limit(connections: int) -> None:
    """Let the process hold ``connections`` sockets (plus files): raise the soft open-files
    limit towards the hard one when it is lower (often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


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
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        http=_http_protocol(settings.request_timeout_s),
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works (call_later)
        # A backstop above the app's own JSON 503 (API_MAX_CONCURRENCY): uvicorn counts
        # connections, idle keep-alive ones included, and answers a plain-text 503 beyond it.
        limit_concurrency=settings.max_concurrency + CONCURRENCY_BACKSTOP,
        # uvicorn's loggers go through the handler set up above (text or JSON); the access
        # log is the app's own (api.access: request id, route, duration, texts, version).
        log_config=None,
        access_log=False,
    )
    _raise_open_files_limit(config.limit_concurrency or 0)
    server = uvicorn.Server(config)
    sockets = [config.bind_socket()]
    if settings.internal_port is not None:
        sockets.append(_bind_internal(settings.host, settings.internal_port))
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()
    if not server.started:
        return 3  # uvicorn has logged why (the app's start-up failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
