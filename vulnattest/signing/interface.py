"""What signs attestations and what checks them: one `Signer` and one `Verifier` protocol for keys, KMS and keyless.

Signatures are ECDSA P-256 over SHA-256, DER encoded, over the DSSE pre-authentication encoding, as cosign writes them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.dsse import Envelope as _SslibEnvelope
from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import Signature, SSlibKey

from vulnattest.errors import SigningError, TransientError, VerificationError


class TransientSigningError(SigningError, TransientError):
    """A signing service (KMS, Fulcio, Rekor) failed in a way that may pass: throttling, 5xx, a dropped connection."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding (securesystemslib's, so the bytes match the spec's)."""
    return _SslibEnvelope(payload, payload_type, {}).pae()


@dataclass(frozen=True)
class CertificateMaterial:
    """What a keyless signature carries beside itself, as cosign's layer annotations hold it.

    `certificate` is the PEM leaf, `chain` the PEM intermediates and root, `rekor_bundle` cosign's bundle JSON
    (``{"SignedEntryTimestamp", "Payload": {"body", "integratedTime", "logIndex", "logID"}}``) or None.
    """

    certificate: bytes
    chain: bytes = b""
    rekor_bundle: bytes | None = None
    bundle: bytes | None = None
    """The Sigstore bundle the signature was made with (what the bundle layout attaches as it is)."""
    envelope: bytes | None = None
    """The DSSE envelope exactly as the log recorded it (its sha256 is the entry's ``envelopeHash``): cosign checks
    the ``.att`` layer's bytes against it, so that layout stores these bytes."""


@dataclass(frozen=True)
class DsseSignature:
    """One DSSE signature and, for keyless signing, the certificate material that proves who made it."""

    signature: bytes
    material: CertificateMaterial | None = None
    key_hint: str | None = None
    """For a key: base64 of the sha256 of its DER public key, as a Sigstore bundle names the key."""


class Signer(Protocol):
    """Signs DSSE payloads; never reveals key material or tokens."""

    @property
    def key_id(self) -> str:
        """Who signs, safe to log: a public-key fingerprint, a KMS key URI, or ``keyless``."""
        ...

    def sign_dsse(self, payload_type: str, payload: bytes) -> DsseSignature:
        """Sign the DSSE PAE of `payload`; return the signature and any certificate material."""
        ...

    def close(self) -> None:
        """Release what the signer holds open (a KMS client's connection pool)."""
        ...


@dataclass(frozen=True)
class VerifiedSigner:
    """Who made a signature that verified: a trusted key's fingerprint, or a certificate identity and issuer."""

    key_id: str
    identity: str | None = None
    issuer: str | None = None
    signed_at: datetime | None = None


class Verifier(Protocol):
    """Checks a DSSE envelope's signatures against configured keys or certificate identities."""

    def verify_dsse(
        self, payload_type: str, payload: bytes, signatures: Sequence[bytes], material: CertificateMaterial | None,
    ) -> VerifiedSigner:
        """Return who signed; raise VerificationError naming why no signature is acceptable."""
        ...


class KeySigner:
    """Base for signers that hold (or reach) one ECDSA key: sign the PAE, carry no certificate."""

    @property
    def key_id(self) -> str:
        """A loggable name of the key."""
        raise NotImplementedError

    def sign(self, data: bytes) -> bytes:
        """Return the DER-encoded ECDSA P-256 / SHA-256 signature over `data`."""
        raise NotImplementedError

    def public_key_der(self) -> bytes:
        """The public key, DER SubjectPublicKeyInfo."""
        raise NotImplementedError

    def sign_dsse(self, payload_type: str, payload: bytes) -> DsseSignature:
        """Sign the PAE of `payload`."""
        hint = base64.b64encode(hashlib.sha256(self.public_key_der()).digest()).decode()
        return DsseSignature(self.sign(pae(payload_type, payload)), key_hint=hint)

    def close(self) -> None:
        """Release what reaching the key holds open; a key in memory holds nothing."""


def fingerprint(public_key_der: bytes) -> str:
    """A short, loggable fingerprint of a public key: ``sha256:`` and the first 16 hex digits."""
    return "sha256:" + hashlib.sha256(public_key_der).hexdigest()[:16]


@dataclass(frozen=True)
class TrustedKey:
    """One trusted public key and where it came from."""

    key_id: str
    source: str
    key: SSlibKey


class PublicKeyVerifier:
    """Checks signatures against several trusted public keys (so keys can be rotated)."""

    def __init__(self, keys: Sequence[TrustedKey]) -> None:
        if not keys:
            raise SigningError("no public key to verify with: set signing.public_keys or signing.key")
        self.keys = tuple(keys)

    @classmethod
    def from_pem_files(cls, paths: Sequence[Path]) -> PublicKeyVerifier:
        """Load PEM public keys (``-----BEGIN PUBLIC KEY-----``), as ``cosign.pub`` files are written."""
        keys = []
        for path in paths:
            try:
                pem = path.read_bytes()
            except OSError as e:
                raise SigningError(f"cannot read public key {path}: {e.strerror}") from e
            keys.append(load_public_key(pem, str(path)))
        return cls(keys)

    def verify(self, data: bytes, signature: bytes) -> TrustedKey | None:
        """Return the key that made `signature` over `data`, or None when no trusted key did."""
        for trusted in self.keys:
            # DSSE key ids are hints (cosign leaves them empty), so every trusted key is tried
            try:
                trusted.key.verify_signature(Signature(keyid=trusted.key.keyid, sig=signature.hex()), data)
            except (UnverifiedSignatureError, SslibVerificationError):
                continue
            return trusted
        return None

    def verify_dsse(
        self, payload_type: str, payload: bytes, signatures: Sequence[bytes], material: CertificateMaterial | None,
    ) -> VerifiedSigner:
        """Accept the envelope when any signature verifies with a trusted key; certificates are not consulted."""
        data = pae(payload_type, payload)
        for signature in signatures:
            key = self.verify(data, signature)
            if key is not None:
                return VerifiedSigner(key_id=key.key_id)
        raise VerificationError(
            "signature does not verify with any trusted public key (tampered, or signed by an unknown key)"
        )


def load_public_key(pem: bytes, source: str) -> TrustedKey:
    """Parse a PEM public key; `source` names it in errors."""
    try:
        public = serialization.load_pem_public_key(pem)
    except ValueError as e:
        raise SigningError(f"{source} is not a PEM public key: {e}") from e
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise SigningError(f"{source}: only ECDSA P-256 public keys are supported")
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return TrustedKey(key_id=fingerprint(der), source=source, key=SSlibKey.from_crypto(public))
