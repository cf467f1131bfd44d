"""DSSE envelopes as cosign writes them: base64 payload, one signature with an empty key id."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

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

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


class _WireSignature(BaseModel):
    keyid: str = ""
    sig: str


class _WireEnvelope(BaseModel):
    payloadType: str
    payload: str
    signatures: list[_WireSignature]


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
        """Serialise as cosign does (the payload's base64 written as it is: it needs no JSON escaping)."""
        signatures = [{"keyid": "", "sig": base64.b64encode(s).decode()} for s in self.signatures]
        return b"".join([b'{"payloadType":', orjson.dumps(self.payload_type), b',"payload":"',
                         base64.b64encode(self.payload), b'","signatures":', orjson.dumps(signatures), b"}"])

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Envelope:
        """Parse untrusted envelope bytes; `where` names the source in errors."""
        try:
            wire = _WireEnvelope.model_validate_json(data)
            return cls(
                payload=base64.b64decode(wire.payload, validate=True),
                payload_type=wire.payloadType,
                signatures=tuple(base64.b64decode(s.sig, validate=True) for s in wire.signatures),
            )
        except (ValidationError, ValueError) as e:
            raise VerificationError(f"{where}: not a DSSE envelope ({e})") from e

    def statement(self, where: str) -> dict[str, Any]:
        """Decode the in-toto statement inside."""
        if self.payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise VerificationError(f"{where}: payload type {self.payload_type!r} is not {IN_TOTO_PAYLOAD_TYPE}")
        try:
            statement = orjson.loads(self.payload)
        except orjson.JSONDecodeError as e:
            raise VerificationError(f"{where}: payload is not JSON ({e})") from e
        if not isinstance(statement, dict):
            raise VerificationError(f"{where}: payload is not an in-toto statement")
        return statement

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
