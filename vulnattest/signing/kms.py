"""Signing with an AWS KMS key (``awskms://``), through boto3: the private key never leaves KMS.

URI forms, as cosign spells them: ``awskms:///<key id>``, ``awskms:///alias/<name>``, ``awskms:///arn:aws:kms:…``,
and ``awskms://<host[:port]>/<key>`` to reach KMS at ``https://<host[:port]>``. For a plain-HTTP endpoint
(an emulator), set boto3's own ``AWS_ENDPOINT_URL_KMS``. Credentials come from boto3's usual chain.

KMS signs at most 4096 bytes with ``MessageType=RAW`` and hashes them itself; longer messages are hashed here and
sent as ``MessageType=DIGEST``. Every signature is checked against the key's public half before it is used, so a
service that signed something else (moto's emulator hashes ``DIGEST`` messages a second time) fails loudly here
instead of producing attestations nobody can verify.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from vulnattest.errors import SigningError, botocore_transient_errors
from vulnattest.signing.interface import KeySigner, TransientSigningError, TrustedKey, load_public_key

log = logging.getLogger(__name__)

SCHEME = "awskms://"
RAW_LIMIT = 4096
_TRANSIENT_CODES = frozenset({
    "ThrottlingException", "KMSInternalException", "DependencyTimeoutException", "RequestLimitExceeded",
    "ServiceUnavailableException", "InternalFailure",
})


@dataclass(frozen=True)
class AwsKmsRef:
    """A parsed ``awskms://`` URI: the key (id, alias or ARN) and an optional endpoint."""

    uri: str
    key: str
    endpoint_url: str | None
    region: str | None

    @classmethod
    def parse(cls, uri: str) -> AwsKmsRef:
        """Parse ``awskms://[host[:port]]/<key>``; the region is taken from an ARN when there is one."""
        if not uri.startswith(SCHEME):
            raise SigningError(f"{uri!r} is not an awskms:// URI")
        host, sep, key = uri.removeprefix(SCHEME).partition("/")
        if not sep or not key:
            raise SigningError(
                f"{uri!r}: expected awskms:///<key id>, awskms:///alias/<name> or awskms:///arn:aws:kms:<region>:…"
            )
        region = key.split(":")[3] if key.startswith("arn:") and key.count(":") >= 5 else None
        return cls(uri=uri, key=key, endpoint_url=f"https://{host}" if host else None, region=region or None)


def kms_client(ref: AwsKmsRef, *, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 KMS client for `ref`; explicit arguments win over what the URI says.

    botocore's own retries are off: failures surface as TransientSigningError and the calling task retries them.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.client(
            "kms", endpoint_url=endpoint_url or ref.endpoint_url, region_name=region or ref.region,
            config=Config(retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=10, read_timeout=30),
        )
    except BotoCoreError as e:  # no region, most often
        raise SigningError(f"cannot open AWS KMS for {ref.uri}: {e}; set AWS_REGION, or use a key ARN (it names "
                           "its region)") from e


class AwsKmsSigner(KeySigner):
    """Signs with an ECC_NIST_P256 SIGN_VERIFY key in AWS KMS (ECDSA_SHA_256), DER signatures as cosign's."""

    def __init__(self, ref: AwsKmsRef, client: Any) -> None:
        self._ref = ref
        self._client = client
        self._public: ec.EllipticCurvePublicKey | None = None

    @classmethod
    def from_uri(cls, uri: str, *, endpoint_url: str | None = None, region: str | None = None) -> AwsKmsSigner:
        """A signer for the key `uri` names; fetches the public key now, so a wrong key fails before any scan."""
        ref = AwsKmsRef.parse(uri)
        signer = cls(ref, kms_client(ref, endpoint_url=endpoint_url, region=region))
        signer.public_key()
        return signer

    def __repr__(self) -> str:
        return f"AwsKmsSigner({self._ref.uri!r})"

    @property
    def key_id(self) -> str:
        """The key's URI (a key id, alias or ARN is not a secret)."""
        return self._ref.uri

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key's public half (GetPublicKey), fetched once."""
        if self._public is None:
            response = _call(self._ref, "GetPublicKey", lambda: self._client.get_public_key(KeyId=self._ref.key))
            if response.get("KeyUsage") not in (None, "SIGN_VERIFY"):
                raise SigningError(f"{self._ref.uri} is a {response['KeyUsage']} key; create an SIGN_VERIFY key")
            public = serialization.load_der_public_key(response["PublicKey"])
            if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
                raise SigningError(
                    f"{self._ref.uri} is a {response.get('KeySpec', 'non-P-256')} key; vulnattest signs with "
                    "ECC_NIST_P256 (ECDSA P-256), as cosign does"
                )
            self._public = public
        return self._public

    def public_key_pem(self) -> bytes:
        """The public key as PEM, for ``cosign.pub``-style files and Kyverno's ``publicKeys``."""
        return self.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_key_der(self) -> bytes:
        """The public key, DER SubjectPublicKeyInfo."""
        return self.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)

    def close(self) -> None:
        """Close the KMS client's connection pool."""
        self._client.close()

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 over `data`: RAW up to 4096 bytes, DIGEST beyond; checked before it is returned."""
        public = self.public_key()
        if len(data) <= RAW_LIMIT:
            message, message_type = data, "RAW"
        else:
            message, message_type = hashlib.sha256(data).digest(), "DIGEST"
        response = _call(self._ref, "Sign", lambda: self._client.sign(
            KeyId=self._ref.key, Message=message, MessageType=message_type, SigningAlgorithm="ECDSA_SHA_256",
        ))
        signature: bytes = response["Signature"]
        try:
            public.verify(signature, hashlib.sha256(data).digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        except InvalidSignature as e:
            raise SigningError(
                f"{self._ref.uri} returned a signature that does not verify over the {message_type} message it was "
                "sent: the KMS signed something else (an emulator that hashes DIGEST messages again does this)"
            ) from e
        log.debug("signed %d bytes with %s (%s)", len(data), self._ref.uri, message_type)
        return signature


def kms_public_key(uri: str, *, endpoint_url: str | None = None, region: str | None = None) -> TrustedKey:
    """The trusted public key of a KMS key, for verification (GetPublicKey)."""
    signer = AwsKmsSigner.from_uri(uri, endpoint_url=endpoint_url, region=region)
    return load_public_key(signer.public_key_pem(), uri)


def _call(ref: AwsKmsRef, operation: str, call: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"KMS {operation} on {ref.uri} failed: {code or status}"
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            raise TransientSigningError(message + "; will retry") from e
        if code in ("NotFoundException", "AccessDeniedException", "InvalidKeyUsageException", "DisabledException"):
            message += "; check the key id or alias and that these AWS credentials may use it"
        raise SigningError(message) from e
    except botocore_transient_errors() as e:
        raise TransientSigningError(
            f"KMS {operation} on {ref.uri}: cannot connect, or no answer ({type(e).__name__}); will retry"
        ) from e
    except BotoCoreError as e:
        raise SigningError(f"KMS {operation} on {ref.uri} failed: {type(e).__name__}; check AWS credentials and "
                           "region (AWS_REGION)") from e
