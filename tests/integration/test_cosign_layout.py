"""Attestations in cosign's `.att` layout: structure, --replace semantics, concurrent writers."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vulnattest.attestations import VULN_PREDICATE_TYPE, sign_statement
from vulnattest.attestations.cosign import (
    PREDICATE_ANNOTATION,
    CosignAttacher,
    attestation_tag,
    read_attestations,
)
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.errors import TransientRegistryError
from vulnattest.images import ImageRef
from vulnattest.locks import FileLocks
from vulnattest.registry import RegistryClient, ResolvedImage, resolve
from vulnattest.signing import KeyFileSigner

SBOM_TYPE = "https://spdx.dev/Document"


def _fresh_image(registry: LocalRegistry, name: str) -> ResolvedImage:
    client = registry.client()
    push_image(client, name, "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=name))
    return resolve(client, ImageRef.parse(f"{registry.host}/{name}:1"))


def _statement(image: ResolvedImage, predicate_type: str, marker: str) -> bytes:
    return json.dumps({
        "_type": "https://in-toto.io/Statement/v0.1", "predicateType": predicate_type,
        "subject": [{"name": image.image.name, "digest": {"sha256": image.digest.removeprefix("sha256:")}}],
        "predicate": {"marker": marker, "metadata": {"scanFinishedOn": "2026-11-28T00:00:00Z"}},
    }).encode()


def _attach(registry: LocalRegistry, image: ResolvedImage, key: Path, predicate_type: str, marker: str) -> None:
    envelope = sign_statement(_statement(image, predicate_type, marker), KeyFileSigner.from_file(key))
    CosignAttacher().attach(registry.client(), image, envelope, predicate_type)


def test_layout_is_what_cosign_and_kyverno_read_and_verifies_with_only_the_public_key(
    registry: LocalRegistry, keypair: tuple[Path, Path]
):
    image = _fresh_image(registry, "layout/app")
    _attach(registry, image, keypair[0], VULN_PREDICATE_TYPE, "one")

    # Read it back with nothing but HTTP, the public key, and cosign's documented layout.
    base = f"http://{registry.host}/v2/layout/app"
    tag = f"sha256-{image.digest.removeprefix('sha256:')}.att"
    assert tag == attestation_tag(image.digest)
    response = httpx.get(f"{base}/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert response.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = response.json()
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {"predicateType": VULN_PREDICATE_TYPE, "dev.cosignproject.cosign/signature": ""}
    envelope = httpx.get(f"{base}/blobs/{layer['digest']}").json()
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    payload = base64.b64decode(envelope["payload"])
    payload_type = envelope["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)
    public = serialization.load_pem_public_key(keypair[1].read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(base64.b64decode(envelope["signatures"][0]["sig"]), pae, ec.ECDSA(hashes.SHA256()))
    statement = json.loads(payload)
    assert statement["subject"][0]["digest"]["sha256"] == image.digest.removeprefix("sha256:")


def test_replace_drops_older_vuln_layers_keeps_other_types_and_puts_the_new_one_first(
    registry: LocalRegistry, keypair: tuple[Path, Path]
):
    image = _fresh_image(registry, "layout/replace")
    _attach(registry, image, keypair[0], SBOM_TYPE, "sbom")
    _attach(registry, image, keypair[0], VULN_PREDICATE_TYPE, "first")
    _attach(registry, image, keypair[0], VULN_PREDICATE_TYPE, "second")
    layers = read_attestations(registry.client(), image)
    assert [a.predicate_type for a in layers] == [VULN_PREDICATE_TYPE, SBOM_TYPE]
    markers = [json.loads(a.envelope("t").payload)["predicate"]["marker"] for a in layers]
    assert markers == ["second", "sbom"]


def race_writers(registry: LocalRegistry, key: Path, name: str, attachers: list[CosignAttacher]) -> list[str]:
    """Let each attacher write at once (a vuln attestation, or a distinct other type); return the types left."""
    image = _fresh_image(registry, name)
    signer = KeyFileSigner.from_file(key)
    types = [VULN_PREDICATE_TYPE if i % 2 == 0 else f"https://example.com/type-{i}" for i in range(len(attachers))]
    envelopes = [sign_statement(_statement(image, t, f"w{i}"), signer) for i, t in enumerate(types)]
    start = threading.Barrier(len(attachers))

    def write(index: int) -> None:
        start.wait()
        for attempt in range(10):  # what the task's retries do when a foreign writer got in between
            try:
                attachers[index].attach(registry.client(), image, envelopes[index], types[index])
                return
            except TransientRegistryError:
                if attempt == 9:
                    raise

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(attachers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(a.predicate_type for a in read_attestations(registry.client(), image))


def test_concurrent_writers_lose_nothing(registry: LocalRegistry, keypair: tuple[Path, Path], tmp_path: Path):
    # separate attachers, each with its own FileLocks over one directory: as separate processes on one host are
    attachers = [CosignAttacher(lock=FileLocks(tmp_path / "locks")) for _ in range(6)]
    left = race_writers(registry, keypair[0], "layout/race", attachers)
    assert left == sorted([VULN_PREDICATE_TYPE] + [f"https://example.com/type-{i}" for i in (1, 3, 5)])


def test_without_a_lock_concurrent_writers_do_lose_attestations(registry: LocalRegistry, keypair: tuple[Path, Path]):
    """The race the locks exist for is real: with no lock, the read-modify-write of the tag drops layers."""
    unlocked = [CosignAttacher(lock=lambda _key: contextlib.nullcontext()) for _ in range(6)]
    lost = [len(race_writers(registry, keypair[0], f"layout/unlocked-{n}", unlocked)) < 4 for n in range(5)]
    assert any(lost)


def test_replace_judges_layers_by_their_annotation_and_reads_only_unannotated_ones(
    registry: LocalRegistry, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
):
    image = _fresh_image(registry, "layout/annotations")
    _attach(registry, image, keypair[0], SBOM_TYPE, "sbom")
    _attach(registry, image, keypair[0], VULN_PREDICATE_TYPE, "first")
    # a vuln layer without its predicateType annotation, as a tool other than cosign might leave it
    client = registry.client()
    manifest = json.loads(client.get_manifest("layout/annotations", attestation_tag(image.digest)).body)
    del manifest["layers"][0]["annotations"][PREDICATE_ANNOTATION]
    client.put_manifest("layout/annotations", attestation_tag(image.digest), json.dumps(manifest).encode(),
                        manifest["mediaType"])
    fetched: list[str] = []
    get_blob = RegistryClient.get_blob

    def counting_get_blob(self: RegistryClient, repository: str, digest: str, size: object = None) -> bytes:
        fetched.append(digest)
        return get_blob(self, repository, digest, size)

    monkeypatch.setattr(RegistryClient, "get_blob", counting_get_blob)
    _attach(registry, image, keypair[0], VULN_PREDICATE_TYPE, "second")
    assert fetched == [manifest["layers"][0]["digest"]]  # the unannotated layer only, never the SBOM's envelope
    monkeypatch.undo()
    layers = read_attestations(registry.client(), image)
    markers = [json.loads(a.envelope("t").payload)["predicate"]["marker"] for a in layers]
    assert markers == ["second", "sbom"]  # its statement said vuln: replaced, as cosign replaces it
