"""Poll POST /predict until a stop file appears; print one JSON summary line (stdlib only).

Used by tests/e2e/run.sh to prove a hot reload fails no request.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def main() -> int:
    url, stop_file, max_seconds = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    body = json.dumps({"text": "How to merge two dictionaries in Python?"}).encode()
    ok, failed, versions, errors = 0, 0, [], []
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        # The request begun after the stop file appeared is the last: the e2e makes the file
        # once the new version is served, so that answer must name it, however slow each
        # request is on a loaded machine (a fixed wait after the swap is not enough there).
        last = stop_file.exists()
        request = urllib.request.Request(
            f"{url}/predict", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                version = json.load(response)["model_version"]
            ok += 1
            if not versions or versions[-1] != version:
                versions.append(version)
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            failed += 1
            errors.append(repr(exc)[:200])
        if last:
            break
    print(json.dumps({"ok": ok, "failed": failed, "versions": versions, "errors": errors[:5]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
