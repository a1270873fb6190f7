"""Readers for tagged question files.

Two layouts are understood, told apart by the header:

* wide: a ``title`` and a ``tags`` column (tab- or comma-separated); a tags cell is a Python
  list literal (``['php', 'sql']``), a ``|``-separated list (``php|sql``) or Stack Exchange
  dump style (``<php><sql>``);
* long: the original capstone's CSV, ``post_id, tag_name, tag_id, tag_position, title``, one
  row per (question, tag).

Anything else fails with a :class:`DatasetError` whose message is one readable line.
"""

from __future__ import annotations

import ast
import csv
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.text import normalize_text

log = logging.getLogger(__name__)

WIDE_COLUMNS = ("title", "tags")
LONG_COLUMNS = ("post_id", "tag_name", "tag_id", "tag_position", "title")
_ANGLE_TAGS = re.compile(r"(?:<[^<>]+>)+")
_PLAIN_TAG = re.compile(r"[^\s\[\]{}()<>'\",]+")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class DatasetError(ValueError):
    """A dataset file cannot be used; the message names the file and what is wrong."""


@dataclass
class Dataset:
    """Questions read from one file: parallel lists of titles and their tags."""

    path: Path
    titles: list[str] = field(default_factory=list)
    tags: list[list[str]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.titles)

    def subset(self, indices: list[int]) -> Dataset:
        """A new dataset holding the given rows, in the given order."""
        return Dataset(
            path=self.path,
            titles=[self.titles[i] for i in indices],
            tags=[self.tags[i] for i in indices],
        )


def parse_tags(cell: str) -> list[str] | None:
    """Parse one tags cell in any supported notation; None when it cannot be parsed."""
    text = cell.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
            return None
        raw = list(value)
    elif text.startswith("<"):
        if not _ANGLE_TAGS.fullmatch(text):
            return None
        raw = text[1:-1].split("><")
    else:
        raw = [t.strip() for t in text.split("|")]
        if not all(_PLAIN_TAG.fullmatch(t) for t in raw if t):
            return None
    return _unique(t.strip() for t in raw)


def _unique(tags: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for tag in tags:
        if tag:
            seen.setdefault(tag, None)
    return list(seen)


def read_dataset(path: str | Path, first_tag_only: bool = False) -> Dataset:
    """Read a wide or long tagged-questions file (detected by its header).

    Blank titles and unparsable or empty tag cells are skipped and counted in
    ``Dataset.skipped``. ``first_tag_only`` keeps the first tag of each question
    (``tag_position == 0`` in the long format), as the original capstone trained.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header_line = handle.readline()
            delimiter = "\t" if "\t" in header_line else ","
            handle.seek(0)
            reader = csv.reader(handle, delimiter=delimiter)
            header = [h.strip().lower() for h in next(reader, [])]
            if set(LONG_COLUMNS) & set(header) - {"title"}:
                dataset = _read_long(path, header, reader, first_tag_only)
            elif set(WIDE_COLUMNS) & set(header):
                dataset = _read_wide(path, header, reader, first_tag_only)
            else:
                raise DatasetError(
                    f"{path}: unknown format: expected columns {', '.join(WIDE_COLUMNS)} "
                    f"or {', '.join(LONG_COLUMNS)}; found {_show(header)}"
                )
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV: {exc}") from exc

    if not dataset.titles:
        raise DatasetError(
            f"{path}: no usable rows (need a non-blank title and at least one tag); "
            f"skipped: {_show_counts(dataset.skipped)}"
        )
    if dataset.skipped:
        log.warning("%s: skipped %s", path, _show_counts(dataset.skipped))
    log.info("%s: read %d questions", path, len(dataset))
    return dataset


def _column_indices(path: Path, header: list[str], required: tuple[str, ...]) -> dict[str, int]:
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(missing)}: expected {', '.join(required)}; "
            f"found {_show(header)}"
        )
    return {name: header.index(name) for name in required}


def _read_wide(
    path: Path, header: list[str], rows: Iterator[list[str]], first_tag_only: bool
) -> Dataset:
    cols = _column_indices(path, header, WIDE_COLUMNS)
    dataset = Dataset(path=path)
    width = max(cols.values()) + 1
    for row in rows:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < width:
            dataset.skipped["short row"] += 1
            continue
        title = normalize_text(row[cols["title"]])
        tags = parse_tags(row[cols["tags"]])
        if not title:
            dataset.skipped["blank title"] += 1
        elif tags is None:
            dataset.skipped["unparsable tags"] += 1
        elif not tags:
            dataset.skipped["no tags"] += 1
        else:
            dataset.titles.append(title)
            dataset.tags.append(tags[:1] if first_tag_only else tags)
    return dataset


def _read_long(
    path: Path, header: list[str], rows: Iterator[list[str]], first_tag_only: bool
) -> Dataset:
    cols = _column_indices(path, header, LONG_COLUMNS)
    width = max(cols.values()) + 1
    titles: dict[str, str] = {}
    tagged: dict[str, list[tuple[int, str]]] = {}
    skipped: Counter[str] = Counter()
    for row in rows:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < width:
            skipped["short row"] += 1
            continue
        post_id = row[cols["post_id"]].strip()
        tag = row[cols["tag_name"]].strip()
        try:
            position = int(row[cols["tag_position"]])
        except ValueError:
            skipped["unparsable tag_position"] += 1
            continue
        if not post_id:
            skipped["blank post_id"] += 1
            continue
        title = normalize_text(row[cols["title"]])
        if title and post_id not in titles:
            titles[post_id] = title
        tagged.setdefault(post_id, [])
        if tag:
            tagged[post_id].append((position, tag))
        else:
            skipped["blank tag_name"] += 1

    dataset = Dataset(path=path, skipped=skipped)
    for post_id, pairs in tagged.items():
        title = titles.get(post_id, "")
        pairs.sort()
        if first_tag_only:
            pairs = [p for p in pairs if p[0] == 0][:1]
        tags = _unique(tag for _, tag in pairs)
        if not title:
            dataset.skipped["blank title"] += 1
        elif not tags:
            dataset.skipped["no first tag" if first_tag_only else "no tags"] += 1
        else:
            dataset.titles.append(title)
            dataset.tags.append(tags)
    return dataset


def _show(header: list[str]) -> str:
    return ", ".join(header) if any(header) else "an empty header"


def _show_counts(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {why}" for why, n in counts.most_common()) or "nothing"
