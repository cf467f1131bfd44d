"""DSSE envelopes, PAE and the vuln statement, checked against the specs' byte layouts."""

from __future__ import annotations

import base64
import hashlib
import json
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vulnattest.attestations import VULN_PREDICATE_TYPE, Envelope, Invocation, sign_statement, vuln_statement
from vulnattest.attestations.cosign import CosignAttacher, read_attestations
from vulnattest.attestations.dsse import pae
from vulnattest.attestations.statement import rfc3339
from vulnattest.errors import VerificationError
from vulnattest.images import ImageRef
from vulnattest.registry import OCI_MANIFEST, Manifest, RegistryClient, ResolvedImage
from vulnattest.registry_api import Registry
from vulnattest.scanners.interface import Finding, ScannerInfo, ScanReport
from vulnattest.signing import KeyFileSigner, PublicKeyVerifier, generate_keypair
from vulnattest.storage import ObjectKey, StoredObject, VerifiedReport

DIGEST = "sha256:" + "d" * 64


def test_pae_matches_the_dsse_spec():
    assert pae("application/vnd.in-toto+json", b"hello") == b"DSSEv1 28 application/vnd.in-toto+json 5 hello"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("k"))


def test_envelope_is_cosign_shaped_and_verifies_with_the_public_key_alone(keys: tuple[Path, Path]):
    envelope = sign_statement(b'{"_type":"x"}', KeyFileSigner.from_file(keys[0]))
    wire = json.loads(envelope.to_json())
    assert wire["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(wire["payload"]) == b'{"_type":"x"}'
    assert wire["signatures"][0]["keyid"] == ""
    public = serialization.load_pem_public_key(keys[1].read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signature = base64.b64decode(wire["signatures"][0]["sig"])
    public.verify(signature, pae(wire["payloadType"], b'{"_type":"x"}'), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(signature, pae(wire["payloadType"], b'{"_type":"y"}'), ec.ECDSA(hashes.SHA256()))


def test_verifier_finds_the_signing_key_among_several_and_refuses_others(keys: tuple[Path, Path], tmp_path: Path):
    _other_private, other_public = generate_keypair(tmp_path)
    envelope = Envelope.from_json(sign_statement(b"{}", KeyFileSigner.from_file(keys[0])).to_json(), "test")
    rotated = PublicKeyVerifier.from_pem_files([other_public, keys[1]])
    assert envelope.verify(rotated) is rotated.keys[1]
    assert envelope.verify(PublicKeyVerifier.from_pem_files([other_public])) is None
    tampered = Envelope(b"{ }", envelope.payload_type, envelope.signatures)
    assert tampered.verify(rotated) is None


def test_encrypted_keys_need_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    private, _ = generate_keypair(tmp_path, password=b"s3cret")
    assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
    assert private.stat().st_mode & 0o777 == 0o600
    monkeypatch.delenv("VULNATTEST_KEY_PASSWORD", raising=False)
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    with pytest.raises(Exception, match="is encrypted: set VULNATTEST_KEY_PASSWORD"):
        KeyFileSigner.from_file(private)
    monkeypatch.setenv("VULNATTEST_KEY_PASSWORD", "wrong")
    with pytest.raises(Exception, match="wrong password") as caught:
        KeyFileSigner.from_file(private)
    assert "wrong" not in str(caught.value).replace("wrong password", "")
    monkeypatch.setenv("VULNATTEST_KEY_PASSWORD", "s3cret")
    assert KeyFileSigner.from_file(private).key_id.startswith("sha256:")


def test_keypair_generation_never_overwrites(tmp_path: Path):
    generate_keypair(tmp_path)
    with pytest.raises(Exception, match="already exists"):
        generate_keypair(tmp_path)


@pytest.mark.parametrize(
    "junk", [b"not json", b'{"payload": "x"}', b'{"payloadType":"t","payload":"%%%","signatures":[]}']
)
def test_malformed_envelopes_are_verification_errors(junk: bytes):
    with pytest.raises(VerificationError, match="where: not a DSSE envelope"):
        Envelope.from_json(junk, "where")


def test_vuln_statement_carries_true_times_scanner_db_and_stored_report():
    image = ResolvedImage(
        ImageRef.parse(f"127.0.0.1:5000/demo/app:1@{DIGEST}"), DIGEST,
        "application/vnd.oci.image.index.v1+json", "sha256:" + "e" * 64, "linux/amd64",
    )
    report = ScanReport(
        image=image, body=b'{"SchemaVersion":2,"Results":[]}',
        started=datetime(2026, 11, 28, 1, 0, 0, 500000, tzinfo=UTC),
        finished=datetime(2026, 11, 28, 1, 0, 3, tzinfo=UTC),
        scanner=ScannerInfo("pkg:github/aquasecurity/trivy@0.76.0", "0.76.0", "oci://db", "2", "2026-11-27T00:00:00Z"),
        findings=(Finding("CVE-1", "HIGH", "zlib", "1"),),
    )
    verified = VerifiedReport(StoredObject(ObjectKey("r.json"), "s3://b/r.json", report.sha256))
    statement = json.loads(vuln_statement(report, verified, Invocation("run-1", "http://ui/runs/run-1")))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == VULN_PREDICATE_TYPE
    assert statement["subject"] == [{"name": "127.0.0.1:5000/demo/app", "digest": {"sha256": "d" * 64}}]
    predicate = statement["predicate"]
    assert predicate["metadata"] == {"scanStartedOn": "2026-11-28T01:00:00Z", "scanFinishedOn": "2026-11-28T01:00:03Z"}
    assert predicate["scanner"]["uri"] == "pkg:github/aquasecurity/trivy@0.76.0"
    assert predicate["scanner"]["db"] == {"uri": "oci://db", "version": "2", "updatedAt": "2026-11-27T00:00:00Z"}
    assert predicate["scanner"]["result"] == {"SchemaVersion": 2, "Results": []}
    assert predicate["invocation"]["parameters"]["report"] == {"uri": "s3://b/r.json", "sha256": report.sha256}
    assert predicate["invocation"]["event_id"] == "run-1"
    assert predicate["invocation"]["parameters"]["scannedManifest"] == "sha256:" + "e" * 64


def test_rfc3339_is_utc_with_z():
    from datetime import timedelta, timezone

    assert rfc3339(datetime(2026, 1, 1, 3, 0, tzinfo=timezone(timedelta(hours=2)))) == "2026-01-01T01:00:00Z"


class _Served:
    """A `Registry` that keeps blobs and one `.att` manifest in memory, starting from `manifest` (a registry that
    validates manifests refuses a layer without a digest; others may serve one); it has no referrers API."""

    host = "127.0.0.1:5000"

    def __init__(self, manifest: dict[str, object]) -> None:
        self.body = json.dumps(manifest).encode()
        self.blobs: dict[str, bytes] = {}

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        return Manifest("sha256:" + hashlib.sha256(self.body).hexdigest(), OCI_MANIFEST, self.body)

    def find_manifest(self, repository: str, reference: str) -> Manifest | None:
        return self.get_manifest(repository, reference)

    def put_referrer(self, repository: str, body: bytes) -> tuple[str, bool]:
        raise NotImplementedError("no referrers here")

    def referrers(self, repository: str, digest: str) -> list[dict[str, object]] | None:
        return None

    def delete_manifest(self, repository: str, digest: str) -> None:
        raise NotImplementedError("no deletes here")

    def put_manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> str:
        self.body = body
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def push_blob(self, repository: str, data: bytes, *, check_exists: bool = True) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def get_blob(self, repository: str, digest: str, size: object = None) -> bytes:
        return self.blobs[digest]


@pytest.mark.parametrize(("layers", "says"), [
    ([{"mediaType": "application/vnd.dsse.envelope.v1+json", "size": 3}], "has a layer that is not a descriptor"),
    (["not a descriptor"], "has a layer that is not a descriptor"),
])
def test_a_malformed_attestation_manifest_is_a_clear_error(layers: list[object], says: str):
    digest = "sha256:" + "a" * 64
    image = ResolvedImage(ImageRef.parse(f"127.0.0.1:5000/app@{digest}"), digest, OCI_MANIFEST, digest)
    served = _Served({"layers": layers})
    assert isinstance(served, Registry)  # the whole Protocol, as the real client has it
    assert isinstance(RegistryClient("127.0.0.1:5000", insecure=True), Registry)
    with pytest.raises(VerificationError, match=f"127.0.0.1:5000/app@{digest}: sha256-{'a' * 64}.att {says}"):
        read_attestations(served, image)
    # attesting again rewrites it, as the message says: what is no descriptor cannot be carried over
    envelope = Envelope(b"{}", "application/vnd.in-toto+json", (b"sig",))
    attached = CosignAttacher(lock=lambda key: nullcontext()).attach(served, image, envelope, VULN_PREDICATE_TYPE)
    assert [a.descriptor.digest for a in read_attestations(served, image)] == [attached.layer_digest]


def test_vex_attestations_admission_would_not_read_are_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from vulnattest.verification import vex_attestations

    digest = "sha256:" + "a" * 64
    image = ResolvedImage(ImageRef.parse(f"127.0.0.1:5000/app@{digest}"), digest, OCI_MANIFEST, digest)
    _, public = generate_keypair(tmp_path)
    verifier = PublicKeyVerifier.from_pem_files([public])

    assert vex_attestations(_Served({"layers": ["not a descriptor"]}), image, verifier) == []
    assert f"VEX attestations of 127.0.0.1:5000/app@{digest} not read: " in caplog.text
    assert "has a layer that is not a descriptor" in caplog.text
