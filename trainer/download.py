"""``python -m trainer.download``: fetch the public Stack Overflow tag data set (``make data``).

This is the one code path that reaches the internet, and only when a user runs it. Files
already present are kept; each download is written to a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from trainer.config import DEFAULT_BASE_URL, ConfigError, load_settings

FILES = ("train.tsv", "validation.tsv")


class DownloadError(RuntimeError):
    pass


def download(dest: Path, base_url: str = DEFAULT_BASE_URL, timeout: float = 15.0) -> list[Path]:
    """Download the missing files of :data:`FILES` into ``dest``; return the paths written."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES:
        target = dest / name
        if target.is_file() and target.stat().st_size > 0:
            print(f"{target} already there, skipping")
            continue
        url = f"{base_url.rstrip('/')}/{name}"
        tmp = target.with_name(f".{name}.part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:
                shutil.copyfileobj(response, out)
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"could not download {url} ({reason}); with no network, put {', '.join(FILES)} "
                f"(title<TAB>tags files) into {dest}/ by hand"
            ) from exc
        print(f"downloaded {url} -> {target}")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m trainer.download", description=__doc__)
    parser.add_argument("--dest", type=Path, default=Path("data/raw"))
    parser.add_argument("--base-url", default=settings.data_base_url, help="default $DATA_BASE_URL")
    parser.add_argument("--timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    try:
        download(args.dest, args.base_url, args.timeout)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
