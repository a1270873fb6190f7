"""``python -m trainer.live_report`` (``tagger report``): how the served versions do on live
traffic, from the inference log: quality on the rows that got feedback and drift against each
version's reference profile, as a table on the terminal (:mod:`trainer.live_data`), and as a
figure (PNG) or a self-contained HTML page (:mod:`trainer.live_plot`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.inference_log import connect, recent_versions, upgrade, window
from shared.settings import DEFAULT_ARTEFACTS_DIR, STORE_ENV
from shared.store import ArtefactStore
from trainer.cli import run_main, setup_logging
from trainer.config import load_settings
from trainer.live_data import gather, render_text, table_rows, timeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    settings = load_settings()
    parser = argparse.ArgumentParser(
        prog="python -m trainer.live_report",
        description="Live quality (on the predictions that got feedback) and drift (against "
        "each version's reference profile) of the versions in the inference log, over a "
        "window of their newest logged predictions.",
    )
    parser.add_argument(
        "--version",
        action="append",
        help="report this version (repeatable; default: the versions with logged rows in the "
        "window, newest first, at most --max-versions)",
    )
    parser.add_argument("--max-versions", type=int, default=3, help="default 3")
    parser.add_argument(
        "--rows", type=int, default=1000, help="the newest N logged rows of each version (1000)"
    )
    parser.add_argument(
        "--hours", type=float, default=1.0, help="and none older than this (1; 0: by count only)"
    )
    parser.add_argument(
        "--database-url",
        default=settings.database_url,
        help="the inference log (default $TRAINER_DATABASE_URL or "
        f"{settings.database_url}; the password from $TRAINER_DATABASE_PASSWORD_FILE)",
    )
    parser.add_argument(
        "--artefacts-dir",
        type=Path,
        default=settings.artefacts_dir,
        help=f"where the versions' labels and reference profiles are (default ${STORE_ENV} or "
        f"{DEFAULT_ARTEFACTS_DIR})",
    )
    parser.add_argument("--html", type=Path, help="also write a self-contained HTML page here")
    parser.add_argument(
        "--png", type=Path, help="also write the figure (per-tag rates, metrics over time) here"
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.hours < 0 or args.max_versions < 1:
        parser.error("--rows and --max-versions must be at least 1, --hours at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("WARNING")
    seconds = args.hours * 3600 or None
    engine = connect(args.database_url, load_settings().database_password_file)
    where = engine.url.render_as_string(hide_password=True)
    try:
        upgrade(engine)
        versions = args.version or recent_versions(engine, seconds, limit=args.max_versions)
        windows = [
            gather(v, window(engine, v, args.rows, seconds), ArtefactStore(args.artefacts_dir))
            for v in versions
        ]
    finally:
        engine.dispose()
    span = describe_window(args.rows, seconds)
    if not any(w.rows for w in windows):
        print(f"no logged predictions to report in {where} ({span})")
        return 0
    print(f"live figures from {where} ({span}); cells: live / reference")
    print(render_text(windows))
    if args.html or args.png:
        from trainer.live_plot import figure_png, write_html  # matplotlib only when asked

        png = figure_png(windows, timeline(windows))
        if args.png:
            args.png.write_bytes(png)
            print(f"figure written to {args.png}")
        if args.html:
            write_html(args.html, windows, table_rows(windows), png, f"{where} ({span})")
            print(f"page written to {args.html}")
    return 0


def describe_window(rows: int, seconds: float | None) -> str:
    age = f", none older than {seconds / 3600:g} h" if seconds else ""
    return f"window: the newest {rows} rows of each version{age}"


if __name__ == "__main__":
    run_main(main)
