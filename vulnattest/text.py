"""Small text forms shared by reports, alerts and predicates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with whole seconds and a ``Z``, the form Kyverno's ``time_since`` parses."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def short_digest(digest: str | None) -> str:
    """``sha256:`` and the first 12 hex digits (``-`` for none), for tables."""
    if not digest:
        return "-"
    algorithm, _, hex_digest = digest.rpartition(":")
    return f"{algorithm + ':' if algorithm else ''}{hex_digest[:12]}"


def md_cell(text: str) -> str:
    """Text made safe for one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def first_and_more(items: Sequence[object], none: str = "no image") -> str:
    """``a``, ``a and 3 more``, or `none`: a batch named in a task run's name."""
    if not items:
        return none
    return f"{items[0]} and {len(items) - 1} more" if len(items) > 1 else str(items[0])
