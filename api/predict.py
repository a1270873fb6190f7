"""``python -m api.predict "title"``: top tags of a text with the newest model, no server.

With no text argument it reads one title per line from stdin until EOF (the original
capstone's ``make predict-test``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from api.settings import ApiSettings
from shared.predictor import BACKENDS, load_predictor
from shared.settings import DEFAULT_ARTEFACTS_DIR, STORE_ENV, SettingsError, load
from shared.store import ArtefactError, ArtefactStore


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load(ApiSettings)  # the flags' defaults
    except SettingsError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
    for line in ApiSettings.deprecations():
        print(f"warning: {line}", file=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m api.predict", description=__doc__)
    parser.add_argument("text", nargs="*", help="a question title (none: read lines from stdin)")
    parser.add_argument(
        "--artefacts-dir",
        type=Path,
        default=settings.artefacts_dir,
        help=f"the artefact store (default ${STORE_ENV} or {DEFAULT_ARTEFACTS_DIR})",
    )
    parser.add_argument("--version", help="a version to use instead of the one LATEST names")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=settings.backend,
        help="model runtime, as API_BACKEND (default $API_BACKEND or auto)",
    )
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object per text")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")

    store = ArtefactStore(args.artefacts_dir)
    try:
        version = args.version or store.latest()
        if version is None:
            raise ArtefactError(f"no model published in {store.root}: train one first (make train)")
        predictor = load_predictor(store.version_path(version), backend=args.backend)
    except (ArtefactError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def show(text: str) -> None:
        if not text.strip():
            print("error: empty text", file=sys.stderr)
            return
        (pred,) = predictor.predict([text], top_k=args.top_k)
        if args.json:
            out = {
                "model_version": version,
                "text": text,
                "predicted": pred.predicted,
                "tags": [{"tag": t.tag, "score": t.score} for t in pred.tags],
            }
            print(json.dumps(out), flush=True)
        else:
            top = ", ".join(f"{t.tag} {t.score:.3f}" for t in pred.tags)
            print(f"{', '.join(pred.predicted)}\t(top: {top})", flush=True)

    if args.text:
        show(" ".join(args.text))
    else:
        if sys.stdin.isatty():
            print(f"model {version}: type a title per line, Ctrl-D to end", file=sys.stderr)
        for line in sys.stdin:
            show(line.rstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
