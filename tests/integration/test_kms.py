"""AWS KMS signing and verification, against moto's KMS server over HTTP.

moto's ``Sign`` hashes a ``MessageType=DIGEST`` message a second time (real KMS signs the digest as given), so a
DIGEST signature from moto does not verify over the message. vulnattest sends messages of up to 4096 bytes as
``RAW`` (KMS hashes them: right on both), and checks every signature before using it; the last tests pin that the
check catches moto's DIGEST behaviour rather than shipping an unverifiable attestation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from tests.conftest import kms_signing_key, short_timeouts
from vulnattest.attestations import sign_statement
from vulnattest.config import SigningSettings
from vulnattest.errors import SigningError, TransientError
from vulnattest.signing.factory import signer_from_settings, verifier_from_settings
from vulnattest.signing.interface import PublicKeyVerifier, pae
from vulnattest.signing.kms import RAW_LIMIT, AwsKmsRef, AwsKmsSigner, kms_public_key


@pytest.fixture(scope="module")
def kms(s3_endpoint: str) -> Any:
    return boto3.client("kms", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture(scope="module")
def alias(s3_endpoint: str) -> str:
    return kms_signing_key(s3_endpoint, "vulnattest-test")


@pytest.fixture
def moto_kms_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3's own variable for a plain-HTTP KMS endpoint, as a user pointing at an emulator would set it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", s3_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_endpoint


def _statement(size: int = 200) -> bytes:
    return b'{"_type":"https://in-toto.io/Statement/v1","predicate":"' + b"x" * size + b'"}'


def test_uris_parse_as_cosign_spells_them():
    assert AwsKmsRef.parse("awskms:///alias/a") == AwsKmsRef("awskms:///alias/a", "alias/a", None, None)
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert AwsKmsRef.parse(f"awskms:///{arn}").region == "eu-west-1"
    assert AwsKmsRef.parse("awskms://kms.internal:4443/alias/a").endpoint_url == "https://kms.internal:4443"
    with pytest.raises(SigningError, match="expected awskms:///<key id>"):
        AwsKmsRef.parse("awskms://alias-without-slash")


def test_kms_signed_attestations_verify_with_the_kms_public_key(moto_kms_env: str, alias: str):
    signer = signer_from_settings(SigningSettings(key=alias))
    assert isinstance(signer, AwsKmsSigner)
    assert signer.key_id == alias
    envelope = sign_statement(_statement(), signer)

    # verify by fetching the public key from KMS, and by the exported PEM alone (what Kyverno gets)
    by_kms = verifier_from_settings(SigningSettings(key=alias))
    assert envelope.verify_signer(by_kms).key_id.startswith("sha256:")
    public = serialization.load_pem_public_key(signer.public_key_pem())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(envelope.signatures[0], pae(envelope.payload_type, envelope.payload), ec.ECDSA(hashes.SHA256()))

    other = PublicKeyVerifier([kms_public_key(alias)])
    assert envelope.verify(other) is other.keys[0]


def test_messages_up_to_the_raw_limit_are_signed_raw(s3_endpoint: str, alias: str):
    signer = AwsKmsSigner.from_uri(alias, endpoint_url=s3_endpoint, region="us-east-1")
    message = b"m" * RAW_LIMIT
    signature = signer.sign(message)
    signer.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_moto_hashes_digest_messages_again(kms: Any, alias: str):
    # the emulator's behaviour the signer guards against, shown directly
    message = b"m" * (RAW_LIMIT + 1)
    digest = hashlib.sha256(message).digest()
    signature = kms.sign(KeyId=alias.removeprefix("awskms:///"), Message=digest, MessageType="DIGEST",
                         SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    der = kms.get_public_key(KeyId=alias.removeprefix("awskms:///"))["PublicKey"]
    public = serialization.load_der_public_key(der)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    with pytest.raises(InvalidSignature):
        public.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    public.verify(signature, digest, ec.ECDSA(hashes.SHA256()))  # it signed sha256(digest)


def test_a_signature_over_something_else_is_caught_before_use(s3_endpoint: str, alias: str):
    signer = AwsKmsSigner.from_uri(alias, endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(SigningError, match="does not verify over the DIGEST message"):
        signer.sign(b"m" * (RAW_LIMIT + 1))


def test_a_missing_key_names_the_uri_and_what_to_check(s3_endpoint: str):
    with pytest.raises(SigningError, match=r"awskms:///alias/nope.*NotFoundException.*check the key id") as raised:
        AwsKmsSigner.from_uri("awskms:///alias/nope", endpoint_url=s3_endpoint, region="us-east-1")
    assert not isinstance(raised.value, TransientError)


def test_a_key_that_cannot_sign_ecdsa_p256_is_refused(kms: Any, s3_endpoint: str):
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(SigningError, match="ECC_NIST_P256"):
        AwsKmsSigner.from_uri(f"awskms:///{rsa}", endpoint_url=s3_endpoint, region="us-east-1")


def test_an_unreachable_kms_is_transient(alias: str):
    with pytest.raises(TransientError, match="cannot connect"):
        AwsKmsSigner.from_uri(alias, endpoint_url="http://127.0.0.1:9", region="us-east-1")


def test_no_region_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))  # no profile that names one either
    with pytest.raises(SigningError, match=r"cannot open AWS KMS for awskms:///alias/x: .*set AWS_REGION"):
        AwsKmsSigner.from_uri("awskms:///alias/x")


def test_a_kms_that_stops_answering_is_worth_a_retry(silent_endpoint: str):
    client = boto3.client("kms", endpoint_url=silent_endpoint, region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s", config=short_timeouts())
    signer = AwsKmsSigner(AwsKmsRef.parse("awskms:///alias/vulnattest"), client)
    with pytest.raises(TransientError, match=r"awskms:///alias/vulnattest: cannot connect, or no answer \(ReadTimeout"):
        signer.sign(b"statement")


def test_a_kms_that_signs_digests_as_given_serves_messages_of_any_size(kms_endpoint: str):
    # the AWS-faithful server (tests/kms_server.py): a DIGEST is signed as given, a RAW message over 4 KiB refused
    kms = boto3.client("kms", endpoint_url=kms_endpoint, region_name="us-east-1")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(kms.exceptions.ClientError, match="at most 4096 bytes"):
        kms.sign(KeyId=key, Message=b"m" * (RAW_LIMIT + 1), MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")

    signer = AwsKmsSigner.from_uri(f"awskms:///{key}", endpoint_url=kms_endpoint, region="us-east-1")
    envelope = sign_statement(_statement(size=300_000), signer)
    public = serialization.load_pem_public_key(signer.public_key_pem())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(envelope.signatures[0], pae(envelope.payload_type, envelope.payload), ec.ECDSA(hashes.SHA256()))
