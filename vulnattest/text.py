"""Small text forms shared by reports, alerts and predicates."""

from __future__ import annotations

import re
from collections.abc import Mapping
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


def counts_by_initial(counts: Mapping[str, int] | None) -> str:
    """Findings per severity by initial, e.g. ``C1 H2 M0 L3 U0``; ``-`` when there are none to show."""
    return " ".join(f"{severity[0]}{n}" for severity, n in counts.items()) if counts else "-"


def md_cell(text: str) -> str:
    """Text made safe for one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def go_regexp(pattern: str) -> re.Pattern[str]:
    """Compile a Go (RE2) regular expression, as cosign and Kyverno match identities with, into Python's: Go's
    end of text ``\\z`` is Python's ``\\Z``. (Go's ``$`` never matches before a final newline, Python's does: see
    `go_search`.)"""
    return re.compile(pattern.replace(r"\z", r"\Z"))


def go_search(pattern: str, value: str) -> bool:
    """Whether `pattern` matches anywhere in `value` as Go's ``MatchString`` would."""
    # no identity holds a newline; refusing one is the safe side of where Go and Python differ (a `$` before it)
    return "\n" not in value and go_regexp(pattern).search(value) is not None
