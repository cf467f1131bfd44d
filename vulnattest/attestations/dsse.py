"""DSSE envelopes as cosign writes them: base64 payload, one signature with an empty key id."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from pydantic import ValidationError

from vulnattest.errors import VerificationError
from vulnattest.signing.interface import (
    CertificateMaterial,
    PublicKeyVerifier,
    Signer,
    TrustedKey,
    VerifiedSigner,
    Verifier,
)
from vulnattest.signing.interface import pae as _pae
from vulnattest.wire import DsseEnvelope, EnvelopeSignature, Statement, first_error

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


@dataclass(frozen=True)
class Envelope:
    """A signed DSSE envelope: the payload bytes and the raw signatures over its PAE.

    `material` is what keyless signing adds (certificate, chain, Rekor bundle); cosign keeps it in the layer's
    annotations, not in the envelope JSON.
    """

    payload: bytes
    payload_type: str
    signatures: tuple[bytes, ...]
    material: CertificateMaterial | None = None
    key_hint: str | None = None
    """For a key signature: the key's hint (see `DsseSignature`), which a bundle carries."""

    def pae(self) -> bytes:
        """The pre-authentication encoding the signatures cover."""
        return pae(self.payload_type, self.payload)

    def to_json(self) -> bytes:
        """Serialise as cosign does: payload type, payload, and each signature with an empty key id."""
        return DsseEnvelope(
            payload_type=self.payload_type, payload=base64.b64encode(self.payload).decode(),
            signatures=[EnvelopeSignature(keyid="", sig=base64.b64encode(s).decode()) for s in self.signatures],
        ).to_json()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Envelope:
        """Parse untrusted envelope bytes; `where` names the source in errors."""
        try:
            wire = DsseEnvelope.read_json(data)
            return cls(
                payload=base64.b64decode(wire.payload, validate=True),
                payload_type=wire.payload_type,
                signatures=tuple(base64.b64decode(s.sig, validate=True) for s in wire.signatures),
            )
        except ValidationError as e:
            raise VerificationError(f"{where}: not a DSSE envelope ({first_error(e)})") from None
        except ValueError as e:
            raise VerificationError(f"{where}: not a DSSE envelope ({e})") from e

    def statement(self, where: str) -> Statement:
        """Decode the in-toto statement inside."""
        if self.payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise VerificationError(f"{where}: payload type {self.payload_type!r} is not {IN_TOTO_PAYLOAD_TYPE}")
        try:
            return Statement.read_json(self.payload)
        except ValidationError as e:
            raise VerificationError(f"{where}: payload is not an in-toto statement ({first_error(e)})") from None

    def verify_signer(self, verifier: Verifier, material: CertificateMaterial | None = None) -> VerifiedSigner:
        """Return who signed, by keys or certificate identity; raise VerificationError saying why not.

        `material` defaults to the envelope's own (set when it was signed keyless).
        """
        return verifier.verify_dsse(self.payload_type, self.payload, self.signatures, material or self.material)

    def verify(self, verifier: PublicKeyVerifier) -> TrustedKey | None:
        """Return the trusted key that signed this envelope, or None (public keys only; see `verify_signer`)."""
        data = self.pae()
        for signature in self.signatures:
            key = verifier.verify(data, signature)
            if key is not None:
                return key
        return None


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding (securesystemslib's, so the bytes match the spec's)."""
    return _pae(payload_type, payload)


def sign_statement(statement: bytes, signer: Signer) -> Envelope:
    """Sign an in-toto statement into a DSSE envelope (with certificate material when signed keyless)."""
    signed = signer.sign_dsse(IN_TOTO_PAYLOAD_TYPE, statement)
    return Envelope(statement, IN_TOTO_PAYLOAD_TYPE, (signed.signature,), signed.material, signed.key_hint)
