"""The real Trivy binary, offline, against images in the real registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DemoImages
from vulnattest.demo.registry import LocalRegistry
from vulnattest.errors import ScanError, is_transient
from vulnattest.images import ImageRef
from vulnattest.registry import resolve
from vulnattest.scanners.trivy import TrivyScanner, parse_findings


def _scanner(cache: Path, **options: object) -> TrivyScanner:
    return TrivyScanner(cache_dir=cache, offline=True, **options)  # type: ignore[arg-type]


def test_scans_alpine_and_debian_with_real_findings_and_true_times(
    registry: LocalRegistry, demo_images: DemoImages, trivy_cache: Path
):
    client = registry.client()
    scanner = _scanner(trivy_cache)
    alpine = scanner.scan(resolve(client, ImageRef.parse(demo_images.alpine)))
    debian = scanner.scan(resolve(client, ImageRef.parse(demo_images.debian)))
    assert {(f.vulnerability_id, f.package) for f in alpine.findings} >= {
        ("CVE-2099-0001", "busybox"), ("CVE-2099-0002", "libcrypto3"), ("CVE-2099-0003", "zlib"),
    }
    assert {f.vulnerability_id for f in debian.findings} >= {"CVE-2099-0101", "CVE-2099-0102", "CVE-2099-0103"}
    assert alpine.counts["CRITICAL"] == 1
    assert debian.counts["CRITICAL"] == 2
    assert alpine.started <= alpine.finished
    assert alpine.started.tzinfo is not None
    assert json.loads(alpine.body)["ArtifactName"].endswith(alpine.image.scan_digest)
    assert alpine.scanner.version == "0.76.0"
    assert alpine.scanner.uri == "pkg:github/aquasecurity/trivy@0.76.0"
    assert alpine.scanner.db_version == "2"
    assert alpine.scanner.db_updated_at


def test_ignore_unfixed_and_severities_are_passed_to_trivy(
    registry: LocalRegistry, demo_images: DemoImages, trivy_cache: Path
):
    image = resolve(registry.client(), ImageRef.parse(demo_images.alpine))
    report = _scanner(trivy_cache, ignore_unfixed=True, severities=("CRITICAL", "HIGH")).scan(image)
    assert {f.vulnerability_id for f in report.findings} == {"CVE-2099-0001", "CVE-2099-0002"}
    assert all(f.fixed for f in report.findings)


def test_scans_the_configured_platform_of_an_index(
    registry: LocalRegistry, demo_images: DemoImages, trivy_cache: Path
):
    ref = ImageRef.parse(demo_images.multi)
    arm = _scanner(trivy_cache).scan(resolve(registry.client(), ref, "linux/arm64"))
    assert {f.vulnerability_id for f in arm.findings} >= {"CVE-2099-0101"}  # the arm64 entry is the Debian one


def test_a_scanner_failure_carries_trivys_own_message(registry: LocalRegistry, trivy_cache: Path, tmp_path: Path):
    from vulnattest.registry import ResolvedImage

    missing = ResolvedImage(ImageRef.parse(f"{registry.host}/session/absent@sha256:{'0' * 64}"),
                            f"sha256:{'0' * 64}", "x", f"sha256:{'0' * 64}")
    expected = r"trivy failed scanning .*session/absent@sha256:0+: .*(MANIFEST_UNKNOWN|not found)"
    with pytest.raises(ScanError, match=expected):
        _scanner(trivy_cache).scan(missing)


def test_a_missing_binary_says_how_to_install(registry: LocalRegistry, demo_images: DemoImages, trivy_cache: Path):
    image = resolve(registry.client(), ImageRef.parse(demo_images.alpine))
    with pytest.raises(ScanError, match=r"trivy binary 'no-such-trivy' not found; install it"):
        _scanner(trivy_cache, binary="no-such-trivy").scan(image)


def test_a_crashing_scanner_fails_with_its_output_and_never_saw_a_signing_secret(
    registry: LocalRegistry, demo_images: DemoImages, trivy_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in ("VULNATTEST_KEY_PASSWORD", "COSIGN_PASSWORD", "SIGSTORE_ID_TOKEN"):
        monkeypatch.setenv(name, "s3cr3t-" + name)
    fake = tmp_path / "trivy"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = version ]; then echo '{\"Version\":\"0.0.1\"}'; exit 0; fi\n"
                    f"env > {tmp_path}/env\necho 'panic: runtime error: index out of range' >&2; exit 2\n")
    fake.chmod(0o755)
    image = resolve(registry.client(), ImageRef.parse(demo_images.alpine))
    with pytest.raises(ScanError, match="panic: runtime error: index out of range") as raised:
        _scanner(trivy_cache, binary=str(fake)).scan(image)
    assert not is_transient(raised.value)  # a crash is no outage: retrying would crash again
    seen = (tmp_path / "env").read_text()
    assert "TRIVY_NO_PROGRESS=true" in seen and "s3cr3t-" not in seen
    fake.write_text("#!/bin/sh\necho 'not json at all'\n")
    with pytest.raises(ScanError, match="not JSON"):
        _scanner(trivy_cache, binary=str(fake)).scan(image)


def test_findings_parser_rejects_what_is_not_a_trivy_report():
    with pytest.raises(ScanError, match="not a Trivy JSON report"):
        parse_findings({"Results": "nope"})
    assert parse_findings({"SchemaVersion": 2, "Results": [{"Target": "x"}]}) == ()


@pytest.mark.parametrize("variable", ["TRIVY_CACHE_DIR", "XDG_CACHE_HOME"])
def test_without_a_cache_dir_the_db_is_read_where_trivy_keeps_it(
    trivy_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
):
    monkeypatch.delenv("TRIVY_CACHE_DIR", raising=False)
    if variable == "XDG_CACHE_HOME":
        (tmp_path / "trivy").symlink_to(trivy_cache)
    monkeypatch.setenv(variable, str(trivy_cache if variable == "TRIVY_CACHE_DIR" else tmp_path))
    metadata = json.loads((trivy_cache / "db" / "metadata.json").read_text())
    info = TrivyScanner(offline=True).info()
    assert (info.db_version, info.db_updated_at) == (str(metadata["Version"]), metadata["UpdatedAt"])
