"""The configuration reference in README.md, generated from the config models so the two cannot drift.

``python -m vulnattest.config_reference README.md`` rewrites the block between the markers.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from vulnattest.config import FleetConfig, format_duration

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _container(annotation: Any) -> str:
    """``[]`` for a list of models, ``.<host>`` for a mapping of them, else nothing."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return next((c for c in map(_container, get_args(annotation)) if c), "")
    return "[]" if origin in (tuple, list) else ".<host>" if origin is dict else ""


def _default(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, timedelta):
        return f"`{format_duration(value)}`"
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, Enum):
        value = value.value
    if value in ((), {}, None):
        return "-" if value is None else "`[]`" if value == () else "`{}`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def rows(model: type[BaseModel] = FleetConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) for every setting, depth first, in declaration order."""
    found: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _models_in(field.annotation)
        doc = field.description or (nested[0].__doc__ or "").strip().splitlines()[0] if nested else field.description
        found.append((key, _default(field.default), doc or ""))
        for sub in nested:
            found.extend(rows(sub, f"{key}{_container(field.annotation)}."))
    return found


def markdown() -> str:
    """The reference table as markdown, between its markers."""
    lines = [BEGIN, "| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {default} | {doc.replace('|', '/')} |" for key, default, doc in rows()]
    return "\n".join([*lines, END])


def rewrite(readme: Path) -> None:
    """Replace the reference block in `readme` with the current one."""
    text = readme.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    readme.write_text(text[:start] + markdown() + text[end:])


if __name__ == "__main__":
    rewrite(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
