"""`signing:` in the config: key references, the signer and verifier built from them, and Kyverno's attestors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vulnattest.attestations import Envelope, sign_statement
from vulnattest.config import SigningSettings, parse_config
from vulnattest.demo.testpki import TestSigstore
from vulnattest.errors import ConfigError, SigningError, VerificationError
from vulnattest.signing.certificates import CertificateVerifier
from vulnattest.signing.factory import AnyVerifier, signer_from_settings, verifier_from_settings
from vulnattest.signing.interface import CertificateMaterial, PublicKeyVerifier, pae
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair
from vulnattest.signing.kyverno import kyverno_attestors

IN_TOTO = "application/vnd.in-toto+json"
ISSUER = "https://token.actions.githubusercontent.com"
SUBJECT = "https://github.com/acme/app/.github/workflows/attest.yml@refs/heads/main"


def _signing(text: str, base: Path) -> SigningSettings:
    return parse_config(text, base=base).signing


def test_key_references_parse_into_paths_uris_and_keyless(tmp_path: Path):
    assert _signing("signing: {key: keys/k.key}", tmp_path).key == tmp_path / "keys" / "k.key"
    assert _signing("signing: {key: 'awskms:///alias/vulnattest'}", tmp_path).key == "awskms:///alias/vulnattest"
    assert _signing("signing: {key: keyless}", tmp_path).key == "keyless"
    with pytest.raises(ConfigError, match=r"signing\.key: unsupported key URI 'hashivault://k'"):
        parse_config("signing: {key: 'hashivault://k'}")


def test_trusted_public_keys_default_to_the_signing_keys_own(tmp_path: Path):
    assert _signing("signing: {key: k.key}", tmp_path).trusted_public_keys() == (tmp_path / "k.pub",)
    assert _signing("signing: {key: 'awskms:///alias/a'}", tmp_path).trusted_public_keys() == ("awskms:///alias/a",)
    assert _signing("signing: {key: keyless}", tmp_path).trusted_public_keys() == ()
    listed = _signing("signing: {key: k.key, public_keys: [old.pub, 'awskms:///alias/b']}", tmp_path)
    assert listed.trusted_public_keys() == (tmp_path / "old.pub", "awskms:///alias/b")
    with_identities = _signing(f"signing: {{key: k.key, identities: [{{subject: a, issuer: {ISSUER}}}]}}", tmp_path)
    assert with_identities.trusted_public_keys() == ()


def test_identities_need_one_subject_and_one_issuer_form():
    with pytest.raises(ConfigError, match=r"signing\.identities\.0: set exactly one of subject and subject_regexp"):
        parse_config(f"signing: {{identities: [{{issuer: {ISSUER}}}]}}")
    with pytest.raises(ConfigError, match="set exactly one of issuer and issuer_regexp"):
        parse_config("signing: {identities: [{subject: a, issuer: b, issuer_regexp: c}]}")
    with pytest.raises(ConfigError, match="invalid regular expression"):
        parse_config(f"signing: {{identities: [{{subject_regexp: '(', issuer: {ISSUER}}}]}}")


def test_private_trust_paths_resolve_against_the_config_file(tmp_path: Path):
    signing = _signing(
        "signing:\n  key: keyless\n  keyless: {trust_config: t/trust.json, identity_token_file: /var/run/token}\n"
        "  trusted_root: t/trusted_root.json\n  roots: t/roots.pem\n  rekor_public_keys: [t/rekor.pub]\n", tmp_path)
    assert signing.keyless.trust_config == tmp_path / "t" / "trust.json"
    assert signing.keyless.identity_token_file == Path("/var/run/token")
    assert signing.trusted_root == tmp_path / "t" / "trusted_root.json"
    assert signing.roots == tmp_path / "t" / "roots.pem"
    assert signing.rekor_public_keys == (tmp_path / "t" / "rekor.pub",)
    assert not signing.ignore_tlog and not signing.ignore_sct  # the transparency checks are on by default


def test_a_key_file_builds_a_key_signer_and_a_key_verifier(tmp_path: Path):
    private, _ = generate_keypair(tmp_path)
    signing = _signing(f"signing: {{key: {private}}}", tmp_path)
    signer = signer_from_settings(signing)
    assert isinstance(signer, KeyFileSigner)
    verifier = verifier_from_settings(signing)
    assert isinstance(verifier, PublicKeyVerifier)
    envelope = sign_statement(b"{}", signer)
    assert envelope.verify_signer(verifier).key_id == signer.key_id


def test_keys_and_identities_together_accept_either_and_explain_refusals(tmp_path: Path):
    pki = TestSigstore()
    (tmp_path / "trusted_root.json").write_bytes(pki.trusted_root_json())
    private, public = generate_keypair(tmp_path)
    signing = _signing(
        f"signing:\n  key: {private}\n  public_keys: [{public}]\n  trusted_root: trusted_root.json\n"
        f"  identities: [{{subject: '{SUBJECT}', issuer: '{ISSUER}'}}]\n", tmp_path)
    verifier = verifier_from_settings(signing)
    assert isinstance(verifier, AnyVerifier)
    assert [type(v) for v in verifier.verifiers] == [PublicKeyVerifier, CertificateVerifier]

    by_key = sign_statement(b"{}", KeyFileSigner.from_file(private))
    assert by_key.verify_signer(verifier).key_id.startswith("sha256:")

    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki.issue(key.public_key(), subject=SUBJECT, issuer=ISSUER)
    signature = key.sign(pae(IN_TOTO, b"{}"), ec.ECDSA(hashes.SHA256()))
    wire = json.dumps({"payloadType": IN_TOTO, "payload": base64.b64encode(b"{}").decode(),
                       "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}]}).encode()
    bundle, _ = pki.log_dsse(wire, cert)
    material = CertificateMaterial(cert.public_bytes(serialization.Encoding.PEM), pki.chain_pem(), bundle.to_json())
    assert Envelope.from_json(wire, "t").verify_signer(verifier, material).identity == SUBJECT

    stranger = sign_statement(b"{}", KeyFileSigner(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(VerificationError, match=r"any trusted public key .*; and no signing certificate"):
        stranger.verify_signer(verifier)


def test_keyless_without_identities_has_nothing_to_verify_with(tmp_path: Path):
    with pytest.raises(SigningError, match=r"set signing\.identities"):
        verifier_from_settings(_signing("signing: {key: keyless}", tmp_path))


def test_an_unreadable_key_names_the_file_and_the_fix(tmp_path: Path):
    with pytest.raises(SigningError, match=r"missing\.key.*vulnattest keys generate"):
        signer_from_settings(_signing("signing: {key: missing.key}", tmp_path))
    with pytest.raises(SigningError, match=r"cannot read public key .*missing\.pub"):
        verifier_from_settings(_signing("signing: {key: missing.key}", tmp_path))


def test_kyverno_key_attestors_carry_each_public_key_and_skip_the_log(tmp_path: Path):
    _, old = generate_keypair(tmp_path / "old")
    _, new = generate_keypair(tmp_path / "new")
    signing = _signing(f"signing: {{key: k.key, public_keys: [{old}, {new}, 'awskms:///alias/release']}}", tmp_path)
    entries = kyverno_attestors(signing)
    assert [e["keys"].get("publicKeys") for e in entries[:2]] == [old.read_text(), new.read_text()]
    assert entries[2]["keys"]["kms"] == "awskms:///alias/release"
    for entry in entries:
        # vulnattest does not log key signatures in Rekor, and they carry no certificate
        assert entry["keys"]["rekor"]["ignoreTlog"] is True
        assert entry["keys"]["ctlog"] == {"ignoreSCT": True}


def test_kyverno_keyless_attestors_for_the_public_instance(tmp_path: Path):
    signing = _signing(
        f"signing:\n  key: keyless\n  identities:\n    - {{subject: '{SUBJECT}', issuer: '{ISSUER}'}}\n"
        "    - {subject_regexp: '^https://github.com/acme/', issuer_regexp: '^https://token'}\n", tmp_path)
    assert kyverno_attestors(signing) == [
        {"keyless": {"subject": SUBJECT, "issuer": ISSUER, "rekor": {"url": "https://rekor.sigstore.dev"},
                     "ctlog": {}}},
        {"keyless": {"subjectRegExp": "^https://github.com/acme/", "issuerRegExp": "^https://token",
                     "rekor": {"url": "https://rekor.sigstore.dev"}, "ctlog": {}}},
    ]


def test_kyverno_keyless_attestors_for_a_private_deployment_carry_its_roots_and_log_keys(tmp_path: Path):
    pki = TestSigstore()
    (tmp_path / "trusted_root.json").write_bytes(pki.trusted_root_json())
    signing = _signing(
        "signing:\n  key: keyless\n  trusted_root: trusted_root.json\n  rekor_url: https://rekor.internal\n"
        "  identities: [{subject: ci@acme.example, issuer: https://dex.internal}]\n", tmp_path)
    [entry] = kyverno_attestors(signing)
    keyless = entry["keyless"]
    assert (keyless["subject"], keyless["issuer"]) == ("ci@acme.example", "https://dex.internal")
    assert keyless["roots"] == pki.chain_pem().decode()
    assert keyless["rekor"] == {"url": "https://rekor.internal", "pubkey": pki.rekor_public_pem().decode()}
    assert keyless["ctlog"] == {"pubkey": pki.ctlog_public_pem().decode()}

    opted_out = signing.model_copy(update={"ignore_tlog": True, "ignore_sct": True})
    [entry] = kyverno_attestors(opted_out)
    assert entry["keyless"]["rekor"] == {"url": "https://rekor.internal", "ignoreTlog": True}
    assert entry["keyless"]["ctlog"] == {"ignoreSCT": True}


def _keys_entry(public: Path, *, ignore_tlog: bool = True) -> dict[str, object]:
    return {"keys": {"publicKeys": public.read_text(), "rekor": {"ignoreTlog": ignore_tlog}}}


def test_attestors_read_back_as_kyverno_counts_them(tmp_path: Path):
    from vulnattest.signing.kyverno import verifier_from_attestors

    first_key, first_pub = generate_keypair(tmp_path / "first")
    _, second_pub = generate_keypair(tmp_path / "second")
    envelope = sign_statement(b'{"_type":"https://in-toto.io/Statement/v1"}', KeyFileSigner.from_file(first_key))

    def accepts(attestors: list[dict[str, object]]) -> bool:
        try:
            envelope.verify_signer(verifier_from_attestors(attestors, "policy.yaml"))
        except VerificationError:
            return False
        return True

    first, second = _keys_entry(first_pub), _keys_entry(second_pub)
    assert accepts([{"count": 1, "entries": [second, first]}])
    assert not accepts([{"entries": [second, first]}])  # no count: every entry must accept
    assert not accepts([{"count": 1, "entries": [first]}, {"count": 1, "entries": [second]}])  # every set must pass
    assert accepts([{"count": 1, "entries": [first]}, {"entries": [first]}])
    # Kyverno looks a key signature up in Rekor unless told not to; vulnattest logs none
    with pytest.raises(VerificationError, match=r"entry 1 wants a Rekor entry .* rekor\.ignoreTlog: true"):
        envelope.verify_signer(verifier_from_attestors(
            [{"count": 1, "entries": [_keys_entry(first_pub, ignore_tlog=False)]}], "policy.yaml"))
    with pytest.raises(VerificationError, match=r"policy\.yaml: attestor set 1, entry 1: only keys and keyless"):
        envelope.verify_signer(verifier_from_attestors([{"entries": [{"certificates": {}}]}], "policy.yaml"))


def test_the_generated_attestors_accept_what_the_config_accepts(tmp_path: Path):
    from vulnattest.signing.kyverno import verifier_from_attestors

    key, public = generate_keypair(tmp_path / "keys")
    _, other = generate_keypair(tmp_path / "other")
    envelope = sign_statement(b'{"_type":"https://in-toto.io/Statement/v1"}', KeyFileSigner.from_file(key))
    rotated = SigningSettings(key=key, public_keys=(other, public))
    attestors = [{"count": 1, "entries": kyverno_attestors(rotated)}]
    assert envelope.verify_signer(verifier_from_attestors(attestors, "p")).key_id == \
        envelope.verify_signer(verifier_from_settings(rotated)).key_id
    only_other = [{"count": 1, "entries": kyverno_attestors(SigningSettings(key=key, public_keys=(other,)))}]
    with pytest.raises(VerificationError):
        envelope.verify_signer(verifier_from_attestors(only_other, "p"))


def test_an_attestor_that_cannot_be_checked_refuses_without_sinking_its_set(tmp_path: Path):
    from vulnattest.signing.kyverno import verifier_from_attestors

    key, public = generate_keypair(tmp_path / "keys")
    _, other = generate_keypair(tmp_path / "other")
    envelope = sign_statement(b'{"_type":"https://in-toto.io/Statement/v1"}', KeyFileSigner.from_file(key))
    unsupported = {"keys": {"kms": "gcpkms://projects/p/keys/k", "rekor": {"ignoreTlog": True}}}
    malformed = {"keys": {"publicKeys": "not a key", "rekor": {"ignoreTlog": True}}}
    good = _keys_entry(public)
    envelope.verify_signer(verifier_from_attestors([{"count": 1, "entries": [unsupported, malformed, good]}], "p"))
    envelope.verify_signer(verifier_from_attestors([{"count": 2, "entries": [good, _keys_entry(public)]}], "p"))
    with pytest.raises(VerificationError, match=r"1 of the 2 attestor\(s\) needed .*only publicKeys and awskms"):
        envelope.verify_signer(verifier_from_attestors([{"count": 2, "entries": [good, unsupported]}], "p"))
    with pytest.raises(VerificationError, match=r"entry 2: no PEM public key"):
        envelope.verify_signer(verifier_from_attestors([{"entries": [_keys_entry(other), malformed]}], "p"))
    with pytest.raises(SigningError, match="a count of at least 1, not 'x'"):
        verifier_from_attestors([{"count": "x", "entries": [good]}], "p")


def test_policy_images_are_matched_as_kyverno_names_them():
    from vulnattest.images import ImageRef
    from vulnattest.kyverno import _matches, kyverno_image_name

    assert kyverno_image_name(ImageRef.parse("nginx:1.27")) == "docker.io/library/nginx:1.27"
    pinned = ImageRef.parse(f"ghcr.io/a/b:1@sha256:{'c' * 64}")
    assert kyverno_image_name(pinned) == f"ghcr.io/a/b@sha256:{'c' * 64}"  # the digest wins
    assert _matches("docker.io/library/nginx:1.27", ["docker.io/library/nginx:*"])
    assert not _matches(f"ghcr.io/a/b@sha256:{'c' * 64}", ["ghcr.io/a/b:*"])
    assert _matches("ghcr.io/a/b:1", ["ghcr.io/?/b:1"]) and not _matches("ghcrxio/a/b:1", ["ghcr.io/*"])
    assert not _matches("ghcr.io/a/b:1", ["ghcr.io/[ab]/b:1"])  # no character classes in Kyverno's wildcards
