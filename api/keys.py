"""The API keys file and ``python -m api.keys add|list|remove`` (``tagger keys``).

The file holds no key, only each key's name and hash, one a line: ``NAME:SHA256HEX``, where
SHA256HEX is the hex sha256 of the whole key string; ``#`` comments and blank lines are
allowed. A plain, unsalted sha256 is right here: keys are 256 random bits (``tgr_`` +
``secrets.token_urlsafe(32)``), not passwords a person chose, so there is nothing to guess and
nothing a slow hash would protect. The shell makes an entry the same way::

    key="tgr_$(openssl rand -hex 32)"
    printf '%s:%s\\n' NAME "$(printf %s "$key" | sha256sum | cut -d' ' -f1)"

:meth:`KeyRing.match` compares the presented key's hash with every stored hash in constant
time (``hmac.compare_digest``, no early exit), so the answer's timing says nothing about
which key, or which part of one, was close.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.store import write_atomic

KEY_PREFIX = "tgr_"
MAX_KEYS = 1000
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_ENTRY = re.compile(r"(?P<name>[^:\s]+):(?P<hash>[0-9a-fA-F]{64})")
DEFAULT_FILE = Path("secrets/api-keys")


class KeysFileError(ValueError):
    """The keys file cannot be read or is malformed (one line, with the file and line)."""


def hash_key(key: str) -> str:
    """The hex sha256 of ``key`` (what the file stores)."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A new random key: ``tgr_`` and 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class KeyRing:
    """The keys' names and hashes, as read from the file."""

    entries: tuple[tuple[str, bytes], ...]  # (name, sha256 digest)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.entries]

    def match(self, presented: str) -> str | None:
        """The name of the key ``presented`` is, or None; the same work for every entry."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: str | None = None
        for name, stored in self.entries:
            if hmac.compare_digest(digest, stored) and found is None:
                found = name
        return found


def parse_keys(text: str, source: str = "keys file") -> KeyRing:
    """The :class:`KeyRing` in ``text``; KeysFileError names ``source`` and the line."""
    entries: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        entry = _ENTRY.fullmatch(line)
        if entry is None:
            raise KeysFileError(f"{where}: expected NAME:SHA256HEX (64 hex digits)")
        name = entry["name"]
        if not NAME.fullmatch(name):
            raise KeysFileError(f"{where}: name {name!r} is not [a-z0-9][a-z0-9_.-]{{0,62}}")
        if name in seen:
            raise KeysFileError(f"{where}: name {name!r} is already used above")
        seen.add(name)
        entries.append((name, bytes.fromhex(entry["hash"])))
        if len(entries) > MAX_KEYS:
            raise KeysFileError(f"{where}: more than {MAX_KEYS} keys")
    return KeyRing(tuple(entries))


def load_keys(path: Path) -> KeyRing:
    """The keys in the file at ``path``; KeysFileError (one line) if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise KeysFileError(f"cannot read the keys file {path}: {reason}") from None
    return parse_keys(text, str(path))


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    parse_keys(text, str(path))  # refuse to rewrite a broken file
    return text.splitlines()


def _write_atomically(path: Path, lines: Sequence[str]) -> None:
    """Replace ``path`` with ``lines`` atomically, mode 0600 (the store's own atomic write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(f"{line}\n" for line in lines), mode=0o600)


def add_key(path: Path, name: str) -> str:
    """Make a key named ``name``, store its hash in ``path`` (others kept); return the key."""
    if not NAME.fullmatch(name):
        raise KeysFileError(f"name {name!r} is not [a-z0-9][a-z0-9_.-]{{0,62}}")
    lines = _read_lines(path)
    if name in parse_keys("\n".join(lines), str(path)).names:
        raise KeysFileError(f"{path} already has a key named {name!r}: remove it first")
    key = new_key()
    _write_atomically(path, [*lines, f"{name}:{hash_key(key)}"])
    return key


def remove_key(path: Path, name: str) -> None:
    """Remove the key named ``name`` from ``path`` (comments and other keys kept)."""
    lines = _read_lines(path)
    kept = [line for line in lines if line.strip().split(":", 1)[0] != name]
    if len(kept) == len(lines):
        raise KeysFileError(f"{path} has no key named {name!r}")
    _write_atomically(path, kept)


def names(path: Path) -> list[str]:
    """The names of the keys in ``path``."""
    return load_keys(path).names


def main(argv: list[str] | None = None) -> int:
    from api.settings import ApiSettings
    from shared.settings import SettingsError, load

    parser = argparse.ArgumentParser(
        prog="python -m api.keys",
        description="Manage the API keys file (names and sha256 hashes of keys, never keys).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="make a key: prints it once, stores only its hash")
    add.add_argument("name")
    listing = commands.add_parser("list", help="the keys' names")
    remove = commands.add_parser("remove", help="remove a key by name")
    remove.add_argument("name")
    for sub in (add, listing, remove):
        sub.add_argument(
            "--file", type=Path, help=f"the keys file (default $API_KEYS_FILE or {DEFAULT_FILE})"
        )
    args = parser.parse_args(argv)
    try:
        path: Path = args.file or load(ApiSettings).keys_file or DEFAULT_FILE
        if args.command == "add":
            key = add_key(path, args.name)
            print(key)
            print(f"(shown once; its hash is in {path} as {args.name!r})", file=sys.stderr)
        elif args.command == "list":
            for name in names(path):
                print(name)
        else:
            remove_key(path, args.name)
            print(f"removed {args.name!r} from {path}", file=sys.stderr)
    except SettingsError as exc:
        print(f"error: {exc.lines[0]}", file=sys.stderr)
        return 2
    except (KeysFileError, OSError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
