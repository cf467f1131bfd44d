"""What signs attestations and what checks their signatures: ECDSA P-256 over SHA-256, DER encoded, as cosign does."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import Signature, SSlibKey

from vulnattest.errors import SigningError


class Signer(Protocol):
    """Signs bytes; never reveals its key material."""

    @property
    def key_id(self) -> str:
        """A short public fingerprint of the signing key, safe to log."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Return the DER-encoded signature over `data`."""
        ...


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
        return cls([load_public_key(path.read_bytes(), str(path)) for path in paths])

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
