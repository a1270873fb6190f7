"""``python -m trainer.versions``: list published versions, roll LATEST, prune old ones."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.settings import DEFAULT_ARTEFACTS_DIR, STORE_ENV
from shared.store import MEND_LATEST, ArtefactError, ArtefactStore
from trainer.cli import run_main, setup_logging
from trainer.config import load_settings
from trainer.metrics import HEADLINE_METRICS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.versions",
        description="Manage the published model versions (rolling back is 'use OLD_VERSION').",
    )
    parser.add_argument(
        "--artefacts-dir",
        type=Path,
        default=load_settings().artefacts_dir,
        help=f"the artefact store (default ${STORE_ENV} or {DEFAULT_ARTEFACTS_DIR})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "list",
        help="versions, oldest first, with their promotion status; * marks the one LATEST names",
    )
    use = commands.add_parser("use", help="point LATEST at a version (after verifying it)")
    use.add_argument("version")
    prune = commands.add_parser("prune", help="delete old versions (never the LATEST one)")
    prune.add_argument("--keep", type=int, required=True, help="how many newest versions stay")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("WARNING")
    store = ArtefactStore(args.artefacts_dir)
    if args.command == "list":
        return list_versions(store)
    if args.command == "use":
        store.set_latest(args.version, reason="set by hand (versions use)")
        print(f"LATEST -> {args.version}")
    elif args.command == "prune":
        if args.keep < 1:
            raise ArtefactError("--keep must be at least 1")
        removed = store.prune(args.keep)
        print(f"removed {len(removed)} version(s)" + "".join(f"\n  {n}" for n in removed))
    return 0


def list_versions(store: ArtefactStore) -> int:
    """The table of versions; works (and says what is wrong) when ``LATEST`` is broken."""
    try:
        latest, problem = store.latest(), None
    except ArtefactError as exc:
        latest, problem = None, str(exc)
    versions = store.versions()
    if not versions:
        print(f"no versions in {store.root}")
    else:
        header = " ".join(f"{name:>11}" for name in HEADLINE_METRICS)
        print(f"  {'version':<28} {'created':<26} {'promoted':<9} {header}")
        for info in versions:
            mark = "*" if info.name == latest else " "
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
