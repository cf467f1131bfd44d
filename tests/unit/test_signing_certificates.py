"""Keyless verification against a test CA, CT log and Rekor key: who is accepted, and every way to be refused."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vulnattest.demo.testpki import CertificateAuthority, TestSigstore
from vulnattest.errors import SigningError, VerificationError
from vulnattest.signing.certificates import (
    OIDC_ISSUER_V2,
    CertificateIdentity,
    CertificateVerifier,
    RekorBundle,
    TrustMaterial,
    certificate_issuer,
    certificate_subjects,
)
from vulnattest.signing.interface import CertificateMaterial, pae

IN_TOTO = "application/vnd.in-toto+json"
SUBJECT = "https://github.com/acme/app/.github/workflows/attest.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://cosign.sigstore.dev/attestation/vuln/v1"}'


@pytest.fixture(scope="module")
def pki() -> TestSigstore:
    return TestSigstore()


@pytest.fixture(scope="module")
def trust(pki: TestSigstore) -> TrustMaterial:
    return TrustMaterial.from_trusted_root(pki.trusted_root_json(), "test trusted_root.json")


def _signed(
    pki: TestSigstore, *, subject: str = SUBJECT, issuer: str = ISSUER, payload: bytes = PAYLOAD,
    not_before: datetime | None = None, lifetime: timedelta = timedelta(minutes=10),
    integrated_at: datetime | None = None, sct: bool = True, ca: CertificateAuthority | None = None,
    kind: str = "dsse",
) -> tuple[bytes, CertificateMaterial]:
    """Sign `payload` as keyless signing does; return the signature and the layer's certificate material."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki.issue(key.public_key(), subject=subject, issuer=issuer, not_before=not_before, lifetime=lifetime,
                     sct=sct, ca=ca)
    signature = key.sign(pae(IN_TOTO, payload), ec.ECDSA(hashes.SHA256()))
    envelope = json.dumps({"payloadType": IN_TOTO, "payload": base64.b64encode(payload).decode(),
                           "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}]}).encode()
    bundle, _ = pki.log_dsse(envelope, cert, integrated_at=integrated_at, kind=kind)
    chain = ca.certificate.public_bytes(serialization.Encoding.PEM) if ca else pki.chain_pem()
    return signature, CertificateMaterial(cert.public_bytes(serialization.Encoding.PEM), chain, bundle.to_json())


def _verifier(trust: TrustMaterial, *identities: CertificateIdentity, **options: bool) -> CertificateVerifier:
    return CertificateVerifier(identities or (CertificateIdentity(subject=SUBJECT, issuer=ISSUER),), trust, **options)


def test_the_configured_identity_is_accepted_with_its_signing_time(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki)
    signer = _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)
    assert (signer.identity, signer.issuer) == (SUBJECT, ISSUER)
    assert signer.signed_at is not None
    assert abs(signer.signed_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert SUBJECT in signer.key_id


def test_entries_cosign_v2_logged_as_intoto_are_accepted_as_cosign_and_kyverno_accept_them(
    pki: TestSigstore, trust: TrustMaterial
):
    signature, material = _signed(pki, kind="intoto")
    assert _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material).identity == SUBJECT
    other, _ = _signed(pki, kind="intoto")  # a signature of another key than the logged certificate's
    with pytest.raises(VerificationError):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [other], material)


def test_regexp_identities_match_like_cosign(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki)
    workflows = CertificateIdentity(subject_regexp=r"^https://github\.com/acme/.+@refs/heads/main$",
                                    issuer_regexp=r"^https://token\.actions\.githubusercontent\.com$")
    assert _verifier(trust, workflows).verify_dsse(IN_TOTO, PAYLOAD, [signature], material).identity == SUBJECT
    # Go's regexp.MatchString searches: an unanchored pattern matches inside a longer identity
    loose = CertificateIdentity(subject_regexp="acme/app", issuer=ISSUER)
    assert _verifier(trust, loose).verify_dsse(IN_TOTO, PAYLOAD, [signature], material).identity == SUBJECT
    other_org = CertificateIdentity(subject_regexp=r"^https://github\.com/evil/", issuer=ISSUER)
    with pytest.raises(VerificationError, match="not one of the accepted identities"):
        _verifier(trust, other_org).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)


def test_a_go_end_of_text_anchor_the_config_accepts_is_accepted_by_the_verifier(
    pki: TestSigstore, trust: TrustMaterial
):
    from vulnattest.config import SigningSettings
    from vulnattest.signing.factory import certificate_identities

    signature, material = _signed(pki)
    settings = SigningSettings.model_validate({"key": "keyless", "identities": [
        {"subject_regexp": r"@refs/heads/main\z", "issuer": ISSUER}]})
    [identity] = certificate_identities(settings)

    assert _verifier(trust, identity).verify_dsse(IN_TOTO, PAYLOAD, [signature], material).identity == SUBJECT
    with pytest.raises(VerificationError, match="not one of the accepted identities"):
        _verifier(trust, CertificateIdentity(subject_regexp=r"acme/app\z", issuer=ISSUER)).verify_dsse(
            IN_TOTO, PAYLOAD, [signature], material)


def test_any_of_several_identities_is_enough(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki, subject="release@acme.example", issuer="https://accounts.google.com")
    verifier = _verifier(trust, CertificateIdentity(subject=SUBJECT, issuer=ISSUER),
                         CertificateIdentity(subject="release@acme.example", issuer="https://accounts.google.com"))
    assert verifier.verify_dsse(IN_TOTO, PAYLOAD, [signature], material).identity == "release@acme.example"


def test_a_wrong_subject_is_refused(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki, subject="https://github.com/acme/app/.github/workflows/other.yml@refs/heads/x")
    with pytest.raises(VerificationError, match=r"other\.yml.*is not one of the accepted identities"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)


def test_a_wrong_issuer_is_refused(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki, issuer="https://gitlab.com")
    with pytest.raises(VerificationError, match=r"issuer https://gitlab\.com\) is not one of the accepted"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)


def test_a_certificate_expired_when_the_log_saw_the_signature_is_refused(pki: TestSigstore, trust: TrustMaterial):
    issued = datetime.now(UTC) - timedelta(hours=1)
    signature, material = _signed(pki, not_before=issued, integrated_at=issued + timedelta(minutes=11))
    with pytest.raises(VerificationError, match="not valid at signing time"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)


def test_an_expired_certificate_is_fine_when_it_was_valid_at_signing_time(pki: TestSigstore, trust: TrustMaterial):
    # Fulcio certificates live ten minutes; the Rekor integration time is what they are judged at
    issued = datetime.now(UTC) - timedelta(days=3)
    signature, material = _signed(pki, not_before=issued, integrated_at=issued + timedelta(minutes=2))
    signer = _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)
    assert signer.signed_at == (issued + timedelta(minutes=2)).replace(microsecond=0)


def test_a_certificate_from_an_untrusted_root_is_refused(pki: TestSigstore, trust: TrustMaterial):
    rogue = CertificateAuthority.root("rogue root")
    signature, material = _signed(pki, ca=rogue)
    with pytest.raises(VerificationError, match="does not chain to a trusted root"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)


def test_a_tampered_payload_is_refused(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki)
    with pytest.raises(VerificationError, match="signature does not verify"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD.replace(b"v1", b"v2"), [signature], material)


def test_a_rewritten_log_entry_fails_its_signed_entry_timestamp(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki, not_before=datetime.now(UTC) - timedelta(days=1),
                                  integrated_at=datetime.now(UTC) - timedelta(days=1) + timedelta(minutes=1))
    assert material.rekor_bundle is not None
    bundle = RekorBundle.from_json(material.rekor_bundle)
    backdated = replace(bundle, integrated_time=bundle.integrated_time - 30)
    with pytest.raises(VerificationError, match="Signed Entry Timestamp does not verify"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature],
                                     replace(material, rekor_bundle=backdated.to_json()))


def test_a_log_entry_of_another_signature_is_refused(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki)
    _, other = _signed(pki, payload=b'{"other":true}')
    with pytest.raises(VerificationError, match="records another"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], replace(material, rekor_bundle=other.rekor_bundle))


def test_an_entry_in_an_untrusted_log_is_refused(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(TestSigstore(root=pki.root, intermediate=pki.issuing, ctlog_key=pki.ctlog_key))
    with pytest.raises(VerificationError, match="not a trusted one"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)


def test_without_a_rekor_bundle_the_log_check_fails_unless_ignored(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki)
    unlogged = replace(material, rekor_bundle=None)
    with pytest.raises(VerificationError, match=r"no Rekor bundle.*ignore_tlog"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], unlogged)
    # opted out, the certificate is judged at the current time, as cosign does without a log
    assert _verifier(trust, require_tlog=False).verify_dsse(IN_TOTO, PAYLOAD, [signature], unlogged).identity
    old_signature, old = _signed(pki, not_before=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(VerificationError, match="not valid at signing time"):
        _verifier(trust, require_tlog=False).verify_dsse(IN_TOTO, PAYLOAD, [old_signature],
                                                         replace(old, rekor_bundle=None))


def test_a_certificate_without_sct_fails_unless_ignored(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki, sct=False)
    with pytest.raises(VerificationError, match="no SCT"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)
    assert _verifier(trust, require_sct=False).verify_dsse(IN_TOTO, PAYLOAD, [signature], material).identity


def test_an_sct_from_an_unknown_ct_log_is_refused(pki: TestSigstore, trust: TrustMaterial):
    other_ct = TestSigstore(root=pki.root, intermediate=pki.issuing, rekor_key=pki.rekor_key)
    signature, material = _signed(other_ct)
    with pytest.raises(VerificationError, match="no SCT on the signing certificate verifies"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)


def test_an_sct_stamped_outside_its_ct_log_keys_validity_is_refused(pki: TestSigstore, trust: TrustMaterial):
    signature, material = _signed(pki)
    retired = replace(trust, ctlog_keys=tuple(replace(k, valid_until=datetime.now(UTC) - timedelta(days=1))
                                              for k in trust.ctlog_keys))
    with pytest.raises(VerificationError, match="no SCT on the signing certificate verifies"):
        _verifier(retired).verify_dsse(IN_TOTO, PAYLOAD, [signature], material)
    assert _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material).identity == SUBJECT


def test_a_certificate_authority_counts_only_while_the_trust_root_says_it_served(pki: TestSigstore):
    signature, material = _signed(pki)
    for window, accepted in (({"start": "2020-01-01T00:00:00Z"}, True),
                             ({"start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"}, False)):
        root = json.loads(pki.trusted_root_json())
        for authority in root["certificateAuthorities"]:
            authority["validFor"] = window
        verifier = _verifier(TrustMaterial.from_trusted_root(json.dumps(root).encode(), "trusted_root.json"))
        if accepted:
            assert verifier.verify_dsse(IN_TOTO, PAYLOAD, [signature], material).identity == SUBJECT
        else:
            with pytest.raises(VerificationError, match="does not chain to a trusted root"):
                verifier.verify_dsse(IN_TOTO, PAYLOAD, [signature], material)


def test_a_key_signed_attestation_is_not_a_certificate_identity(trust: TrustMaterial):
    with pytest.raises(VerificationError, match="no signing certificate"):
        _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [b"sig"], None)


def test_identity_and_issuer_are_read_from_fulcio_extensions(pki: TestSigstore):
    cert = pki.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), subject="dev@acme.example",
                     issuer="https://accounts.google.com")
    assert certificate_subjects(cert) == ["dev@acme.example"]
    assert certificate_issuer(cert) == "https://accounts.google.com"
    assert cert.extensions.get_extension_for_oid(OIDC_ISSUER_V2).value.value[:1] == b"\x0c"  # a DER UTF8String


def test_private_roots_and_log_keys_load_from_pem_files(pki: TestSigstore, tmp_path: Path):
    (tmp_path / "roots.pem").write_bytes(pki.chain_pem())
    (tmp_path / "rekor.pub").write_bytes(pki.rekor_public_pem())
    (tmp_path / "ctlog.pub").write_bytes(pki.ctlog_public_pem())
    trust = TrustMaterial.from_files(roots=tmp_path / "roots.pem", rekor_public_keys=[tmp_path / "rekor.pub"],
                                     ctlog_public_keys=[tmp_path / "ctlog.pub"])
    assert len(trust.roots) == 1 and len(trust.intermediates) == 1
    signature, material = _signed(pki)
    assert _verifier(trust).verify_dsse(IN_TOTO, PAYLOAD, [signature], material).identity == SUBJECT


def test_a_verifier_that_could_never_pass_is_a_config_error(pki: TestSigstore, tmp_path: Path):
    (tmp_path / "roots.pem").write_bytes(pki.roots_pem())
    roots_only = TrustMaterial.from_files(roots=tmp_path / "roots.pem")
    with pytest.raises(SigningError, match=r"no Rekor public key.*ignore_tlog"):
        _verifier(roots_only)
    with pytest.raises(SigningError, match=r"no CT log public key.*ignore_sct"):
        _verifier(roots_only, require_tlog=False)
    assert _verifier(roots_only, require_tlog=False, require_sct=False)
    with pytest.raises(SigningError, match="no certificate identity"):
        CertificateVerifier([], roots_only)
    with pytest.raises(SigningError, match="exactly one of subject"):
        CertificateIdentity(subject="a", subject_regexp="b", issuer=ISSUER)
    with pytest.raises(SigningError, match="invalid regular expression"):
        CertificateIdentity(subject_regexp="(", issuer=ISSUER)


def test_a_trusted_root_file_of_another_kind_is_refused():
    with pytest.raises(SigningError, match="media type"):
        TrustMaterial.from_trusted_root(b'{"mediaType": "application/json"}', "x.json")
    with pytest.raises(SigningError, match=r"not a Sigstore trusted_root\.json"):
        TrustMaterial.from_trusted_root(b"[]", "x.json")


def test_older_certificates_with_only_the_v1_issuer_extension_are_read(pki: TestSigstore):
    from cryptography import x509

    from vulnattest.signing.certificates import OIDC_ISSUER_V1

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(pki.issuing.certificate.subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + timedelta(minutes=10))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("old@acme.example")]), critical=True)
        .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V1, b"https://accounts.google.com"), critical=False)
        .sign(pki.issuing.key, hashes.SHA256())
    )
    assert certificate_issuer(cert) == "https://accounts.google.com"
    assert certificate_subjects(cert) == ["old@acme.example"]


def test_of_the_san_other_names_only_fulcios_username_is_an_identity():
    from cryptography import x509

    from vulnattest.signing.certificates import certificate_subjects

    def utf8(text: str) -> bytes:
        return b"\x0c" + bytes([len(text)]) + text.encode()

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    san = x509.SubjectAlternativeName([
        x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7"), utf8("alice")),  # Fulcio's username
        x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), utf8("mallory@corp.example")),  # a UPN
    ])
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
            .public_key(key.public_key()).serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(1))
            .add_extension(san, critical=True).sign(key, hashes.SHA256()))
    assert certificate_subjects(cert) == ["alice"]  # cosign reads no other other name as an identity
