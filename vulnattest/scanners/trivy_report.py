"""Trivy's JSON report format, read apart from running Trivy: the scanner adapter reads its own output with it, and
checks of attestations read the report a predicate carries (`scanner.result`) without the adapter."""

from __future__ import annotations

from typing import Any

from vulnattest.errors import ScanError
from vulnattest.scanners.interface import SEVERITIES, Finding

__all__ = ["parse_findings"]


def parse_findings(report: Any) -> tuple[Finding, ...]:
    """Read the findings of a Trivy JSON report (already decoded); raise ScanError when it is not one.

    Written out by hand rather than through a pydantic model: a real image's report holds thousands of findings,
    and this runs once per scan and once per attestation checked."""
    if not isinstance(report, dict) or not isinstance(report.get("SchemaVersion"), int):
        raise ScanError("not a Trivy JSON report: no integer SchemaVersion at the top level")
    results = report.get("Results") or []
    if not isinstance(results, list):
        raise ScanError("not a Trivy JSON report: Results is not a list")
    findings: list[Finding] = []
    for r, result in enumerate(results):
        vulnerabilities = result.get("Vulnerabilities") if isinstance(result, dict) else None
        if not isinstance(result, dict) or not isinstance(vulnerabilities, list | None):
            raise ScanError(f"not a Trivy JSON report: Results[{r}] is not a result with a Vulnerabilities list")
        for v, vuln in enumerate(vulnerabilities or []):
            if not isinstance(vuln, dict) or not isinstance(vuln.get("VulnerabilityID"), str):
                raise ScanError(f"not a Trivy JSON report: Results[{r}].Vulnerabilities[{v}] has no VulnerabilityID")
            severity = vuln.get("Severity")
            fixed = vuln.get("FixedVersion")
            findings.append(Finding(
                vulnerability_id=vuln["VulnerabilityID"],
                severity=severity if severity in SEVERITIES else "UNKNOWN",
                package=_text(vuln.get("PkgName")),
                installed_version=_text(vuln.get("InstalledVersion")),
                fixed_version=fixed if isinstance(fixed, str) and fixed else None,
                purl=_purl(vuln.get("PkgIdentifier")),
            ))
    return tuple(findings)


def _purl(identifier: Any) -> str | None:
    purl = identifier.get("PURL") if isinstance(identifier, dict) else None
    return purl if isinstance(purl, str) and purl else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
