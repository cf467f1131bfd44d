"""What every scanner produces: the exact report bytes, their sha256, true scan times and the findings."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, Protocol

import orjson

from vulnattest.registry import ResolvedImage

Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]
SEVERITIES: tuple[Severity, ...] = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")


@dataclass(frozen=True, slots=True)
class Finding:
    """One vulnerability in one installed package."""

    vulnerability_id: str
    severity: str
    package: str
    installed_version: str
    fixed_version: str | None = None
    purl: str | None = None
    """The package's purl, when the scanner gives one (VEX statements may name packages by it)."""

    @property
    def fixed(self) -> bool:
        """True when a fixed version exists."""
        return bool(self.fixed_version)


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    """Count findings per severity, worst first, every severity present."""
    counts = Counter(f.severity for f in findings)
    return {severity: counts.get(severity, 0) for severity in SEVERITIES}


@dataclass(frozen=True)
class ScannerInfo:
    """The scanner and database that produced a report, as the cosign vuln predicate names them."""

    uri: str
    version: str
    db_uri: str
    db_version: str
    db_updated_at: str | None = None

    def predicate_scanner(self, result: Any) -> dict[str, Any]:
        """The predicate's ``scanner`` object around `result`."""
        db: dict[str, Any] = {"uri": self.db_uri, "version": self.db_version}
        if self.db_updated_at:
            db["updatedAt"] = self.db_updated_at
        return {"uri": self.uri, "version": self.version, "db": db, "result": result}


@dataclass(frozen=True)
class ScanReport:
    """A finished scan of one image: the report exactly as the scanner wrote it, and what was read from it."""

    image: ResolvedImage
    body: bytes
    started: datetime
    finished: datetime
    scanner: ScannerInfo
    findings: tuple[Finding, ...]
    compact: bytes | None = field(default=None, repr=False, compare=False)
    """The same JSON without its indentation, as the statement carries it (a third smaller than Trivy's); the
    decoded report itself is not kept: in Python it is ten times the size of its text."""

    def result_json(self) -> bytes:
        """The report as compact JSON (the predicate's ``scanner.result``)."""
        return self.compact if self.compact is not None else orjson.dumps(orjson.loads(self.body))

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of the exact report bytes: the value the stored copy is verified against."""
        return hashlib.sha256(self.body).hexdigest()

    def __str__(self) -> str:
        return str(self.image)

    @property
    def counts(self) -> dict[str, int]:
        """Findings per severity."""
        return severity_counts(self.findings)


class Scanner(Protocol):
    """Scans one resolved image."""

    def scan(self, image: ResolvedImage) -> ScanReport:
        """Scan the platform manifest of `image` and return the report; raise ScanError on failure."""
        ...
