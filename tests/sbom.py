"""Holds an image's CycloneDX SBOM to the image: every Python distribution installed in the
image must be a component of the SBOM with the same version. `make sbom` runs it on both
images after writing their SBOMs; standard library only (it runs before any venv exists).

    python -m tests.sbom tagger-api:latest build/sbom/api.cdx.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# Run inside the image by its own interpreter: the api image has no pip.
LIST_INSTALLED = (
    "import importlib.metadata as m, json; "
    "print(json.dumps(sorted({(d.metadata['Name'], d.version) for d in m.distributions()})))"
)


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def components(sbom: dict[str, Any]) -> dict[str, set[str]]:
    """Every component of the SBOM, nested ones included: normalised name -> versions."""
    found: dict[str, set[str]] = {}
    pending = list(sbom.get("components", []))
    while pending:
        component = pending.pop()
        found.setdefault(normalise(component["name"]), set()).add(component.get("version", ""))
        pending.extend(component.get("components", []))
    return found


def missing(installed: Iterable[tuple[str, str]], sbom: dict[str, Any]) -> list[str]:
    """`name==version` of each installed distribution the SBOM lacks or lists at another version."""
    listed = components(sbom)
    return sorted(
        f"{name}=={version}"
        for name, version in installed
        if version not in listed.get(normalise(name), set())
    )


def installed_in(image: str) -> list[tuple[str, str]]:
    """(name, version) of every distribution the image's python sees."""
    run = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", image, "-c", LIST_INSTALLED],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"sbom: cannot list the packages of {image}: {last}")
    return [(name, version) for name, version in json.loads(run.stdout)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", help="the image, e.g. tagger-api:latest")
    parser.add_argument("sbom", type=Path, help="its CycloneDX JSON, e.g. build/sbom/api.cdx.json")
    args = parser.parse_args(argv)
    sbom = json.loads(args.sbom.read_text(encoding="utf-8"))
    installed = installed_in(args.image)
    count = sum(len(versions) for versions in components(sbom).values())
    absent = missing(installed, sbom)
    if absent:
        print(
            f"sbom: {args.sbom} lacks {len(absent)} of the {len(installed)} packages installed "
            f"in {args.image}: {', '.join(absent)}",
            file=sys.stderr,
        )
        return 1
    print(
        f"{args.sbom}: {count} components; all {len(installed)} packages installed in "
        f"{args.image} are listed with their versions"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
