"""VEX at scan time: the real Trivy binary gets each document that holds for the image with --vex and leaves out
what it suppresses; the config's documents are read once, before any scan."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DemoImages
from vulnattest.config import FleetConfig
from vulnattest.demo.registry import LocalRegistry
from vulnattest.images import ImageRef
from vulnattest.registry import Registries, ResolvedImage, resolve
from vulnattest.scanners.trivy import TrivyScanner
from vulnattest.services import trivy_scanner
from vulnattest.vex import VexDocument, load_vex


def vex_document(product: str, vulnerability: str = "CVE-2099-0001") -> dict[str, Any]:
    return {
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/alpine", "author": "Team",
        "timestamp": "2030-01-01T00:00:00Z", "version": 1,
        "statements": [{"vulnerability": {"name": vulnerability}, "products": [{"@id": product}],
                        "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path",
                        "impact_statement": "the affected applet is never run"}],
    }


@pytest.fixture
def alpine(registry: LocalRegistry, demo_images: DemoImages) -> ResolvedImage:
    return resolve(registry.client(), ImageRef.parse(demo_images.alpine))


@pytest.fixture
def vex_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server for the files in tmp_path (plain http:// is allowed on this machine only)."""

    class Files(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = tmp_path / self.path.lstrip("/")
            body = path.read_bytes() if path.is_file() else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _scan(cache: Path, image: ResolvedImage, vex: tuple[VexDocument, ...], server: str) -> dict[str, Any]:
    with TrivyScanner(cache_dir=cache, offline=True, server=server, vex_for=lambda _: vex) as scanner:
        return dict(json.loads(scanner.scan(image).body))


def _ids(report: dict[str, Any], key: str = "Vulnerabilities") -> set[str]:
    found = set()
    for result in report.get("Results") or []:
        for item in result.get(key) or []:
            found.add(item["VulnerabilityID"] if key == "Vulnerabilities" else item["Finding"]["VulnerabilityID"])
    return found


@pytest.mark.parametrize("server", ["local", "standalone"])
def test_trivy_leaves_out_what_a_vex_file_suppresses_and_records_why(
    alpine: ResolvedImage, trivy_cache: Path, tmp_path: Path, server: str
):
    without = _scan(trivy_cache, alpine, (), server)
    assert "CVE-2099-0001" in _ids(without)
    vex = tmp_path / "alpine.vex.json"
    vex.write_text(json.dumps(vex_document(f"pkg:oci/alpine@{alpine.digest}")))
    report = _scan(trivy_cache, alpine, (load_vex(vex),), server)
    assert "CVE-2099-0001" not in _ids(report)
    assert _ids(report) == _ids(without) - {"CVE-2099-0001"}
    # the report that gets signed says what VEX suppressed, and why
    [modified] = [m for r in report["Results"] for m in r.get("ExperimentalModifiedFindings") or []]
    assert (modified["Status"], modified["Statement"], modified["Finding"]["VulnerabilityID"]) == (
        "not_affected", "vulnerable_code_not_in_execute_path", "CVE-2099-0001")
    command = TrivyScanner(cache_dir=trivy_cache, server="standalone").command(alpine, [tmp_path / "a.json"])
    assert command[-4:] == ["--vex", str(tmp_path / "a.json"), "--show-suppressed", alpine.scan_ref]


def test_a_statement_for_another_image_changes_nothing(alpine: ResolvedImage, trivy_cache: Path, tmp_path: Path):
    vex = tmp_path / "other.vex.json"
    vex.write_text(json.dumps(vex_document(f"pkg:oci/alpine@sha256:{'0' * 64}")))
    assert "CVE-2099-0001" in _ids(_scan(trivy_cache, alpine, (load_vex(vex),), "standalone"))


def _configured(cache: Path, **policy: Any) -> TrivyScanner:
    config = FleetConfig.model_validate({"scanner": {"trivy": {"cache_dir": str(cache), "offline": True,
                                                               "server": "standalone"}}, "policy": policy})
    return trivy_scanner(config, Registries())


def test_the_configured_documents_and_urls_reach_trivy_but_not_for_denied_ids(
    alpine: ResolvedImage, trivy_cache: Path, tmp_path: Path, vex_server: str
):
    (tmp_path / "alpine.vex.json").write_text(json.dumps(vex_document("pkg:oci/alpine", "CVE-2099-0003")))
    (tmp_path / "busybox.vex.json").write_text(json.dumps(vex_document("pkg:oci/alpine")))
    with _configured(trivy_cache, vex=[f"{vex_server}/alpine.vex.json", str(tmp_path / "busybox.vex.json")],
                     deny=["CVE-2099-0001"]) as scanner:
        report = json.loads(scanner.scan(alpine).body)
    assert "CVE-2099-0003" not in _ids(report)  # fetched from the URL
    assert "CVE-2099-0001" in _ids(report)  # the deny list beats VEX: Trivy never got that statement


def test_a_vex_document_that_cannot_be_read_is_named_and_the_scans_go_on_without_it(
    alpine: ResolvedImage, trivy_cache: Path, tmp_path: Path, vex_server: str, caplog: pytest.LogCaptureFixture
):
    bad = tmp_path / "bad.vex.json"
    document = vex_document("pkg:oci/alpine")
    del document["statements"][0]["justification"], document["statements"][0]["impact_statement"]
    bad.write_text(json.dumps(document))
    (tmp_path / "alpine.vex.json").write_text(json.dumps(vex_document("pkg:oci/alpine", "CVE-2099-0003")))
    with _configured(trivy_cache, vex=[f"{vex_server}/missing.json", str(bad),
                                       str(tmp_path / "alpine.vex.json")]) as scanner:
        report = json.loads(scanner.scan(alpine).body)
    assert "CVE-2099-0003" not in _ids(report)  # the readable document still applies
    assert "CVE-2099-0001" in _ids(report)  # the bad one does not: the report is the stricter for it
    assert "/missing.json answered 404" in caplog.text
    assert re.search(r"(?s)bad\.vex\.json: .*statements\[0\]: a not_affected statement needs a justification or an "
                     r"impact_statement", caplog.text)
