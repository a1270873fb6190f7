"""MkDocs hook: the README's links are checked by the strict build too.

README.md is not part of the site, but it links into it (``docs/page.md#anchor``) and to files
of the repository. After the build, each such link must name a page and one of its anchors
as built, an existing file, or a heading of the README itself; otherwise a warning, which
``mkdocs build --strict`` turns into a failure.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.readme_links")
ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
anchors: dict[str, set[str]] = {}


def on_pre_build(**_: Any) -> None:
    """Forget the previous build's pages (``mkdocs serve`` rebuilds in one process)."""
    anchors.clear()


def on_post_page(output: str, page: Page, **_: Any) -> str:
    """Remember every id of a built page: what ``page.md#id`` may point at."""
    anchors[page.file.src_uri] = set(re.findall(r'\bid="([^"]+)"', output))
    return output


def on_post_build(config: MkDocsConfig, **_: Any) -> None:
    """Warn about each README link whose page, anchor or file does not exist."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docs_dir = Path(config.docs_dir).resolve().relative_to(ROOT).as_posix() + "/"
    own = {github_slug(h) for h in re.findall(r"^#+\s+(.+)$", FENCE.sub("", readme), re.M)}
    for target in LINK.findall(FENCE.sub("", readme)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: outside the repository
        path, _, anchor = target.partition("#")
        if not path:
            problem = None if anchor in own else "no such heading in README.md"
        elif path.startswith(docs_dir) and path.endswith(".md"):
            page = anchors.get(path[len(docs_dir) :])
            if page is None:
                problem = "no such page in the site"
            else:
                problem = None if not anchor or anchor in page else "no such anchor on that page"
        else:
            problem = None if (ROOT / path).exists() else "no such file"
        if problem:
            log.warning("README.md links to '%s': %s", target, problem)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
