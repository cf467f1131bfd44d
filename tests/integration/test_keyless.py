"""Keyless signing end to end with no network: sigstore-python against a loopback Fulcio and Rekor of a test PKI.

What runs for real here: sigstore-python's token parsing, CSR, Fulcio request and SCT check (against the test CT
key), its DSSE signing and Rekor v1 entry submission; vulnattest's conversion to cosign's annotations, the push to a
real registry, and the full certificate verification. What does not: the public Sigstore instance (its TUF trust
root, real Fulcio, real Rekor and OIDC providers), which needs the network.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from vulnattest.attestations import VULN_PREDICATE_TYPE, sign_statement
from vulnattest.attestations.cosign import CosignAttacher, attestation_tag
from vulnattest.config import parse_config
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.demo.testpki import FakeSigstoreServer, identity_token
from vulnattest.errors import SigningError, is_transient
from vulnattest.images import ImageRef
from vulnattest.registry import ResolvedImage, resolve
from vulnattest.signing.certificates import RekorBundle, certificate_issuer, certificate_subjects
from vulnattest.signing.factory import signer_from_settings, verifier_from_settings
from vulnattest.signing.keyless import CERTIFICATE_MARGIN, KeylessSigner, identity_token_source
from vulnattest.text import rfc3339
from vulnattest.verification import check_attestations

SUBJECT = "ci@acme.example"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
ISSUER = "https://dex.acme.example"
CI_VARIABLES = ("GITHUB_ACTIONS", "BUILDKITE", "GITLAB_CI", "CIRCLECI", "SIGSTORE_ID_TOKEN")


def _config(directory: Path, subject: str = SUBJECT, issuer: str = ISSUER) -> str:
    return (
        "signing:\n  key: keyless\n  keyless: {trust_config: trust_config.json}\n"
        f"  trusted_root: trusted_root.json\n  identities: [{{subject: '{subject}', issuer: '{issuer}'}}]\n"
    )


def _statement(image: ResolvedImage, finished: datetime | None = None) -> bytes:
    finished = finished or datetime(2026, 11, 28, 0, 0, 1, tzinfo=UTC)
    return json.dumps({
        "_type": STATEMENT_V1, "predicateType": VULN_PREDICATE_TYPE,
        "subject": [{"name": image.image.name, "digest": {"sha256": image.digest.removeprefix("sha256:")}}],
        "predicate": {"metadata": {"scanStartedOn": rfc3339(finished - timedelta(seconds=1)),
                                   "scanFinishedOn": rfc3339(finished)}},
    }).encode()


def test_keyless_attestation_in_cosigns_layout_verifies_by_identity(
    deployment: Path, sigstore: FakeSigstoreServer, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    token = identity_token(subject=SUBJECT, issuer=ISSUER)
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", token)
    signing = parse_config(_config(deployment), base=deployment).signing
    client = registry.client()
    push_image(client, "keyless/app", "1", alpine_image(DEMO_ALPINE_PACKAGES, marker="keyless"))
    image = resolve(client, ImageRef.parse(f"{registry.host}/keyless/app:1"))

    with caplog.at_level(logging.DEBUG):
        signer = signer_from_settings(signing)
        envelope = sign_statement(_statement(image), signer)
    assert signer.key_id == f"keyless:{SUBJECT}"
    assert envelope.material is not None
    CosignAttacher().attach(client, image, envelope, VULN_PREDICATE_TYPE)

    # The layer, read with nothing but HTTP, carries what cosign and Kyverno read for keyless attestations
    manifest = httpx.get(f"http://{registry.host}/v2/keyless/app/manifests/{attestation_tag(image.digest)}",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    [layer] = manifest["layers"]
    annotations = layer["annotations"]
    assert set(annotations) == {
        "predicateType", "dev.cosignproject.cosign/signature",
        "dev.sigstore.cosign/certificate", "dev.sigstore.cosign/chain", "dev.sigstore.cosign/bundle",
    }
    leaf = x509.load_pem_x509_certificate(annotations["dev.sigstore.cosign/certificate"].encode())
    assert (certificate_subjects(leaf), certificate_issuer(leaf)) == ([SUBJECT], ISSUER)
    chain = x509.load_pem_x509_certificates(annotations["dev.sigstore.cosign/chain"].encode())
    assert [c.subject for c in chain] == [leaf.issuer, chain[0].issuer]
    bundle = json.loads(annotations["dev.sigstore.cosign/bundle"])
    assert set(bundle) == {"SignedEntryTimestamp", "Payload"}
    assert set(bundle["Payload"]) == {"body", "integratedTime", "logIndex", "logID"}
    entry = json.loads(RekorBundle.from_json(annotations["dev.sigstore.cosign/bundle"].encode()).body)
    assert (entry["kind"], entry["apiVersion"]) == ("dsse", "0.0.1")

    [check] = check_attestations(client, image, verifier_from_settings(signing), now=datetime.now(UTC))
    assert check.ok, check.reason
    assert check.key_id == f"{SUBJECT} ({ISSUER})"

    [refused] = check_attestations(
        client, image, verifier_from_settings(parse_config(_config(deployment, subject="other@acme.example"),
                                                           base=deployment).signing))
    assert not refused.ok
    assert "not one of the accepted identities" in refused.reason
    assert token not in caplog.text


def _tiny(marker: str) -> bytes:
    return json.dumps({"_type": STATEMENT_V1, "predicateType": "https://example.test/v1", "predicate": {"m": marker},
                       "subject": [{"name": "x", "digest": {"sha256": "a" * 64}}]}).encode()


def test_one_certificate_serves_many_signatures(deployment: Path, sigstore: FakeSigstoreServer):
    token = identity_token(subject=SUBJECT, issuer=ISSUER)
    signer = KeylessSigner.from_trust_config_file(deployment / "trust_config.json", lambda: token)
    before = list(sigstore.requests)
    first = sign_statement(_tiny("1"), signer)
    second = sign_statement(_tiny("2"), signer)
    assert sigstore.requests[len(before):] == ["/api/v2/signingCert", "/api/v1/log/entries", "/api/v1/log/entries"]
    assert first.material is not None and second.material is not None
    assert first.material.certificate == second.material.certificate
    assert first.material.rekor_bundle != second.material.rekor_bundle


def test_a_certificate_about_to_lapse_is_replaced_before_it_signs(deployment: Path, sigstore: FakeSigstoreServer):
    # Rekor must log an entry before its certificate lapses, or no verifier accepts the attestation
    token = identity_token(subject=SUBJECT, issuer=ISSUER)
    signer = KeylessSigner.from_trust_config_file(deployment / "trust_config.json", lambda: token)
    sigstore.certificate_lifetime = CERTIFICATE_MARGIN - timedelta(seconds=10)
    try:
        before = len(sigstore.requests)
        first, second = sign_statement(_tiny("1"), signer), sign_statement(_tiny("2"), signer)
    finally:
        sigstore.certificate_lifetime = timedelta(minutes=10)
    assert sigstore.requests[before:].count("/api/v2/signingCert") == 2
    assert first.material is not None and second.material is not None
    assert first.material.certificate != second.material.certificate


@pytest.mark.parametrize(("status", "transient"), [(400, False), (401, False), (429, True), (503, True)])
def test_fulcio_and_rekor_refusals_are_final_and_their_outages_retried(
    deployment: Path, sigstore: FakeSigstoreServer, status: int, transient: bool
):
    token = identity_token(subject=SUBJECT, issuer=ISSUER)
    for failing in ("Fulcio", "Rekor"):  # the first request of a new signer goes to Fulcio, the second to Rekor
        signer = KeylessSigner.from_trust_config_file(deployment / "trust_config.json", lambda: token)
        sigstore.failures[:] = [status] if failing == "Fulcio" else []
        if failing == "Rekor":
            sign_statement(_tiny("warm"), signer)  # the certificate is cached: the next request is Rekor's
            sigstore.failures[:] = [status]
        before = len(sigstore.requests)
        try:
            if transient:  # an outage: the request is tried again on its own, and signing goes through
                assert sign_statement(_tiny(failing), signer).material is not None
                assert sigstore.failures == [] and len(sigstore.requests) - before >= 2
            else:
                with pytest.raises(SigningError, match=failing) as raised:
                    sign_statement(_tiny(failing), signer)
                assert not is_transient(raised.value), (failing, raised.value)
                assert len(sigstore.requests) - before == 1  # a refusal is final: not asked again
        finally:
            sigstore.failures.clear()


def test_the_token_file_wins_and_is_reread(tmp_path: Path):
    (tmp_path / "token").write_text("first\n")
    source = identity_token_source(tmp_path / "token", {"SIGSTORE_ID_TOKEN": "from-env"})
    assert source() == "first"
    (tmp_path / "token").write_text("rotated")
    assert source() == "rotated"
    assert identity_token_source(None, {"SIGSTORE_ID_TOKEN": "from-env"})() == "from-env"


def test_without_any_identity_the_error_says_where_one_comes_from(monkeypatch: pytest.MonkeyPatch):
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SigningError, match=r"needs an OIDC identity.*GitHub Actions.*identity_token_file"):
        identity_token_source(None, {})()


def test_an_expired_token_is_refused_without_being_echoed(deployment: Path):
    from datetime import timedelta

    token = identity_token(subject=SUBJECT, issuer=ISSUER, lifetime=timedelta(seconds=-60))
    signer = KeylessSigner.from_trust_config_file(deployment / "trust_config.json", lambda: token)
    with pytest.raises(SigningError, match="identity token is not usable") as raised:
        sign_statement(_tiny("expired"), signer)
    assert token not in str(raised.value)


def test_a_missing_trust_config_names_the_file(tmp_path: Path):
    with pytest.raises(SigningError, match=r"cannot read the Sigstore trust config .*nope\.json"):
        KeylessSigner.from_trust_config_file(tmp_path / "nope.json", lambda: "")


def test_only_in_toto_v1_statements_are_signed_keyless(deployment: Path):
    signer = KeylessSigner.from_trust_config_file(deployment / "trust_config.json", lambda: "unused")
    with pytest.raises(SigningError, match="in-toto statements only"):
        signer.sign_dsse("text/plain", b"hello")
    old = json.loads(_tiny("old"))
    old["_type"] = "https://in-toto.io/Statement/v0.1"
    with pytest.raises(SigningError, match=r"signs `_type: https://in-toto.io/Statement/v1` only"):
        sign_statement(json.dumps(old).encode(), signer)
