"""Write a Trivy vulnerability DB (schema 2) that holds chosen advisories, so scans need no download.

Trivy reads `<cache dir>/db/trivy.db`, a bbolt file laid out as aquasecurity/trivy-db writes it:

- `"<os> <release>"` (e.g. `alpine 3.19`, `debian 12`) -> source package name -> vulnerability ID ->
  `{"FixedVersion": ...}`; an advisory without a fixed version is an unfixed one.
- `"data-source"` -> `"<os> <release>"` -> `{"ID", "Name", "URL"}`, the feed Trivy credits in its report.
- `"vulnerability"` -> vulnerability ID -> `{"Title", "Severity", "VendorSeverity", ...}`.

Trivy picks the OS bucket by release: Alpine by `major.minor`, Debian by major version only, and both look
advisories up by *source* package (apk `o:`, dpkg `Source:`), comparing the source version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vulnattest.demo.bbolt import BucketContents, write_bbolt

SCHEMA_VERSION = 2
SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
# Far enough ahead that Trivy never calls the DB outdated, even with --skip-db-update left out.
NEXT_UPDATE = datetime(2999, 12, 31, tzinfo=UTC)
DEMO_DESCRIPTION = "Fictional advisory made up by vulnattest for offline demos; it describes no real flaw."

# Values as trivy-db's vulnsrc/alpine and vulnsrc/debian store them.
_DATA_SOURCES = {
    "alpine": {"ID": "alpine", "Name": "Alpine Secdb", "URL": "https://secdb.alpinelinux.org/"},
    "debian": {
        "ID": "debian",
        "Name": "Debian Security Tracker",
        "URL": "https://salsa.debian.org/security-tracker-team/security-tracker",
    },
}
_STATUS_AFFECTED = 2  # trivy-db types.StatusAffected, stored as an integer


@dataclass(frozen=True)
class Advisory:
    """One advisory: a vulnerability of a source package in one OS release."""

    os: str  # the Trivy bucket, e.g. "alpine 3.19" or "debian 12"
    package: str  # source package name
    vuln_id: str
    severity: str  # LOW/MEDIUM/HIGH/CRITICAL/UNKNOWN
    fixed_version: str | None
    title: str


def write_trivy_db(cache_dir: Path, advisories: Iterable[Advisory], *, now: datetime | None = None) -> Path:
    """Write `<cache_dir>/db/trivy.db` and `metadata.json` holding `advisories`; return the DB file's path."""
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        raise ValueError("write_trivy_db needs a timezone-aware `now`, e.g. datetime.now(UTC)")
    os_buckets: dict[str, dict[str, dict[bytes, bytes]]] = {}
    vulnerabilities: dict[str, bytes] = {}
    for advisory in advisories:
        _check(advisory)
        ids = os_buckets.setdefault(advisory.os, {}).setdefault(advisory.package, {})
        ids[advisory.vuln_id.encode()] = _json(_advisory_value(advisory))
        detail = _json(_vulnerability_value(advisory))
        if vulnerabilities.setdefault(advisory.vuln_id, detail) != detail:
            raise ValueError(f"{advisory.vuln_id} appears with two different titles or severities")

    buckets: dict[bytes, BucketContents] = {
        os_name.encode(): {name.encode(): by_id for name, by_id in packages.items()}
        for os_name, packages in os_buckets.items()
    }
    buckets[b"data-source"] = {
        os_name.encode(): _json(_DATA_SOURCES[os_name.split()[0]])
        for os_name in os_buckets
        if os_name.split()[0] in _DATA_SOURCES
    }
    # Trivy dereferences this bucket without a nil check: it must exist even when empty.
    buckets[b"vulnerability"] = {vuln_id.encode(): detail for vuln_id, detail in vulnerabilities.items()}

    db_dir = cache_dir / "db"
    db_dir.mkdir(parents=True, exist_ok=True)
    db_path = db_dir / "trivy.db"
    write_bbolt(db_path, buckets)
    metadata = {
        "Version": SCHEMA_VERSION,
        "NextUpdate": _timestamp(NEXT_UPDATE),
        "UpdatedAt": _timestamp(now),
        "DownloadedAt": _timestamp(now),
    }
    (db_dir / "metadata.json").write_text(json.dumps(metadata) + "\n")
    return db_path


def _check(advisory: Advisory) -> None:
    family, _, release = advisory.os.partition(" ")
    if not family or not release or " " in release:
        raise ValueError(f"advisory {advisory.vuln_id}: os must look like 'alpine 3.19', got {advisory.os!r}")
    if family == "debian" and "." in release:
        raise ValueError(
            f"advisory {advisory.vuln_id}: Trivy reads Debian advisories by major release, "
            f"use 'debian {release.split('.')[0]}' instead of {advisory.os!r}"
        )
    if family == "alpine" and release.count(".") != 1:
        raise ValueError(
            f"advisory {advisory.vuln_id}: Trivy reads Alpine advisories by major.minor release, "
            f"e.g. 'alpine 3.19', not {advisory.os!r}"
        )
    if advisory.severity not in SEVERITIES:
        raise ValueError(f"advisory {advisory.vuln_id}: severity {advisory.severity!r} is none of {SEVERITIES}")


def _advisory_value(advisory: Advisory) -> dict[str, object]:
    if advisory.fixed_version:
        return {"FixedVersion": advisory.fixed_version}
    return {"Status": _STATUS_AFFECTED}


def _vulnerability_value(advisory: Advisory) -> dict[str, object]:
    value: dict[str, object] = {"Title": advisory.title, "Description": DEMO_DESCRIPTION}
    if advisory.severity != "UNKNOWN":
        value["Severity"] = advisory.severity
        value["VendorSeverity"] = {"nvd": SEVERITIES.index(advisory.severity)}
    return value


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _demo(os: str, package: str, vuln_id: str, severity: str, fixed: str | None, what: str) -> Advisory:
    return Advisory(os, package, vuln_id, severity, fixed, f"vulnattest demo advisory: {what} in {package}")


_ALPINE = "alpine 3.19"
_DEBIAN = "debian 12"

DEMO_ADVISORIES: tuple[Advisory, ...] = (
    _demo(_ALPINE, "busybox", "CVE-2099-0001", "CRITICAL", "1.36.1-r16", "heap overflow in an applet"),
    _demo(_ALPINE, "openssl", "CVE-2099-0002", "HIGH", "3.1.4-r6", "timing side channel"),
    _demo(_ALPINE, "zlib", "CVE-2099-0003", "MEDIUM", None, "out-of-bounds read in inflate"),
    _demo(_ALPINE, "busybox", "CVE-2099-0004", "LOW", "1.36.1-r10", "log injection in syslogd"),
    _demo(_ALPINE, "zlib", "CVE-2099-0005", "UNKNOWN", "1.3.1-r1", "unclassified defect"),
    _demo(_DEBIAN, "openssl", "CVE-2099-0101", "CRITICAL", "3.0.13-1~deb12u1", "remote code execution"),
    _demo(_DEBIAN, "zlib", "CVE-2099-0102", "HIGH", "1:1.2.13.dfsg-1+deb12u1", "memory corruption"),
    _demo(_DEBIAN, "bash", "CVE-2099-0103", "LOW", None, "prompt expansion quirk"),
    _demo(_DEBIAN, "openssl", "CVE-2099-0104", "MEDIUM", "3.0.9-1", "certificate check bypass"),
    _demo(_DEBIAN, "bash", "CVE-2099-0105", "MEDIUM", "5.2.15-3", "here-document race"),
)
"""Fictional advisories for Alpine 3.19 and Debian 12: fixed and unfixed, every severity. CVE-2099-0004 and
CVE-2099-0104 are fixed in versions older than the demo images carry, so they must not be reported."""
