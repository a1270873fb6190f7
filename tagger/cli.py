"""``tagger train | evaluate | versions | baseline | feedback | report | serve | predict | keys``.

Each subcommand is the module command of the same job with the rest of the line handed over
unchanged (``tagger train --help`` is ``python -m trainer --help``), so the two forms cannot
drift. Modules are imported only for the subcommand asked for: an installation with the API's
packages only (as the API image has; the images themselves have no ``tagger`` command, only
the module forms) still runs ``tagger serve`` and ``tagger predict``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

# subcommand -> (module whose main(argv) runs it, the module form, one line of help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("trainer.__main__", "python -m trainer", "train a model and publish it"),
    "evaluate": (
        "trainer.evaluate",
        "python -m trainer.evaluate",
        "metrics JSON of a published version on a dataset",
    ),
    "versions": (
        "trainer.versions",
        "python -m trainer.versions",
        "list versions, roll LATEST back or forward, shadow/canary/promote a candidate, prune",
    ),
    "baseline": (
        "trainer.baseline",
        "python -m trainer.baseline",
        "the TF-IDF + logistic regression baseline's metrics",
    ),
    "feedback": (
        "trainer.feedback",
        "python -m trainer.feedback",
        "import labelled questions into the inference log",
    ),
    "report": (
        "trainer.live_report",
        "python -m trainer.live_report",
        "live quality and drift of the served versions",
    ),
    "quickstart": (
        "tagger.quickstart",
        "python -m tagger.quickstart",
        "serve a first model in minutes, train the default one behind it and swap it in",
    ),
    "serve": ("api.__main__", "python -m api", "serve the newest version over HTTP"),
    "predict": ("api.predict", "python -m api.predict", "top tags of a title, no server"),
    "keys": ("api.keys", "python -m api.keys", "add, list or remove the API's keys (hashes only)"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: tagger COMMAND [ARGS...]   (tagger COMMAND --help for its options)",
        "",
        "Train a Stack Overflow tag model and serve it.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {text}  [{form}]" for name, (_, form, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(
            f"error: 'tagger {name}' needs {exc.name}, which this installation does not have "
            "(with the API's packages only, serve, predict and keys run)",
            file=sys.stderr,
        )
        return 2
    command: Callable[[list[str]], int] = module.main
    if module_name.startswith("trainer"):
        # The trainer's commands turn user errors into one line and exit code 2.
        from trainer.cli import run_main

        run_main(lambda: command(rest))
    return command(rest)
