"""The real Trivy binary, offline, against images in the real registry."""

from __future__ import annotations

import functools
import json
import shutil
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import DemoImages
from vulnattest.demo.registry import LocalRegistry
from vulnattest.errors import ScanError, is_transient
from vulnattest.images import ImageRef
from vulnattest.registry import check_pullable, resolve
from vulnattest.scanners.trivy import TrivyScanner, TrivyServer
from vulnattest.scanners.trivy_report import parse_findings


def _scanner(cache: Path, **options: object) -> TrivyScanner:
    """A standalone scanner (no server to start); the server modes have tests of their own."""
    return TrivyScanner(cache_dir=cache, offline=True, **{"server": "standalone", **options})  # type: ignore[arg-type]


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
    expected = r"trivy failed scanning .*session/absent@sha256:0+ .*MANIFEST_UNKNOWN.*; the registry says: .*not found"
    probe = functools.partial(check_pullable, registry.client())
    with pytest.raises(ScanError, match=expected) as raised:
        _scanner(trivy_cache, probe=probe).scan(missing)
    assert not is_transient(raised.value)  # the registry says the image is not there: no retry brings it back


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


def test_a_local_server_holds_the_db_for_every_scan_and_stops_with_the_scanner(
    registry: LocalRegistry, demo_images: DemoImages, trivy_cache: Path, tmp_path: Path
):
    cache = tmp_path / "cache"
    shutil.copytree(trivy_cache / "db", cache / "db")
    image = resolve(registry.client(), ImageRef.parse(demo_images.alpine))
    with TrivyScanner(cache_dir=cache, offline=True) as scanner:
        url = scanner.server_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        assert "--server" in scanner.command(image)
        report = scanner.scan(image)
        assert {f.vulnerability_id for f in report.findings} >= {"CVE-2099-0001"}
        metadata = json.loads((cache / "db" / "metadata.json").read_text())
        served = datetime.fromisoformat(report.scanner.db_updated_at or "")  # read from the server's /version
        assert served == datetime.fromisoformat(metadata["UpdatedAt"])
        assert (cache / "fanal" / "fanal.db").exists()  # layers cached for the next run
        # a second run on this host while the first holds the layer cache: its server caches in memory
        with TrivyScanner(cache_dir=cache, offline=True) as second:
            assert second._local is not None and second._local.cache_in_memory
            assert second.scan(image).findings == report.findings
        # the server crashed: the next scan starts it again
        assert scanner._local is not None and scanner._local.process is not None
        scanner._local.process.kill()
        scanner._local.process.wait()
        assert scanner.scan(image).findings == report.findings
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_a_shared_server_is_used_with_its_token(
    registry: LocalRegistry, demo_images: DemoImages, trivy_cache: Path, tmp_path: Path
):
    image = resolve(registry.client(), ImageRef.parse(demo_images.debian))
    with TrivyServer(cache_dir=trivy_cache, offline=True) as shared:
        with TrivyScanner(cache_dir=tmp_path, offline=True, server=shared.url, token=shared.token) as scanner:
            assert scanner._local is None
            assert {f.vulnerability_id for f in scanner.scan(image).findings} >= {"CVE-2099-0101"}
        with TrivyScanner(cache_dir=tmp_path, offline=True, server=shared.url, token="wrong") as intruder, \
                pytest.raises(ScanError, match="trivy failed scanning"):
            intruder.scan(image)
    with pytest.raises(ScanError, match=r"does not answer /version .*scanner\.trivy\.server"):
        TrivyScanner(offline=True, server=shared.url).open()


def test_what_is_scanned_depends_on_the_config_alone_not_the_workers_directory_or_environment(
    registry: LocalRegistry, demo_images: DemoImages, trivy_cache: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    image = resolve(registry.client(), ImageRef.parse(demo_images.alpine))
    expected = {f.vulnerability_id for f in _scanner(trivy_cache).scan(image).findings}
    hostile = tmp_path / "worker"
    hostile.mkdir()
    (hostile / ".trivyignore").write_text("\n".join(sorted(expected)) + "\n")
    (hostile / "trivy.yaml").write_text(f"output: {tmp_path / 'planted.json'}\nseverity: [CRITICAL]\n"
                                        "skip-files: [lib/apk/db/installed]\n")
    monkeypatch.chdir(hostile)
    monkeypatch.setenv("TRIVY_SEVERITY", "CRITICAL")
    monkeypatch.setenv("TRIVY_IGNOREFILE", str(hostile / ".trivyignore"))
    monkeypatch.setenv("TRIVY_SKIP_FILES", "lib/apk/db/installed")
    for scanner in (_scanner(trivy_cache), TrivyScanner(cache_dir=trivy_cache, offline=True)):
        with scanner:
            assert {f.vulnerability_id for f in scanner.scan(image).findings} == expected
    assert not (tmp_path / "planted.json").exists()
