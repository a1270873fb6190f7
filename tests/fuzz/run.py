"""``make fuzz``: schemathesis against a real API's own /openapi.json, every check, twice.

Trains the unit tests' tiny model (tests/conftest.py) into a temporary artefacts folder and
serves it with ``python -m api`` on a free 127.0.0.1 port (tests/serving.py), first with keys
off (the quickstart), running ``schemathesis run --checks all`` with at least
``--max-examples`` generated cases per operation; then with keys on (a keys file with one
key), first checking that every route but /health and /ready answers 401 without the key,
then schemathesis again with the key (``--key-examples`` cases per operation). Exits non-zero
on any failure, an API that exits, or a traceback in its log. Settings for schemathesis are in
tests/fuzz/schemathesis.toml, each with its reason.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from api.keys import add_key
from tests.serving import ApiProcess, publish_tiny_model

CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"
PROBES = {"/health", "/ready"}
# Routes the OpenAPI document does not list, and a path no route has.
UNLISTED = {"/docs": ["GET"], "/docs-assets/swagger-ui.css": ["GET"], "/metrics": ["GET"]}


def schemathesis(url: str, examples: int, args: argparse.Namespace, work: Path, *extra: str) -> int:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        # One worker: with two threads, hypothesis describing its strategies called
        # CPython 3.11's ast.parse from both at once, which is not thread-safe ("SystemError:
        # AST constructor recursion depth mismatch", seen once in CI): a tool error, not an
        # API failure, but it failed the run.
        "--workers",
        "1",
        *extra,
    ]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    command += args.extra
    shown = [
        part if not part.startswith("Authorization:") else "Authorization: ..." for part in command
    ]
    print("fuzz:", " ".join(shown), flush=True)
    # Run from the scratch folder: schemathesis leaves its cache (.schemathesis/) there.
    return subprocess.run(command, cwd=work).returncode


def status_of(url: str, method: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    if method in ("POST", "PUT", "PATCH"):
        request.data = b"{}"
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def keyless_answers(url: str, key: str) -> list[str]:
    """Every route (and an unknown path) asked without a key: what did not answer 401 (200
    for the probes)."""
    request = urllib.request.Request(f"{url}/openapi.json", headers={"X-API-Key": key})
    with urllib.request.urlopen(request, timeout=10) as response:
        paths = json.load(response)["paths"]
    routes = {path: [m.upper() for m in ops] for path, ops in paths.items()}
    routes.update(UNLISTED)
    routes["/no-such-route"] = ["GET", "POST"]
    routes["/openapi.json"] = ["GET"]
    wrong = []
    for path, methods in sorted(routes.items()):
        for method in methods:
            expected = 200 if path in PROBES else 401
            got = status_of(f"{url}{path.replace('{', '').replace('}', '')}", method)
            if got != expected:
                wrong.append(f"{method} {path}: {got}, not {expected}")
    return wrong


def served(work: Path, artefacts: Path, label: str, **env: str) -> ApiProcess:
    api = ApiProcess(work, artefacts, **env)
    print(f"fuzz: {label}: the API on {api.url}", flush=True)
    return api


def finish(api: ApiProcess, status: int) -> int:
    exited = api.proc.poll()
    if exited is not None:
        print(f"fuzz: the API exited by itself during the run, with {exited}", file=sys.stderr)
        status = status or 1
    api.stop()
    text = api.log()
    broken = "Traceback" in text or "unhandled error" in text
    if broken or status:
        print("fuzz: the end of the API's log:\n" + text[-4000:], file=sys.stderr)
    return status or int(broken)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("--max-examples", type=int, default=1000, help="cases per operation")
    parser.add_argument(
        "--key-examples", type=int, default=150, help="cases per operation with keys on"
    )
    parser.add_argument(
        "--runs", choices=("both", "open", "keys"), default="both", help="which runs (both)"
    )
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default random)")
    parser.add_argument("extra", nargs="*", help="more schemathesis run options (after --)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tagger-fuzz-"))
    try:
        print("fuzz: training the tiny test model ...", flush=True)
        artefacts = publish_tiny_model(work)
        status = 0
        if args.runs in ("both", "open"):
            with served(work, artefacts, "keys off") as api:
                status = finish(api, schemathesis(api.url, args.max_examples, args, work))
            print(f"fuzz: keys off: schemathesis exited with {status}", flush=True)
        if args.runs in ("both", "keys"):
            keys_file = work / "api-keys"
            key = add_key(keys_file, "fuzz")
            with served(work, artefacts, "keys on", API_KEYS_FILE=str(keys_file)) as api:
                wrong = keyless_answers(api.url, key)
                for line in wrong:
                    print(f"fuzz: without a key: {line}", file=sys.stderr)
                header = f"Authorization: Bearer {key}"
                keyed = schemathesis(api.url, args.key_examples, args, work, "-H", header)
                keyed = finish(api, keyed or int(bool(wrong)))
                if key in api.log():
                    print("fuzz: the key is in the API's log", file=sys.stderr)
                    keyed = keyed or 1
            print(
                f"fuzz: keys on: every route 401 without the key: {not wrong}; "
                f"schemathesis with the key exited with {keyed}",
                flush=True,
            )
            status = status or keyed
        return status
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
