"""``make fuzz``: schemathesis against a real API's own /openapi.json, every check.

Trains the unit tests' tiny model (tests/conftest.py) into a temporary artefacts folder,
serves it with ``python -m api`` on a free 127.0.0.1 port, runs ``schemathesis run`` with
``--checks all`` and at least ``--max-examples`` generated cases per operation, stops the API
and exits with schemathesis's status (non-zero on any failure). Settings for schemathesis are
in tests/fuzz/schemathesis.toml, each with its reason.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import REPO, free_port
from tests.serving import publish_tiny_model, wait_ready

CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("--max-examples", type=int, default=1000, help="cases per operation")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default random)")
    parser.add_argument("extra", nargs="*", help="more schemathesis run options (after --)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tagger-fuzz-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        print("fuzz: training the tiny test model ...", flush=True)
        publish_tiny_model(work)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (work / "api.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "api"],
            cwd=REPO,
            env={
                **os.environ,
                "TAGGER_ARTEFACTS_DIR": str(work / "artefacts"),
                "API_DATABASE_URL": f"sqlite:///{work / 'inference.db'}",
                "API_PORT": str(port),
                "API_LOG_LEVEL": "warning",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_ready(url, proc)
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(args.max_examples),
            # One worker: with two threads, hypothesis describing its strategies called
            # CPython 3.11's ast.parse from both at once, which is not thread-safe ("SystemError:
            # AST constructor recursion depth mismatch", seen once in CI): a tool error, not an
            # API failure, but it failed the run.
            "--workers",
            "1",
        ]
        if args.seed is not None:
            command += ["--seed", str(args.seed)]
        command += args.extra
        print("fuzz:", " ".join(command), flush=True)
        # Run from the scratch folder: schemathesis leaves its cache (.schemathesis/) there.
        status = subprocess.run(command, cwd=work).returncode
        exited = proc.poll()
        if exited is None:
            proc.terminate()
            proc.wait(timeout=30)
        else:
            print(f"fuzz: the API exited by itself during the run, with {exited}", file=sys.stderr)
            status = status or 1
        text = (work / "api.log").read_text(errors="replace")
        if "Traceback" in text or "unhandled error" in text or status:
            print("fuzz: the end of the API's log:\n" + text[-4000:], file=sys.stderr)
            status = status or int("Traceback" in text or "unhandled error" in text)
        print(f"fuzz: schemathesis exited with {status}", flush=True)
        return status
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
