"""``python -m trainer``: train a tagger and publish it as a new artefact version."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.settings import DEFAULT_ARTEFACTS_DIR, STORE_ENV
from trainer.cli import run_main, setup_logging
from trainer.config import DEFAULT_CONFIG, describe_keys, load_config, load_settings
from trainer.feedback_data import MIN_FEEDBACK_ROWS, FeedbackSource
from trainer.split import default_dataset

EXIT_NOT_PROMOTED = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    settings = load_settings()  # the flags' defaults
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description=(
            "Fine-tune all-MiniLM-L6-v2 (or any local Hugging Face encoder) as a Stack Overflow "
            "tagger and publish it as an immutable version in the artefacts directory; "
            "LATEST then names it."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Data: a tab/comma-separated file with columns title,tags (tags as ['a', 'b'], "
            "a|b or <a><b>) or the long CSV post_id,tag_name,tag_id,tag_position,title.\n\n"
            "Config keys (YAML; each also settable as an environment variable that wins over "
            "the file):\n" + describe_keys() + "\n\n"
            "Exit codes: 0 published and promoted (LATEST names it), or made the candidate "
            "beside LATEST (rollout shadow or canary); 3 published but not "
            "promoted (it scored below LATEST on the same validation rows, or LATEST could not "
            "be read when it was published; the reason is printed); 2 bad config or data, or "
            "an artefacts directory that cannot take a new version (one line on stderr, before "
            "any training); 1 other failure.\n\n"
            "Data-parallel: torchrun --nproc_per_node N -m trainer [these options] trains with N "
            "processes (batch_size stays the batch of one step over all of them); rank 0 "
            "publishes, and torchrun's own exit code is 0 only if every process exits 0."
        ),
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=settings.config,
        help=f"YAML run config (default $TRAINER_CONFIG or {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=settings.dataset,
        help="training file (default $TRAINER_DATASET, else data/raw/train.tsv if it is there, "
        "else the embedded sample data/sample/train.tsv)",
    )
    parser.add_argument(
        "--valid",
        type=Path,
        default=settings.valid,
        help="validation file; without it, valid_fraction of --dataset is held out",
    )
    parser.add_argument(
        "--artefacts-dir",
        type=Path,
        default=settings.artefacts_dir,
        help=f"where versions go (default ${STORE_ENV} or {DEFAULT_ARTEFACTS_DIR})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="move LATEST to the new version even if it scores below the current one",
    )
    parser.add_argument(
        "--with-feedback",
        action="store_true",
        help="also train on the labelled rows of the inference log newer than the served "
        "model's data (deduplicated by title, the newest report winning); the newest of them "
        "validate, and the promotion gate compares both models on them. Needs at least "
        f"{MIN_FEEDBACK_ROWS}; the base data (--dataset) is then not split",
    )
    parser.add_argument(
        "--database-url",
        default=settings.database_url,
        help="the inference log read by --with-feedback (default $TRAINER_DATABASE_URL or "
        f"{settings.database_url}; the password from $TRAINER_DATABASE_PASSWORD_FILE)",
    )
    parser.add_argument(
        "--log-level", default=settings.log_level, help="default $TRAINER_LOG_LEVEL or INFO"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    config = load_config(args.config)
    if args.force:
        config = config.model_copy(update={"force_promote": True})
    dataset = args.dataset or default_dataset()
    feedback = None
    if args.with_feedback:
        feedback = FeedbackSource(args.database_url, load_settings().database_password_file)
    from trainer.train import train  # heavy imports only after the arguments are good

    result = train(
        config,
        dataset,
        args.valid,
        args.artefacts_dir,
        config_path=args.config,
        feedback=feedback,
        progress_every=load_settings().progress_interval_s,
    )
    if result is None:  # a torchrun process other than rank 0: rank 0 published
        return 0
    print(f"published {result.version} -> {result.path}")
    if result.candidate:
        print(
            f"{result.version} is the {result.candidate} candidate beside LATEST, which did not "
            f"move ({result.reason})"
        )
        return 0
    if not result.promoted:
        print(f"not promoted: LATEST unchanged ({result.reason})")
        return EXIT_NOT_PROMOTED
    return 0


if __name__ == "__main__":
    run_main(main)
