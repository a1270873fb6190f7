"""``python -m trainer.feedback import FILE`` (``tagger feedback import``): bulk labels into the
inference log's feedback table, from a file in any format the trainer reads. Imported rows are
labelled titles like the API's feedback: ``tagger train --with-feedback`` learns from both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.data import read_dataset
from shared.inference_log import connect, import_feedback, upgrade
from trainer.cli import run_main, setup_logging
from trainer.config import load_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    settings = load_settings()
    parser = argparse.ArgumentParser(
        prog="python -m trainer.feedback",
        description="Labelled questions for the inference log (the feedback that "
        "tagger train --with-feedback learns from).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser(
        "import",
        help="store the titles and tags of FILE as feedback rows",
        description="Store the titles and tags of FILE as feedback rows (source 'import'). "
        "FILE: a tab/comma-separated file with columns title,tags (tags as ['a', 'b'], a|b "
        "or <a><b>) or the long CSV post_id,tag_name,tag_id,tag_position,title. Tags the "
        "model does not know are kept: that is how it learns a new one.",
    )
    load.add_argument("file", type=Path, metavar="FILE")
    load.add_argument(
        "--database-url",
        default=settings.database_url,
        help="the inference log (default $TRAINER_DATABASE_URL or "
        f"{settings.database_url}; the password from $TRAINER_DATABASE_PASSWORD_FILE)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("WARNING")
    dataset = read_dataset(args.file)  # a bad file fails before the database is touched
    engine = connect(args.database_url, load_settings().database_password_file)
    try:
        upgrade(engine)
        stored = import_feedback(engine, dataset.titles, dataset.tags)
        where = engine.url.render_as_string(hide_password=True)
    finally:
        engine.dispose()
    skipped = sum(dataset.skipped.values())
    reasons = ", ".join(f"{n} {why}" for why, n in dataset.skipped.most_common())
    print(
        f"imported {stored} feedback row(s) from {args.file} into {where}"
        + (f"; skipped {skipped} row(s) of the file ({reasons})" if skipped else "")
    )
    return 0


if __name__ == "__main__":
    run_main(main)
