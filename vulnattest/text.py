"""Small text forms shared by reports, alerts and predicates."""

from __future__ import annotations

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
