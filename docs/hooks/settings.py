"""MkDocs hook: the settings reference, generated from the settings classes at build time.

A page line ``<!-- settings: MODULE -->`` becomes one table per pydantic-settings class
defined in MODULE (``<!-- settings: MODULE:Class -->``: that class only), with each field's
environment variable, key, type, default and description. The classes are imported, so the
build runs in the project's venv and the reference cannot drift from the code.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from mkdocs.exceptions import PluginError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

# The repository root, so that ``api.settings`` and ``trainer.config`` import from this tree
# whatever directory mkdocs was started in.
ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!--[ \t]*settings:[ \t]*([\w.]+)(?::(\w+))?[ \t]*-->[ \t]*$", re.MULTILINE)
BOUNDS = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace every settings marker of a page with its generated tables."""
    return MARKER.sub(lambda m: render(m.group(1), m.group(2)), markdown)


def render(module_name: str, class_name: str | None) -> str:
    """The tables of the settings classes of ``module_name`` (or of the one class named)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"settings reference: cannot import {module_name}: {exc}") from exc
    classes = [
        cls
        for name, cls in vars(module).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseSettings)
        and cls.__module__ == module_name
        and class_name in (None, name)
    ]
    if not classes:
        raise PluginError(f"settings reference: no settings class in {module_name} {class_name}")
    return "\n\n".join(table(cls) for cls in classes)


def table(cls: type[BaseSettings]) -> str:
    """One markdown table of ``cls``'s fields, under a line naming the class."""
    # Only the class's own docstring: an inherited one (BaseSettings') says nothing here.
    doc = cls.__dict__.get("__doc__") or ""
    summary = inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")
    lines = [
        f"`{cls.__module__}.{cls.__name__}`" + (f": {summary}" if summary else ""),
        "",
        "| variable | key | type | default | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in cls.model_fields.items():
        cells = (
            " or ".join(f"`{v}`" for v in env_names(cls, name, field)),
            f"`{name}`",
            type_text(field),
            default_text(field),
            (field.description or "(no description)").replace("\n", " "),
        )
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def env_names(cls: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """The environment variables pydantic-settings reads for a field."""
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        names = [alias]
    elif alias is not None and hasattr(alias, "choices"):
        names = [c for c in alias.choices if isinstance(c, str)]
    else:
        names = [str(cls.model_config.get("env_prefix", "")) + name]
    return names if cls.model_config.get("case_sensitive") else [n.upper() for n in names]


def type_text(field: FieldInfo) -> str:
    """The field's type in words, with its bounds (``int, ≥ 1, ≤ 65535``)."""
    bounds = [
        f"{sign} {getattr(meta, attr)}"
        for meta in field.metadata
        for kind, attr, sign in BOUNDS
        if isinstance(meta, kind)
    ]
    return ", ".join([annotation_text(field.annotation), *bounds])


def annotation_text(annotation: Any) -> str:
    """``str``, ``path``, ``one of `a`, `b```, ``int or null`` ... for a type annotation."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(annotation_text(a) for a in get_args(annotation))
    if annotation is type(None):
        return "null"
    if inspect.isclass(annotation) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    if inspect.isclass(annotation) and issubclass(annotation, Path):
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in the environment, or *required*."""
    if field.is_required():
        return "*required*"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        value = value.value
    return f"`{value}`" if str(value) != "" else '`""` (empty)'
