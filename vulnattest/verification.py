"""Checks one image's vuln attestations the way Kyverno's ``verifyImages`` (``type: Cosign``) does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vulnattest.attestations.cosign import read_attestations
from vulnattest.attestations.dsse import Envelope
from vulnattest.attestations.statement import VULN_PREDICATE_TYPE
from vulnattest.errors import VerificationError
from vulnattest.registry import RegistryClient, ResolvedImage
from vulnattest.signing.interface import PublicKeyVerifier

OLD_VULN_PREDICATE_TYPE = "cosign.sigstore.dev/attestation/vuln/v1"


@dataclass(frozen=True)
class AttestationCheck:
    """The result of checking one attached vuln attestation."""

    layer_digest: str
    ok: bool
    reason: str = ""
    scan_finished: datetime | None = None
    key_id: str | None = None
    predicate: dict[str, Any] | None = None


def parse_rfc3339(text: Any) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime; raise ValueError otherwise."""
    if not isinstance(text, str) or "T" not in text:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.astimezone(UTC)


def check_attestations(
    client: RegistryClient, image: ResolvedImage, verifier: PublicKeyVerifier, now: datetime | None = None,
) -> list[AttestationCheck]:
    """Check every layer whose statement claims a vuln predicate; layers of other types are not Kyverno's concern."""
    now = now or datetime.now(UTC)
    checks = []
    for attached in read_attestations(client, image):
        where = f"{image.image.pinned} attestation {attached.descriptor.get('digest')}"
        annotated = attached.predicate_type
        if annotated not in (VULN_PREDICATE_TYPE, OLD_VULN_PREDICATE_TYPE):
            continue
        checks.append(_check_layer(attached.envelope_bytes, str(attached.descriptor.get("digest")), annotated,
                                   image, verifier, now, where))
    return checks


def _check_layer(
    envelope_bytes: bytes, layer_digest: str, annotated: str, image: ResolvedImage, verifier: PublicKeyVerifier,
    now: datetime, where: str,
) -> AttestationCheck:
    def fail(reason: str, **extra: Any) -> AttestationCheck:
        return AttestationCheck(layer_digest, ok=False, reason=reason, **extra)

    try:
        envelope = Envelope.from_json(envelope_bytes, where)
    except VerificationError as e:
        return fail(str(e))
    key = envelope.verify(verifier)
    if key is None:
        return fail("signature does not verify with any trusted public key (tampered, or signed by an unknown key)")
    try:
        statement = envelope.statement(where)
    except VerificationError as e:
        return fail(str(e), key_id=key.key_id)
    predicate_type = statement.get("predicateType")
    if predicate_type != VULN_PREDICATE_TYPE:
        return fail(
            f"predicate type {predicate_type!r} is not {VULN_PREDICATE_TYPE!r} (Kyverno compares it exactly; "
            "re-attest with a current tool)", key_id=key.key_id,
        )
    subjects = statement.get("subject") or []
    wanted = image.digest.removeprefix("sha256:")
    if not any(isinstance(s, dict) and (s.get("digest") or {}).get("sha256") == wanted for s in subjects):
        return fail(f"statement subject is not {image.digest} (an attestation of another image)", key_id=key.key_id)
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        return fail("statement has no predicate object", key_id=key.key_id)
    try:
        finished = parse_rfc3339((predicate.get("metadata") or {}).get("scanFinishedOn"))
    except ValueError as e:
        return fail(f"metadata.scanFinishedOn: {e}", key_id=key.key_id)
    if finished > now:
        return fail(f"metadata.scanFinishedOn {finished.isoformat()} is in the future", key_id=key.key_id)
    return AttestationCheck(layer_digest, ok=True, scan_finished=finished, key_id=key.key_id, predicate=predicate)
