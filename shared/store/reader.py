"""The read side, all a server needs: what ``LATEST`` and ``CANDIDATE`` name, the published
versions, each one's promotion, and what to serve when the version ``LATEST`` names cannot be
loaded.

Reading takes no lock (it works on a read-only mount) and relies on every change of the store
being an atomic rename.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.store.errors import ArtefactError
from shared.store.manifest import read_manifest
from shared.store.names import LATEST_FILE, VERSION_PATTERN, checked_version_name
from shared.store.records import PROMOTED, UNKNOWN, Promotion, read_record
from shared.store.rollout import Candidate, read_candidate

log = logging.getLogger(__name__)

# Names what exists wherever it is read: the `tagger` command in a checkout, the trainer image's
# module in containers (neither image has the `tagger` command; the API image has no trainer).
MEND_LATEST = (
    "mend it with `tagger versions use VERSION` (`tagger versions list` shows them; in "
    "containers, the trainer image's `python -m trainer.versions use VERSION`)"
)
_LATEST_MAX_BYTES = 256  # a version name is 26 characters; anything longer is not one


@dataclass(frozen=True)
class VersionInfo:
    """One published version as listed by :meth:`StoreReader.versions`."""

    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def created(self) -> str:
        """When it was published (ISO 8601, UTC), as its manifest says."""
        return str(self.manifest.get("created", ""))

    @property
    def metrics(self) -> dict[str, Any]:
        """Its headline validation metrics, as its manifest says."""
        return dict(self.manifest.get("metrics", {}))


class StoreReader:
    """Reads the store under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def version_path(self, name: str) -> Path:
        """The folder of version ``name``; ArtefactError if ``name`` is not a version name."""
        return self.root / checked_version_name(name)

    def latest(self) -> str | None:
        """The version ``LATEST`` names, or None when nothing has been promoted yet.

        Every way ``LATEST`` can be unreadable (garbage, not UTF-8, a folder, no permission,
        an I/O error) is one :class:`ArtefactError` that says how to mend it. Whether the
        named version exists is not checked here: loading it does that.
        """
        path = self.root / LATEST_FILE
        try:
            with path.open("rb") as handle:
                raw = handle.read(_LATEST_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        except IsADirectoryError as exc:
            raise ArtefactError(
                f"{path} is a folder, not a file naming a version; {MEND_LATEST}"
            ) from exc
        except OSError as exc:
            raise ArtefactError(
                f"{path} cannot be read ({exc.strerror or exc}); {MEND_LATEST}"
            ) from exc
        try:
            name = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ArtefactError(
                f"{path} is not UTF-8 text ({raw[:16]!r}...), not a version name; {MEND_LATEST}"
            ) from exc
        if len(raw) > _LATEST_MAX_BYTES or not VERSION_PATTERN.match(name):
            raise ArtefactError(f"{path} holds {name[:80]!r}, not a version name; {MEND_LATEST}")
        return name

    def candidate(self) -> Candidate | None:
        """What ``CANDIDATE`` says (the version served beside ``LATEST``'s), or None when there
        is none. Unreadable or invalid: one ArtefactError saying how to mend it. A candidate
        naming what ``LATEST`` names is returned as it is: callers treat it as none."""
        return read_candidate(self.root)

    def versions(self) -> list[VersionInfo]:
        """Published versions, oldest first; staging folders and strays are ignored."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.iterdir()):
            if not (path.is_dir() and VERSION_PATTERN.match(path.name)):
                continue
            try:
                manifest = read_manifest(path)
            except ArtefactError as exc:
                log.warning("ignoring %s: %s", path, exc)
                continue
            found.append(VersionInfo(path.name, path, manifest))
        return found

    def promotion(self, version: str) -> Promotion:
        """What is recorded about ``version``'s promotion (see
        :func:`shared.store.records.read_record`)."""
        return read_record(self.root, checked_version_name(version))

    def fallback_candidates(self, before: str | None) -> list[str]:
        """Versions a server may serve when the one ``LATEST`` names cannot be loaded, best
        first: those older than ``before`` that were promoted, newest first, then those with
        no record at all (published before records were kept). A version the gate rejected,
        or whose decision was never recorded, is never a candidate."""
        older = [v.name for v in reversed(self.versions()) if before is None or v.name < before]
        status = {name: self.promotion(name).status for name in older}
        return [n for n in older if status[n] == PROMOTED] + [
            n for n in older if status[n] == UNKNOWN
        ]
