"""Promotion records: what is known about each version's promotion, kept in
``.promotions/<version>.json`` beside the versions (not in them: the decision can change, the
version cannot). This module owns the record's format; :mod:`shared.store.promotions` owns
the decisions that write it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.store.durability import write_atomic
from shared.store.names import PROMOTIONS_DIR, promotion_record_path

log = logging.getLogger(__name__)

PROMOTED = "promoted"  # LATEST was moved to it (by the gate, --force or `versions use`)
REJECTED = "rejected"  # published, LATEST deliberately not moved to it; the reason says why
PENDING = "pending"  # published, no decision recorded (its trainer is gating it, or died)
UNKNOWN = "unknown"  # published by a version of this code that recorded nothing
SHADOW = "shadow"  # the candidate, scored beside LATEST's version off the response path
CANARY = "canary"  # the candidate, answering a share of the requests
ABORTED = "aborted"  # was the candidate, taken off without moving LATEST; the reason says why

HISTORY_LIMIT = 20  # earlier decisions kept in a record, the newest last

# The gate's verdict a trainer wrote into the version itself, before the store kept records.
_LEGACY_VERDICT_FILE = "metrics.json"


@dataclass(frozen=True)
class Promotion:
    """The recorded promotion decision about one version."""

    status: str  # PROMOTED, REJECTED, PENDING, UNKNOWN, SHADOW, CANARY or ABORTED
    reason: str
    previous: str | None = None  # what LATEST named when the decision was taken
    at: str = ""
    # The earlier decisions, oldest first: {status, reason, previous, at} each.
    history: tuple[dict[str, Any], ...] = ()

    @property
    def promoted(self) -> bool:
        """Whether ``LATEST`` was moved to it."""
        return self.status == PROMOTED


def read_record(root: Path, version: str) -> Promotion:
    """What is recorded about ``version`` (a checked name) in the store at ``root``.

    The store's record decides; a version published before the store kept records falls back
    on the gate's verdict its trainer wrote into ``metrics.json``; with neither, UNKNOWN.
    """
    record_path = promotion_record_path(root, version)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        return Promotion(
            status=str(record["status"]),
            reason=str(record.get("reason", "")),
            previous=record.get("previous"),
            at=str(record.get("at", "")),
            history=tuple(_history(record)),
        )
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable promotion record %s: %s", record_path, exc)
    try:
        verdict = json.loads((root / version / _LEGACY_VERDICT_FILE).read_text())
        gate = verdict["promotion"]
        status = PROMOTED if gate["promoted"] is True else REJECTED
        return Promotion(status, f"gate at publish time: {gate.get('reason', '')}")
    except (OSError, ValueError, KeyError, TypeError):
        return Promotion(UNKNOWN, "no promotion recorded")


def write_record(root: Path, version: str, status: str, reason: str, previous: str | None) -> None:
    """Record a decision about ``version`` atomically (the caller holds the store lock); the
    decision it replaces goes to the end of the record's ``history`` (the last
    :data:`HISTORY_LIMIT` kept)."""
    folder = root / PROMOTIONS_DIR
    folder.mkdir(mode=0o755, exist_ok=True)
    path = promotion_record_path(root, version)
    history: list[dict[str, Any]] = []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        history = [*_history(old), {k: old.get(k) for k in _HISTORY_KEYS}]
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("promotion record %s unreadable, its history is lost: %s", path, exc)
    record = {
        "version": version,
        "status": status,
        "reason": reason,
        "previous": previous,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "history": history[-HISTORY_LIMIT:],
    }
    write_atomic(path, json.dumps(record, indent=2) + "\n")


_HISTORY_KEYS = ("status", "reason", "previous", "at")


def _history(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The well-formed entries of a record's ``history`` (absent in records written before)."""
    entries = record.get("history") or []
    if not isinstance(entries, list):
        return []
    return [{k: e.get(k) for k in _HISTORY_KEYS} for e in entries if isinstance(e, dict)]


def remove_record(root: Path, version: str) -> None:
    """Forget ``version``'s record (its version is being deleted)."""
    promotion_record_path(root, version).unlink(missing_ok=True)
