"""The OCI client against Debian's docker-registry."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import DemoImages
from vulnattest.demo.registry import LocalRegistry, free_port
from vulnattest.errors import NotFoundError, RegistryError, TransientRegistryError, is_transient
from vulnattest.images import ImageRef
from vulnattest.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient, resolve, sha256_digest


def test_resolves_a_tag_to_its_manifest_digest(registry: LocalRegistry, demo_images: DemoImages):
    client = registry.client()
    ref = ImageRef.parse(demo_images.alpine)
    resolved = resolve(client, ref)
    manifest = client.get_manifest(ref.repository, ref.tag or "")
    assert resolved.digest == manifest.digest == sha256_digest(manifest.body)
    assert resolved.media_type == OCI_MANIFEST
    assert resolved.scan_digest == resolved.digest
    assert resolved.image.pinned == f"{ref.name}@{resolved.digest}"
    # the digest alone, as discovery asks for it: a HEAD request the registry answers with Docker-Content-Digest
    assert client.manifest_digest(ref.repository, ref.tag or "") == manifest.digest


def test_an_index_is_attested_by_its_digest_and_scanned_for_the_chosen_platform(
    registry: LocalRegistry, demo_images: DemoImages
):
    client = registry.client()
    ref = ImageRef.parse(demo_images.multi)
    amd64 = resolve(client, ref, "linux/amd64")
    arm64 = resolve(client, ref, "linux/arm64")
    assert amd64.media_type == OCI_INDEX
    assert amd64.digest == arm64.digest
    assert amd64.scan_digest != arm64.scan_digest
    index = client.get_manifest(ref.repository, amd64.digest).document()
    by_arch = {m.platform.architecture: m.digest for m in index.manifests or [] if m and m.platform}
    assert (amd64.scan_digest, arm64.scan_digest) == (by_arch["amd64"], by_arch["arm64"])
    with pytest.raises(RegistryError, match=r"has no linux/s390x manifest \(it has: linux/amd64, linux/arm64\)"):
        resolve(client, ref, "linux/s390x")


def test_a_missing_tag_is_not_found_and_named(registry: LocalRegistry):
    with pytest.raises(NotFoundError, match=r"session/nothing:here: not found .*check the name and tag"):
        resolve(registry.client(), ImageRef.parse(f"{registry.host}/session/nothing:here"))


def test_blobs_round_trip_and_are_checked(registry: LocalRegistry):
    client = registry.client()
    digest = client.push_blob("session/blobs", b"some bytes")
    assert client.has_blob("session/blobs", digest)
    assert client.get_blob("session/blobs", digest) == b"some bytes"
    sent: list[str] = []
    client._http.event_hooks["request"].append(lambda request: sent.append(request.method))
    assert client.push_blob("session/blobs", b"some bytes") == digest
    assert sent == ["HEAD"]  # already there: no second upload
    # a registry that serves other bytes than the digest names (its storage altered, same length) is caught
    hex_digest = digest.removeprefix("sha256:")
    blob = registry.root / "data/docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    blob.write_bytes(b"some bytez")
    with pytest.raises(RegistryError, match=f"session/blobs: blob {digest} does not match its digest"):
        client.get_blob("session/blobs", digest)


def test_an_unreachable_registry_is_a_transient_error_with_a_hint():
    client = RegistryClient(f"127.0.0.1:{free_port()}", insecure=True, timeout=2)
    with pytest.raises(TransientRegistryError, match=r"cannot reach http://127\.0\.0\.1:\d+ .*insecure"):
        client.get_manifest("x/y", "latest")


def test_a_host_that_redirects_forever_is_no_registry_and_no_retry_helps():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from vulnattest.freshness import probe_registry

    class Loop(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", self.path)
            self.end_headers()

        def log_message(self, *args: object) -> None: ...

    with ThreadingHTTPServer(("127.0.0.1", 0), Loop) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        client = RegistryClient(f"127.0.0.1:{server.server_address[1]}", insecure=True)
        try:
            for call in (lambda: client.get_manifest("a/b", "1"), lambda: probe_registry(client)):
                with pytest.raises(RegistryError, match=r"answered in a way no registry does \(TooManyRedirects") as e:
                    call()
                assert not is_transient(e.value)
        finally:
            client.close()
            server.shutdown()


def test_a_loopback_registry_is_tried_over_https_then_spoken_to_over_plain_http(
    registry: LocalRegistry, demo_images: DemoImages
):
    client = RegistryClient(registry.host)  # not configured insecure
    assert client.base_url.startswith("https://")
    assert resolve(client, ImageRef.parse(demo_images.alpine)).digest.startswith("sha256:")
    assert client.base_url == f"http://{registry.host}"  # TLS failed once; the client stays on HTTP


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost:5000", True), ("127.0.0.1:5000", True), ("127.4.5.6", True), ("[::1]:5000", True),
    ("localhost.example.com", False), ("10.0.0.1:5000", False), ("registry.example.com", False),
    ("127.0.0.1.example.com", False),
])
def test_only_loopback_hosts_may_fall_back_to_plain_http(host: str, loopback: bool):
    from vulnattest.registry import is_loopback

    assert is_loopback(host) is loopback
