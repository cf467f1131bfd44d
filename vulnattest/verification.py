"""Checks one image's vuln attestations the way Kyverno's ``verifyImages`` does: in cosign's ``.att`` layout
(``type: Cosign``) and as Sigstore bundle referrers (``type: SigstoreBundle``)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, ValidationError

from vulnattest.attestations.bundle import read_bundles
from vulnattest.attestations.cosign import read_attestations
from vulnattest.attestations.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope
from vulnattest.attestations.statement import VULN_PREDICATE_TYPE
from vulnattest.errors import VerificationError
from vulnattest.gocompat import (
    GoObject,
    as_map,
    b64decode_dsse,
    b64decode_std,
    cosign_statement,
    go_json,
    parse_time_rfc3339,
)
from vulnattest.registry import ResolvedImage
from vulnattest.registry_api import Registry
from vulnattest.signing.certificates import RekorBundle
from vulnattest.signing.interface import CertificateMaterial, Verifier
from vulnattest.vex import OPENVEX_CONTEXT, VexDocument, VexError, parse_vex
from vulnattest.wire import EnvelopeSignature, Lenient, RekorEntry, Statement, VulnPredicate, Wire

log = logging.getLogger(__name__)

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
    DECODE = "decode"
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
    """Parse a scan time as Kyverno's ``time_since`` does (Go's ``time.Parse(time.RFC3339, …)``): a time Go cannot
    read makes admission refuse the image, one Go reads counts, whatever Python's own parser would say."""
    return parse_time_rfc3339(text)


def check_attestations(
    client: Registry, image: ResolvedImage, verifier: Verifier, now: datetime | None = None,
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


def _bundle_checks(client: Registry, image: ResolvedImage, verifier: Verifier,
                   now: datetime) -> list[AttestationCheck]:
    """Kyverno's ``type: SigstoreBundle`` (``fetchBundles``): every bundle referrer whose statement, decoded as Go
    decodes it, has exactly the vuln type; then each is verified and checked against the conditions."""
    checks = []
    for attached in read_bundles(client, image):
        where = f"{image.image.pinned} bundle {attached.referrer.digest}"
        try:
            envelope = attached.envelope(where)
        except VerificationError:
            continue  # Kyverno skips a bundle without a DSSE envelope it can read when it filters by type
        if _statement_type(envelope.payload) != VULN_PREDICATE_TYPE:
            continue
        check = _check_envelope(envelope, attached.referrer.digest, image, verifier, now, where,
                                _read(_statement, envelope.payload), envelope.payload)
        if check is not None:
            checks.append(check)
    return checks


def _legacy_checks(client: Registry, image: ResolvedImage, verifier: Verifier,
                   now: datetime) -> list[AttestationCheck]:
    """Kyverno's ``type: Cosign``, in the order it runs (kyverno ``pkg/image/verifiers/cpol/cosign``):

    1. every layer of the ``.att`` manifest is an attestation, whatever its media type (cosign reads each one);
    2. cosign verifies each: its envelope as Go decodes it into a struct (field names matched case-insensitively,
       the last duplicate winning), a signature that verifies (payload and signatures decoded as the DSSE library
       does: standard base64, else URL-safe), and a statement whose subject names the image; a layer that fails is
       dropped;
    3. Kyverno decodes each verified layer again, its own way (``decodeStatement``: the exact key ``payload``,
       standard base64): a verified layer it cannot read fails the whole image, whatever its type;
    4. the statements whose ``predicateType`` is exactly the vuln type must each pass the conditions.

    Dropped layers are reported only when they claim a vuln predicate (by annotation or statement).
    """
    checks = []
    for attached in read_attestations(client, image):
        digest = attached.descriptor.digest
        where = f"{image.image.pinned} attestation {digest}"
        material = attached.certificate_material()
        try:
            envelope = _cosign_envelope(attached.envelope_bytes, where)
            _check_logged_envelope(attached.envelope_bytes, material, where)
        except VerificationError as e:
            if attached.predicate_type in VULN_TYPES:
                checks.append(AttestationCheck(digest, ok=False, reason=str(e), failed=Check.ENVELOPE))
            continue
        check = _check_envelope(envelope, digest, image, verifier, now, where,
                                _read(_claimed_statement, attached.envelope_bytes),
                                _kyverno_payload(attached.envelope_bytes),
                                material, annotated=attached.predicate_type)
        if check is not None:
            checks.append(check)
    return checks


class _CosignEnvelope(Wire):
    """The envelope as cosign's DSSE library reads a layer (go-securesystemslib ``dsse.Envelope``); a signature
    without a ``sig`` string is passed over."""

    payload_type: str = Field(alias="payloadType")
    payload: str
    signatures: list[Annotated[EnvelopeSignature | None, Lenient]]


class _Payload(Wire):
    """The one field Kyverno's ``decodeStatement`` and cosign's subject check read of an envelope."""

    payload: str


def _cosign_envelope(data: bytes, where: str) -> Envelope:
    """The DSSE envelope as cosign's DSSE library reads a layer (go-securesystemslib ``dsse.Envelope``)."""
    try:
        wire = go_json(data)
        if not isinstance(wire, GoObject):
            raise ValueError("not a JSON object")
        try:
            envelope = _CosignEnvelope.read(wire)
        except ValidationError:
            raise ValueError("no payloadType, payload and signatures") from None
        sigs = tuple(b64decode_dsse(s.sig) for s in envelope.signatures if s is not None)
        return Envelope(b64decode_dsse(envelope.payload), envelope.payload_type, sigs)
    except ValueError as e:
        raise VerificationError(f"{where}: not a DSSE envelope cosign reads ({e})") from None


def _kyverno_payload(data: bytes) -> bytes | VerificationError:
    """The statement bytes as Kyverno's own ``decodeStatement`` reads a verified layer (a map's exact key
    ``payload``, standard base64, no URL-safe fallback), or why it cannot."""
    try:
        try:
            payload = _Payload.read(as_map(go_json(data))).payload
        except ValidationError:
            raise ValueError('no "payload" string (Kyverno reads that exact key)') from None
        return b64decode_std(payload)
    except ValueError as e:
        return VerificationError(f"Kyverno cannot read this attestation it verified ({e}), and then refuses the image")


def _claimed_statement(data: bytes) -> Statement:
    """The statement cosign checks the subject of (``IntotoSubjectClaimVerifier``: the envelope struct's payload,
    standard base64 only, read by protojson)."""
    try:
        payload = _Payload.read(go_json(data)).payload
    except ValidationError:
        raise ValueError("no payload") from None
    try:
        decoded = b64decode_std(payload)
    except ValueError as e:
        raise ValueError(f"its payload is not standard base64: {e}") from None
    return Statement.read(cosign_statement(decoded))


def _read(reader: Callable[[bytes], Statement], data: bytes) -> Statement | ValueError:
    try:
        return reader(data)
    except ValueError as e:
        return e


def _statement(payload: bytes) -> Statement:
    """The in-toto statement as Go decodes it into a struct (in-toto-golang ``Statement``)."""
    statement = go_json(payload)
    if not isinstance(statement, GoObject):
        raise ValueError("the payload is not a JSON object")
    return Statement.read(statement)


def _statement_type(payload: bytes) -> Any:
    try:
        return _statement(payload).predicate_type
    except ValueError:
        return None


def _check_logged_envelope(envelope_bytes: bytes, material: CertificateMaterial | None, where: str) -> None:
    """A keyless ``.att`` layer must hold the very envelope its Rekor ``dsse`` entry recorded: cosign compares the
    layer's sha256 with the entry's ``envelopeHash`` (and refuses with "matching bundle to payload")."""
    if material is None or material.rekor_bundle is None:
        return
    try:
        entry = RekorEntry.read_json(RekorBundle.from_json(material.rekor_bundle).body)
    except (ValidationError, VerificationError):
        return  # an unreadable entry is the signature check's to refuse, with its own reason
    recorded = entry.spec.logged_envelope_hash(entry.kind)
    if recorded is not None and recorded != hashlib.sha256(envelope_bytes).hexdigest():
        raise VerificationError(f"{where}: the layer holds another serialisation of the envelope than the one Rekor "
                                "logged (its envelopeHash); cosign and Kyverno refuse it: attest the image again")


def _check_envelope(
    envelope: Envelope, layer_digest: str, image: ResolvedImage, verifier: Verifier, now: datetime, where: str,
    claimed: Statement | ValueError, kyverno_payload: bytes | VerificationError,
    material: CertificateMaterial | None = None,
    annotated: str | None = None,
) -> AttestationCheck | None:
    """Check one attestation as cosign verifies it and Kyverno then reads it (see `_legacy_checks`); None for a
    verified attestation of another predicate type (not Kyverno's concern here)."""

    def fail(failed: Check, reason: str, **extra: Any) -> AttestationCheck | None:
        if failed in DROPPED_BEFORE_CONDITIONS and not claims_vuln:
            return None  # a layer of another type that cosign drops: nothing admission will look at
        return AttestationCheck(layer_digest, ok=False, reason=reason, failed=failed, **extra)

    claims_vuln = annotated in VULN_TYPES or _statement_type(envelope.payload) in VULN_TYPES
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        return fail(Check.ENVELOPE, f"{where}: payload type {envelope.payload_type!r} is not "
                                    f"{IN_TOTO_PAYLOAD_TYPE} (cosign refuses any other)")
    try:
        # keys or certificate identity, with the keyless material (the .att layer's annotations, or the bundle's)
        key = envelope.verify_signer(verifier, material)
    except VerificationError as e:
        return fail(Check.SIGNATURE, str(e))
    if isinstance(claimed, ValueError):
        return fail(Check.STATEMENT, f"{where}: not an in-toto statement cosign reads ({claimed})",
                    key_id=key.key_id)
    if not claimed.names(image.digest.removeprefix("sha256:")):
        return fail(Check.SUBJECT, f"statement subject is not {image.digest} (an attestation of another image)",
                    key_id=key.key_id)
    if isinstance(kyverno_payload, VerificationError):
        return AttestationCheck(layer_digest, ok=False, reason=str(kyverno_payload), failed=Check.DECODE,
                                key_id=key.key_id)
    try:
        statement = _statement(kyverno_payload)
    except ValueError as e:
        return AttestationCheck(layer_digest, ok=False, failed=Check.DECODE, key_id=key.key_id,
                                reason=f"Kyverno cannot read this attestation it verified ({e}), and then refuses the "
                                       "image")
    predicate_type = statement.predicate_type
    if predicate_type != VULN_PREDICATE_TYPE:
        if predicate_type not in VULN_TYPES and not claims_vuln:
            return None
        return fail(
            Check.PREDICATE_TYPE,
            f"predicate type {predicate_type!r} is not {VULN_PREDICATE_TYPE!r} (Kyverno compares it exactly; "
            "re-attest with a current tool)", key_id=key.key_id,
        )
    predicate = as_map(statement.predicate)
    if not isinstance(predicate, dict):
        return fail(Check.PREDICATE, "statement has no predicate object", key_id=key.key_id)
    try:
        finished = parse_rfc3339(VulnPredicate.read(predicate).scan_finished_on)
    except ValueError as e:
        return fail(Check.SCAN_TIME, f"metadata.scanFinishedOn: {e}", key_id=key.key_id, predicate=predicate)
    if finished > now:
        return fail(Check.SCAN_TIME, f"metadata.scanFinishedOn {finished.isoformat()} is in the future (Kyverno "
                    "would count it as zero hours old; vulnattest refuses it: a clock or a signer that lies)",
                    key_id=key.key_id, predicate=predicate)
    return AttestationCheck(layer_digest, ok=True, scan_finished=finished, key_id=key.key_id, predicate=predicate)


def vex_attestations(client: Registry, image: ResolvedImage, verifier: Verifier,
                     layouts: tuple[str, ...] = (LEGACY,)) -> list[VexDocument]:
    """The OpenVEX documents attached to `image` as attestations in `layouts`, signed by a signer `verifier`
    trusts and about this very digest; any other (unsigned, another signer, another image, not OpenVEX) is left
    out and logged: an unverified statement could hide a vulnerability."""
    envelopes: list[tuple[str, Envelope]] = []
    pinned = image.image.pinned
    for layout in layouts:
        try:  # what admission refuses to read (too many layers or referrers, a bundle too big) gives no VEX
            found = ([(f"{pinned} attestation {a.descriptor.digest}", a) for a in read_attestations(client, image)]
                     if layout == LEGACY else
                     [(f"{pinned} bundle {b.referrer.digest}", b) for b in read_bundles(client, image)])
        except VerificationError as e:
            log.warning("VEX attestations of %s not read: %s", pinned, e)
            continue
        for where, attached in found:
            with suppress(VerificationError):
                envelopes.append((where, attached.envelope(where)))
    documents = []
    wanted = image.digest.removeprefix("sha256:")
    for where, envelope in envelopes:
        try:
            statement = envelope.statement(where)
            if not str(statement.predicate_type or "").startswith(OPENVEX_CONTEXT):
                continue
            envelope.verify_signer(verifier)
            if not statement.names(wanted):
                raise VerificationError(f"{where}: its subject is not {image.digest}")
            documents.append(parse_vex(json.dumps(statement.predicate), where))
        except (VerificationError, VexError) as e:
            log.warning("VEX attestation ignored: %s", e)
    return documents
