"""``python -m trainer.versions`` (``tagger versions``): list published versions, roll LATEST,
prune old ones, and roll a new version out beside LATEST's: shadow, canary, promote or abort
the candidate, compare it with the served version on live traffic, and decide by a policy."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from shared.settings import DEFAULT_ARTEFACTS_DIR, STORE_ENV
from shared.store import (
    CANARY,
    DEFAULT_SAMPLE,
    MEND_LATEST,
    SHADOW,
    ArtefactError,
    ArtefactStore,
    Candidate,
)
from trainer.cli import run_main, setup_logging
from trainer.config import load_settings
from trainer.metrics import HEADLINE_METRICS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    settings = load_settings()
    parser = argparse.ArgumentParser(
        prog="python -m trainer.versions",
        description="Manage the published model versions (rolling back is 'use OLD_VERSION'); "
        "roll a new one out beside LATEST's: shadow, canary, compare, promote or abort.",
    )
    parser.add_argument(
        "--artefacts-dir",
        type=Path,
        default=settings.artefacts_dir,
        help=f"the artefact store (default ${STORE_ENV} or {DEFAULT_ARTEFACTS_DIR})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "list",
        help="versions, oldest first, with their promotion status; * marks the one LATEST "
        "names, ~ the candidate",
    )
    use = commands.add_parser("use", help="point LATEST at a version (after verifying it)")
    use.add_argument("version")
    prune = commands.add_parser(
        "prune", help="delete old versions (never the LATEST one nor the candidate)"
    )
    prune.add_argument("--keep", type=int, required=True, help="how many newest versions stay")
    shadow = commands.add_parser(
        "shadow", help="make a version the candidate: it scores a sample of answered requests"
    )
    shadow.add_argument("version")
    canary = commands.add_parser(
        "canary", help="make a version the candidate answering a share of the requests"
    )
    canary.add_argument("version")
    canary.add_argument(
        "--fraction", type=float, required=True, help="share of requests it answers (0..1)"
    )
    for mode in (shadow, canary):
        mode.add_argument(
            "--sample",
            type=float,
            default=DEFAULT_SAMPLE,
            help=f"share of answered requests the other version also scores (default "
            f"{DEFAULT_SAMPLE})",
        )
        mode.add_argument(
            "--replace", action="store_true", help="abort another candidate to make room"
        )
    promote = commands.add_parser("promote", help="move LATEST to the candidate, clearing it")
    promote.add_argument("version", help="the candidate's version (a check against surprises)")
    abort = commands.add_parser("abort", help="take the candidate off; LATEST stays")
    abort.add_argument("--reason", default="aborted by hand (versions abort)")
    commands.add_parser("status", help="what LATEST and CANDIDATE name")
    compare = commands.add_parser(
        "compare", help="the candidate against the served version on live traffic"
    )
    compare.add_argument(
        "--window-s", type=float, default=3600, help="the last this many seconds (3600)"
    )
    decide = commands.add_parser(
        "decide", help="promote, abort or wait, by a policy on the live figures"
    )
    decide.add_argument("--min-requests", type=int, default=500, help="paired texts first (500)")
    decide.add_argument(
        "--min-agreement", type=float, default=0.8, help="top-1 agreement, else abort (0.8)"
    )
    decide.add_argument(
        "--min-feedback", type=int, default=30, help="paired rows with feedback first (30)"
    )
    decide.add_argument(
        "--max-quality-drop",
        type=float,
        default=0.01,
        help="live micro-F1 below the served one's by more than this: abort (0.01)",
    )
    for command in (compare, decide):
        command.add_argument(
            "--database-url",
            default=settings.database_url,
            help="the inference log (default $TRAINER_DATABASE_URL or "
            f"{settings.database_url}; the password from $TRAINER_DATABASE_PASSWORD_FILE)",
        )
    args = parser.parse_args(argv)
    if getattr(args, "window_s", 1) <= 0:
        parser.error("--window-s must be above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("WARNING")
    store = ArtefactStore(args.artefacts_dir)
    if args.command == "list":
        return list_versions(store)
    if args.command == "status":
        return status(store)
    if args.command in ("compare", "decide"):
        return live_decision(store, args)
    if args.command == "use":
        store.set_latest(args.version, reason="set by hand (versions use)")
        print(f"LATEST -> {args.version}")
    elif args.command == "prune":
        if args.keep < 1:
            raise ArtefactError("--keep must be at least 1")
        removed = store.prune(args.keep)
        print(f"removed {len(removed)} version(s)" + "".join(f"\n  {n}" for n in removed))
    elif args.command in (SHADOW, CANARY):
        fraction = args.fraction if args.command == CANARY else 0.0
        candidate = store.set_candidate(
            args.version,
            args.command,
            sample=args.sample,
            fraction=fraction,
            reason=f"set by hand (versions {args.command})",
            replace=args.replace,
        )
        print(f"CANDIDATE -> {describe(candidate)}")
    elif args.command == "promote":
        previous = store.promote_candidate(args.version, "promoted by hand (versions promote)")
        print(f"LATEST -> {args.version} (was {previous}); no candidate")
    elif args.command == "abort":
        aborted = store.abort_candidate(args.reason)
        print(f"aborted {aborted or 'an unreadable CANDIDATE'}; LATEST unchanged")
    return 0


def describe(candidate: Candidate) -> str:
    """One line: version, mode, shares, since and beside what."""
    share = f", fraction {candidate.fraction:g}" if candidate.mode == CANARY else ""
    return (
        f"{candidate.version} ({candidate.mode}, sample {candidate.sample:g}{share}, since "
        f"{candidate.since}, beside {candidate.stable})"
    )


def status(store: ArtefactStore) -> int:
    """What LATEST and CANDIDATE name; each one's problem instead, when it is unreadable."""
    for name, read in (("LATEST", store.latest), ("CANDIDATE", store.candidate)):
        try:
            value = read()
        except ArtefactError as exc:
            print(f"{name:<9} broken: {exc}")
            continue
        if value is None:
            print(f"{name:<9} none")
        elif isinstance(value, Candidate):
            stale = " (stale: LATEST names it)" if value.version == _latest_or_none(store) else ""
            print(f"{name:<9} {describe(value)}{stale}")
            print(f"{'':<9} reason: {value.reason}")
        else:
            print(f"{name:<9} {value} ({store.promotion(value).status})")
    return 0


def _latest_or_none(store: ArtefactStore) -> str | None:
    try:
        return store.latest()
    except ArtefactError:
        return None


def live_decision(store: ArtefactStore, args: argparse.Namespace) -> int:
    """``compare`` and ``decide``: the figures come from the inference log
    (:mod:`trainer.rollout`)."""
    from shared.inference_log import connect

    rollout = importlib.import_module("trainer.rollout")  # its SQL and figures only when asked
    engine = connect(args.database_url, load_settings().database_password_file)
    try:
        if args.command == "compare":
            print(rollout.compare(store, engine, args.window_s))
        else:
            policy = rollout.Policy(
                min_requests=args.min_requests,
                min_agreement=args.min_agreement,
                min_feedback=args.min_feedback,
                max_quality_drop=args.max_quality_drop,
            )
            print(rollout.decide(store, engine, policy))
    finally:
        engine.dispose()
    return 0


def list_versions(store: ArtefactStore) -> int:
    """The table of versions; works (and says what is wrong) when ``LATEST`` or ``CANDIDATE``
    is broken."""
    try:
        latest, problem = store.latest(), None
    except ArtefactError as exc:
        latest, problem = None, str(exc)
    try:
        current = store.candidate()
        candidate = current.version if current is not None and current.version != latest else None
    except ArtefactError as exc:
        candidate = None
        print(f"CANDIDATE is broken: {exc}")
    versions = store.versions()
    if not versions:
        print(f"no versions in {store.root}")
    else:
        header = " ".join(f"{name:>11}" for name in HEADLINE_METRICS)
        print(f"  {'version':<28} {'created':<26} {'promoted':<9} {header}")
        for info in versions:
            mark = "*" if info.name == latest else "~" if info.name == candidate else " "
            status = store.promotion(info.name).status
            figures = " ".join(
                f"{info.metrics.get(name, float('nan')):>11.4f}" for name in HEADLINE_METRICS
            )
            print(f"{mark} {info.name:<28} {info.created:<26} {status:<9} {figures}")
    if latest is not None and latest not in {v.name for v in versions}:
        problem = (
            f"LATEST names {latest}, which is not a published version (missing, or its "
            f"manifest cannot be read); {MEND_LATEST}"
        )
    if problem is not None:
        promoted = [v.name for v in versions if store.promotion(v.name).promoted]
        hint = f" (the newest promoted version is {promoted[-1]})" if promoted else ""
        print(f"LATEST is broken: {problem}{hint}")
    return 0


if __name__ == "__main__":
    run_main(main)
