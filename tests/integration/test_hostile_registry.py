"""A registry that sends too much, lies about sizes, compresses a bomb or trickles: each is refused with a message
that names it, within bounds of memory and time, and the other images of a check go on. The hostile answers come
from a proxy in front of the real registry (tests/faultproxy.py), so everything else is the real thing."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.faultproxy import Fault, FaultProxy
from tests.integration.test_freshness import MAX_AGE, WARN, Attester, push
from vulnattest.attestations.cosign import attestation_tag
from vulnattest.demo.registry import LocalRegistry
from vulnattest.errors import RegistryError, TransientRegistryError
from vulnattest.freshness import FreshnessChecker, FreshnessRules, OnCallCommands, Verdict, check_fleet
from vulnattest.images import ImageRef
from vulnattest.registry import (
    MAX_BLOB_BYTES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    Registries,
    RegistryClient,
    resolve,
)
from vulnattest.retrying import RetryPolicy
from vulnattest.signing.interface import PublicKeyVerifier
from vulnattest.signing.keyfile import KeyFileSigner

MIB = 1024 * 1024
ONCE = RetryPolicy(attempts=1)


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.host) as running:
        yield running


def client(proxy: FaultProxy, timeout: float = 30.0) -> RegistryClient:
    return RegistryClient(proxy.host, insecure=True, timeout=timeout, retries=ONCE)


def test_an_endless_manifest_is_cut_off_at_distributions_limit(proxy: FaultProxy):
    flood = Fault.flood(b"{" * 65536, count=10_000, path="/manifests/")  # 640 MiB, if anyone read it
    proxy.add(flood)
    with pytest.raises(RegistryError, match=f"more than the {MAX_MANIFEST_BYTES} bytes this answer may have"):
        client(proxy).get_manifest("any/repo", "1")
    assert flood.sent < MAX_MANIFEST_BYTES + 16 * MIB  # what the sockets' buffers took beyond what was read


def test_a_manifest_declaring_300_mib_is_not_read_at_all(proxy: FaultProxy):
    flood = Fault.flood(b"{" * 65536, count=4800, headers={"Content-Length": str(300 * MIB)}, path="/manifests/")
    proxy.add(flood)
    with pytest.raises(RegistryError, match=f"would send {300 * MIB} bytes, more than the {MAX_MANIFEST_BYTES}"):
        client(proxy).get_manifest("any/repo", "1")
    assert flood.sent < 16 * MIB


def test_a_compressed_bomb_is_refused_at_the_limit_of_what_it_expands_to(proxy: FaultProxy):
    bomb = gzip.compress(bytes(256 * MIB), compresslevel=9)  # 256 KiB on the wire
    proxy.add(Fault.flood(bomb, count=1, headers={"Content-Encoding": "gzip", "Content-Length": str(len(bomb))},
                          path="/manifests/"))
    with pytest.raises(RegistryError, match=f"more than the {MAX_MANIFEST_BYTES} bytes"):
        client(proxy).get_manifest("any/repo", "1")


def test_a_blob_larger_than_its_descriptor_says_is_refused(proxy: FaultProxy):
    flood = Fault.flood(b"x" * 65536, count=1000, path="/blobs/")
    proxy.add(flood)
    with pytest.raises(RegistryError, match="more than the 1000 bytes this answer may have"):
        client(proxy).get_blob("any/repo", "sha256:" + "a" * 64, size=1000)
    assert flood.sent < 16 * MIB


def test_a_blob_declared_over_cosigns_limit_is_not_fetched(proxy: FaultProxy):
    with pytest.raises(RegistryError, match="declares 209715200 bytes, over the 128 MiB"):
        client(proxy).get_blob("any/repo", "sha256:" + "a" * 64, size=200 * MIB)
    assert MAX_BLOB_BYTES == 128 * MIB
    assert proxy.count(path="/blobs/") == 0


def test_a_body_that_trickles_in_is_cut_off_whatever_the_read_timeout(proxy: FaultProxy):
    """One byte every 0.2 s never trips a 1 s read timeout; the whole answer's deadline does."""
    trickle = Fault.flood(b"x", count=64, seconds=0.2, path="/blobs/")
    proxy.add(trickle)
    with pytest.raises(TransientRegistryError, match="was cut off; check the registry or the network"):
        client(proxy, timeout=1.0).get_blob("any/repo", "sha256:" + "a" * 64, size=64)
    assert trickle.sent < 64


def test_a_hostile_attestation_tag_fails_its_image_alone(
    registry: LocalRegistry, proxy: FaultProxy, keypair: tuple[Path, Path]
):
    """Two images behind the same registry: one's .att tag floods, the other's is fresh and stays fresh."""
    attester = Attester(registry.client(), KeyFileSigner.from_file(keypair[0]))
    images = {}
    for name in ("hostile", "fine"):
        _, image = push(registry, f"hostile-{name}")
        attester.attach(image, timedelta(hours=1))
        images[name] = image
    proxy.add(Fault.flood(b"{" * 65536, count=10_000, times=None,
                          path=f"hostile-hostile/manifests/{attestation_tag(images['hostile'].digest)}"))
    checker = FreshnessChecker(FreshnessRules(MAX_AGE, WARN), PublicKeyVerifier.from_pem_files([keypair[1]]),
                               commands=OnCallCommands("fleet.yaml"))
    refs = [ImageRef.parse(f"{proxy.host}/freshness/hostile-{name}@{images[name].digest}")
            for name in ("hostile", "fine")]
    registries = Registries(insecure_hosts=frozenset({proxy.host}))
    try:
        hostile, fine = check_fleet(checker, registries, refs, concurrency=2)
    finally:
        registries.close()
    assert fine.verdict is Verdict.FRESH, fine.reason
    assert hostile.verdict is Verdict.UNREACHABLE, hostile.reason
    assert f"more than the {MAX_MANIFEST_BYTES} bytes" in hostile.reason


def test_a_token_service_answering_what_is_no_json_is_a_registry_error_naming_it(proxy: FaultProxy):
    realm = f"http://{proxy.host}/token"
    proxy.add(Fault("status", status=200, body=b"<html>sign in</html>", path=r"^/token", times=None),
              Fault("status", status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="registry"'},
                    path=r"/v2/app/manifests/", times=None))
    with pytest.raises(RegistryError) as caught:
        client(proxy).get_manifest("app", "1")
    message = str(caught.value)
    assert message.startswith(f"{proxy.host}/app:1: token service {realm} answered what is no token")
    assert message.endswith("check the registry's auth setup")
    assert caught.value.__cause__ is None  # no JSONDecodeError or ValidationError behind it


def test_an_index_entry_without_a_digest_is_a_registry_error_naming_the_image(proxy: FaultProxy):
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "size": 500, "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    proxy.add(Fault.status_code(200, body=index, path=r"/v2/app/manifests/1$", times=None))
    with pytest.raises(RegistryError, match=r"app@sha256:[0-9a-f]{64}: its index names a linux/amd64 manifest "
                                            r"without a sha256 digest; the index is broken: push the image again"):
        resolve(client(proxy), ImageRef.parse(f"{proxy.host}/app:1"))
