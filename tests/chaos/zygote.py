"""A fork server for ``make chaos``: imports the trainer once, then forks one process per job.

Importing torch and transformers takes seconds per process on a small machine; the chaos
suite starts about 60 trainer processes. Each job here is a real trainer process: forked
after the imports, it runs ``python -m trainer`` (or ``trainer.versions``) exactly as the
command line would, from argument parsing to exit code, writing its own log file, and it is
the process the suite SIGKILLs. Only the interpreter start and the imports are shared.

Protocol (one JSON object per line): stdin ``{"id", "module", "argv", "log", "inject"}``;
stdout ``{"id", "pid"}`` when a job starts and ``{"id", "exit"}`` when it ends (a negative
exit is the signal that killed it). The server is single-threaded, so forking is safe; it
stops when stdin closes, after its children end.
"""

from __future__ import annotations

import errno
import json
import os
import select
import sys
from pathlib import Path
from typing import Any

import trainer.__main__
import trainer.publish
import trainer.train  # the heavy imports, once, before any fork
import trainer.versions

MODULES = {"trainer": trainer.__main__, "trainer.versions": trainer.versions}


def inject_enospc() -> None:
    """Disk full, injected (where no small tmpfs can be mounted): the first JSON file written
    into a staging folder fails as a full disk would, after the weights were written."""

    def full(path: Any, data: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device (injected)", str(path))

    trainer.publish._write_json = full


def inject_truncated_scratch() -> None:
    """A full disk as onnx's writer meets it (where no small tmpfs can be mounted): the
    quantizer's shape-inferred scratch copy of the graph comes out truncated, without an error."""
    import onnx.shape_inference

    real = onnx.shape_inference.infer_shapes_path

    def truncating(source: Any, target: Any = "", *args: Any, **kwargs: Any) -> None:
        real(source, target, *args, **kwargs)
        written = Path(target or source)
        written.write_bytes(written.read_bytes()[: written.stat().st_size // 2])

    onnx.shape_inference.infer_shapes_path = truncating


def child(job: dict[str, Any]) -> None:
    """Runs in the forked process: never returns."""
    code = 1
    try:
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        sys.stdin = open(os.devnull)
        if job.get("inject") == "enospc":
            inject_enospc()
        elif job.get("inject") == "truncate-scratch":
            inject_truncated_scratch()
        if job["module"] == "build-tiny-bert":
            from tests.conftest import build_tiny_bert

            build_tiny_bert(Path(job["argv"][0]))
            code = 0
            return
        module = MODULES[job["module"]]
        try:
            from trainer.cli import run_main

            run_main(lambda: module.main(job["argv"]))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # report, never fall back into the server loop
        print(f"zygote child failed: {exc!r}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve() -> None:
    children: dict[int, int] = {}  # pid -> job id
    buffer = b""
    stdin_open = True
    while stdin_open or children:
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            send({"id": children.pop(pid), "exit": os.waitstatus_to_exitcode(status)})
        if not stdin_open:
            select.select([], [], [], 0.01)
            continue
        ready, _, _ = select.select([sys.stdin.buffer], [], [], 0.01)
        if not ready:
            continue
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            stdin_open = False
            continue
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            job = json.loads(line)
            pid = os.fork()
            if pid == 0:
                child(job)
            children[pid] = job["id"]
            send({"id": job["id"], "pid": pid})


if __name__ == "__main__":
    serve()
