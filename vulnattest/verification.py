"""Checks one image's vuln attestations the way Kyverno's ``verifyImages`` does: in cosign's ``.att`` layout
(``type: Cosign``) and as Sigstore bundle referrers (``type: SigstoreBundle``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from vulnattest.attestations.bundle import read_bundles
from vulnattest.attestations.cosign import read_attestations
from vulnattest.attestations.dsse import Envelope
from vulnattest.attestations.statement import VULN_PREDICATE_TYPE
from vulnattest.errors import VerificationError
from vulnattest.registry import RegistryClient, ResolvedImage
from vulnattest.signing.certificates import RekorBundle
from vulnattest.signing.interface import CertificateMaterial, Verifier

OLD_VULN_PREDICATE_TYPE = "cosign.sigstore.dev/attestation/vuln/v1"
VULN_TYPES = frozenset({VULN_PREDICATE_TYPE, OLD_VULN_PREDICATE_TYPE})
LEGACY, BUNDLE = "legacy", "bundle"
LAYOUTS = {"legacy": (LEGACY,), "bundle": (BUNDLE,), "both": (LEGACY, BUNDLE)}
"""The config's ``attach`` value: which layouts are written, so which ones admission is expected to read."""


class Check(StrEnum):
    """The check an attestation failed, in the order they run."""

    ENVELOPE = "envelope"
    SIGNATURE = "signature"
    STATEMENT = "statement"
    PREDICATE_TYPE = "predicate-type"
    SUBJECT = "subject"
    PREDICATE = "predicate"
    SCAN_TIME = "scan-time"


# cosign drops an attestation that fails one of these before Kyverno sees it (signature and claim verification,
# then Kyverno's exact type match); the rest fail Kyverno's conditions on an attestation it did select.
DROPPED_BEFORE_CONDITIONS = frozenset(
    {Check.ENVELOPE, Check.SIGNATURE, Check.STATEMENT, Check.PREDICATE_TYPE, Check.SUBJECT}
)


@dataclass(frozen=True)
class AttestationCheck:
    """The result of checking one attached vuln attestation."""

    layer_digest: str
    ok: bool
    reason: str = ""
    scan_finished: datetime | None = None
    key_id: str | None = None
    predicate: dict[str, Any] | None = None
    failed: Check | None = None

    @property
    def reaches_conditions(self) -> bool:
        """True when Kyverno would evaluate its conditions on this attestation (so it can block a Pod)."""
        return self.ok or self.failed not in DROPPED_BEFORE_CONDITIONS


def parse_rfc3339(text: Any) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime; raise ValueError otherwise."""
    if not isinstance(text, str) or "T" not in text:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.astimezone(UTC)


def check_attestations(
    client: RegistryClient, image: ResolvedImage, verifier: Verifier, now: datetime | None = None,
    clock_skew: timedelta = timedelta(0), layouts: tuple[str, ...] = (LEGACY,),
) -> list[AttestationCheck]:
    """Check every attestation that claims a vuln predicate in each of `layouts`; other types are not Kyverno's
    concern. A scan time up to `clock_skew` past `now` is not "in the future" (the scanner's clock may run ahead).
    """
    now = (now or datetime.now(UTC)) + clock_skew
    checks = _legacy_checks(client, image, verifier, now) if LEGACY in layouts else []
    if BUNDLE in layouts:
        checks += _bundle_checks(client, image, verifier, now)
    return checks


def _bundle_checks(client: RegistryClient, image: ResolvedImage, verifier: Verifier,
                   now: datetime) -> list[AttestationCheck]:
    """Kyverno's ``type: SigstoreBundle``: every bundle referrer whose statement has the exact vuln type."""
    checks = []
    for attached in read_bundles(client, image):
        where = f"{image.image.pinned} bundle {attached.referrer.digest}"
        try:
            envelope = attached.envelope(where)
            predicate_type = envelope.statement(where).get("predicateType")
        except VerificationError:
            continue  # Kyverno skips a bundle whose statement it cannot read when it filters by type
        if predicate_type != VULN_PREDICATE_TYPE:
            continue
        checks.append(_check_envelope(envelope, attached.referrer.digest, image, verifier, now, where))
    return checks


def _legacy_checks(client: RegistryClient, image: ResolvedImage, verifier: Verifier,
                   now: datetime) -> list[AttestationCheck]:
    """Kyverno's ``type: Cosign``: every ``.att`` layer that claims a vuln predicate (by annotation or statement)."""
    checks = []
    for attached in read_attestations(client, image):
        where = f"{image.image.pinned} attestation {attached.descriptor.get('digest')}"
        annotated = attached.predicate_type
        if annotated not in VULN_TYPES:
            try:
                annotated = attached.statement_predicate_type(where)
            except VerificationError:
                continue
            if annotated not in VULN_TYPES:
                continue
        digest = str(attached.descriptor.get("digest"))
        material = attached.certificate_material()
        try:
            envelope = Envelope.from_json(attached.envelope_bytes, where)
            _check_logged_envelope(attached.envelope_bytes, material, where)
        except VerificationError as e:
            checks.append(AttestationCheck(digest, ok=False, reason=str(e), failed=Check.ENVELOPE))
            continue
        checks.append(_check_envelope(envelope, digest, image, verifier, now, where, material))
    return checks


def _check_logged_envelope(envelope_bytes: bytes, material: CertificateMaterial | None, where: str) -> None:
    """A keyless ``.att`` layer must hold the very envelope its Rekor ``dsse`` entry recorded: cosign compares the
    layer's sha256 with the entry's ``envelopeHash`` (and refuses with "matching bundle to payload")."""
    if material is None or material.rekor_bundle is None:
        return
    try:
        entry = json.loads(RekorBundle.from_json(material.rekor_bundle).body)
        spec = entry["spec"]
        # dsse records it as envelopeHash, intoto as content.hash (cosign's bundleHash reads either)
        recorded = (spec["envelopeHash"] if entry.get("kind") == "dsse" else spec["content"]["hash"])["value"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return  # an unreadable entry is the signature check's to refuse, with its own reason
    if recorded is not None and recorded != hashlib.sha256(envelope_bytes).hexdigest():
        raise VerificationError(f"{where}: the layer holds another serialisation of the envelope than the one Rekor "
                                "logged (its envelopeHash); cosign and Kyverno refuse it: attest the image again")


def _check_envelope(
    envelope: Envelope, layer_digest: str, image: ResolvedImage, verifier: Verifier, now: datetime, where: str,
    material: CertificateMaterial | None = None,
) -> AttestationCheck:
    def fail(failed: Check, reason: str, **extra: Any) -> AttestationCheck:
        return AttestationCheck(layer_digest, ok=False, reason=reason, failed=failed, **extra)

    try:
        # keys or certificate identity, with the keyless material (the .att layer's annotations, or the bundle's)
        key = envelope.verify_signer(verifier, material)
    except VerificationError as e:
        return fail(Check.SIGNATURE, str(e))
    try:
        statement = envelope.statement(where)
    except VerificationError as e:
        return fail(Check.STATEMENT, str(e), key_id=key.key_id)
    predicate_type = statement.get("predicateType")
    if predicate_type != VULN_PREDICATE_TYPE:
        return fail(
            Check.PREDICATE_TYPE,
            f"predicate type {predicate_type!r} is not {VULN_PREDICATE_TYPE!r} (Kyverno compares it exactly; "
            "re-attest with a current tool)", key_id=key.key_id,
        )
    subjects = statement.get("subject") or []
    wanted = image.digest.removeprefix("sha256:")
    if not any(isinstance(s, dict) and (s.get("digest") or {}).get("sha256") == wanted for s in subjects):
        return fail(Check.SUBJECT, f"statement subject is not {image.digest} (an attestation of another image)",
                    key_id=key.key_id)
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        return fail(Check.PREDICATE, "statement has no predicate object", key_id=key.key_id)
    try:
        finished = parse_rfc3339((predicate.get("metadata") or {}).get("scanFinishedOn"))
    except ValueError as e:
        return fail(Check.SCAN_TIME, f"metadata.scanFinishedOn: {e}", key_id=key.key_id, predicate=predicate)
    if finished > now:
        return fail(Check.SCAN_TIME, f"metadata.scanFinishedOn {finished.isoformat()} is in the future",
                    key_id=key.key_id, predicate=predicate)
    return AttestationCheck(layer_digest, ok=True, scan_finished=finished, key_id=key.key_id, predicate=predicate)
