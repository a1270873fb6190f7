"""``python -m api.healthcheck``: the container healthcheck an orchestrator's rollout waits on.

Healthy when this replica can serve (``GET /ready`` answers 200), or when there is nothing to
serve yet (no version was ever published: ``LATEST`` is absent and readable as such), so that
a fresh deployment is not restarted in a loop before its first training. Unhealthy otherwise:
while a replica is still loading a published version, and when it cannot load any. A rolling
update that starts the new task first therefore stops an old one only once the new one serves,
and an image that cannot serve the store's versions never becomes healthy (and is rolled back).

Standard library only when ``--url`` is given, as the Swarm stack does: the API image has no
curl, and a check every few seconds must start fast. Without ``--url`` the port is the API's
(``ApiSettings``, ``API_PORT``), at the cost of importing pydantic.
Exit code 0 healthy, 1 unhealthy (Docker's convention); one line on stdout says why.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any


def _get(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                return exc.code, json.load(exc)
            except ValueError:
                return exc.code, {}


def check(base_url: str, timeout: float = 4.0) -> tuple[bool, str]:
    """(healthy, why) for the API at ``base_url``."""
    try:
        status, body = _get(f"{base_url}/ready", timeout)
        if status == 200:
            return True, f"ready: serving {body.get('model_version')}"
        status, model = _get(f"{base_url}/model", timeout)
    except (OSError, ValueError) as exc:
        return False, f"not answering: {exc}"
    if status == 200 and model.get("latest") is None and model.get("latest_error") is None:
        return True, "no version published yet: nothing to serve"
    failed = model.get("failed_versions") or []
    detail = f"; failed: {failed[-1]}" if failed else ""
    return False, f"not ready: LATEST names {model.get('latest')}, none loaded yet{detail}"


def _local_url() -> str | None:
    """The API of this container, at the port its settings give; None (said why) if invalid."""
    from api.settings import ApiSettings  # pydantic: imported only when needed
    from shared.settings import SettingsError, load

    try:
        return f"http://127.0.0.1:{load(ApiSettings).port}"
    except SettingsError as exc:
        print(f"settings invalid: {exc}")
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.healthcheck", description=__doc__)
    parser.add_argument(
        "--url", help="the API's base URL (default http://127.0.0.1:$API_PORT, API_PORT 8000)"
    )
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds per request")
    args = parser.parse_args(argv)
    url = args.url or _local_url()
    if url is None:
        return 1
    healthy, why = check(url.rstrip("/"), args.timeout)
    print(why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
