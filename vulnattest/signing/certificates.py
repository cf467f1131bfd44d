"""Keyless verification: a Fulcio-style certificate, its identity, its chain, its SCT and its Rekor entry.

What is checked, in order, for each attestation layer (cosign's and Kyverno's ``keyless`` attestor check the same):

1. a DSSE signature verifies with the leaf certificate's public key;
2. the signing time: the ``integratedTime`` of the Rekor entry in the layer's bundle annotation, after the entry's
   Signed Entry Timestamp verified with a trusted Rekor key and the entry was shown to record this signature and
   this certificate; with the transparency log ignored, the signing time is now (as cosign does);
3. the certificate was valid at the signing time and chains to a trusted root (Fulcio's, or private roots);
4. its embedded SCT verifies with a trusted CT log key (unless SCTs are ignored);
5. its code-signing usage, and its identity: a subject alternative name equal to (or matching) the configured
   subject, and the OIDC issuer extension (1.3.6.1.4.1.57264.1.8, else the older .1.1) equal to (or matching)
   the configured issuer.

Regular expressions are searched, not anchored, because cosign and Kyverno use Go's ``regexp.MatchString``:
write ``^…$`` to pin a whole identity.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.certificate_transparency import LogEntryType, SignedCertificateTimestamp
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store
from cryptography.x509.verification import VerificationError as X509VerificationError
from pydantic import Field, ValidationError

from vulnattest.errors import SigningError, VerificationError
from vulnattest.signing.interface import CertificateMaterial, VerifiedSigner, pae
from vulnattest.text import go_regexp, go_search
from vulnattest.wire import RekorEntry, Wire, first_error

OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
FULCIO_USERNAME = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")  # the SAN other name Fulcio writes a username in
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class CertificateIdentity:
    """One accepted signer: a subject (exact or regexp) and an OIDC issuer (exact or regexp)."""

    subject: str | None = None
    subject_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None

    def __post_init__(self) -> None:
        if (self.subject is None) == (self.subject_regexp is None):
            raise SigningError("a certificate identity needs exactly one of subject and subject_regexp")
        if (self.issuer is None) == (self.issuer_regexp is None):
            raise SigningError("a certificate identity needs exactly one of issuer and issuer_regexp")
        for pattern in (self.subject_regexp, self.issuer_regexp):
            if pattern is not None:
                try:
                    go_regexp(pattern)  # the rule the config validates with and `_match` searches with
                except re.error as e:
                    raise SigningError(f"invalid regular expression {pattern!r}: {e}") from e

    def matches(self, subjects: Iterable[str], issuer: str | None) -> bool:
        """Whether any of `subjects` and `issuer` satisfy this identity."""
        if issuer is None or not _match(issuer, self.issuer, self.issuer_regexp):
            return False
        return any(_match(subject, self.subject, self.subject_regexp) for subject in subjects)

    def describe(self) -> str:
        """``subject … issued by …``, for messages."""
        subject = self.subject if self.subject is not None else f"/{self.subject_regexp}/"
        issuer = self.issuer if self.issuer is not None else f"/{self.issuer_regexp}/"
        return f"{subject} (issuer {issuer})"


def _match(value: str, exact: str | None, pattern: str | None) -> bool:
    if exact is not None:
        return value == exact
    return pattern is not None and go_search(pattern, value)


@dataclass(frozen=True)
class LogKey:
    """A transparency log's (Rekor's or a CT log's) public key, its log id, and when it may be used."""

    log_id: bytes
    key: PublicKey
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def usable_at(self, moment: datetime) -> bool:
        """Whether the key was in service at `moment`."""
        return (self.valid_from is None or self.valid_from <= moment) and (
            self.valid_until is None or moment <= self.valid_until
        )


@dataclass(frozen=True)
class TrustMaterial:
    """What keyless verification trusts: CA certificates (roots and intermediates), Rekor keys and CT log keys."""

    certificates: tuple[x509.Certificate, ...]
    rekor_keys: tuple[LogKey, ...] = ()
    ctlog_keys: tuple[LogKey, ...] = ()
    source: str = "trust material"
    # when a trusted_root.json's certificate authority was in service (its validFor), by certificate
    in_service: tuple[tuple[x509.Certificate, datetime | None, datetime | None], ...] = ()

    @property
    def roots(self) -> list[x509.Certificate]:
        """The self-signed certificates: the trust anchors."""
        return [c for c in self.certificates if c.issuer == c.subject]

    @property
    def intermediates(self) -> list[x509.Certificate]:
        """CA certificates that are not self-signed."""
        return [c for c in self.certificates if c.issuer != c.subject]

    def serving_at(self, moment: datetime) -> TrustMaterial:
        """This material without the certificate authorities that were not in service at `moment`."""
        retired = [c for c, start, end in self.in_service
                   if (start is not None and moment < start) or (end is not None and moment > end)]
        return replace(self, certificates=tuple(c for c in self.certificates if c not in retired))

    @classmethod
    def from_trusted_root(cls, data: bytes, source: str) -> TrustMaterial:
        """Parse a Sigstore ``trusted_root.json`` (what ``cosign``, sigstore-python and the TUF repository use)."""
        try:
            wire = _TrustedRoot.read_json(data)
        except ValidationError as e:
            raise SigningError(f"{source} is not a Sigstore trusted_root.json: {first_error(e)}") from e
        if wire.media_type != TRUSTED_ROOT_MEDIA_TYPE:
            raise SigningError(f"{source}: media type {wire.media_type!r} is not {TRUSTED_ROOT_MEDIA_TYPE!r}")
        try:
            in_service = tuple(
                (x509.load_der_x509_certificate(base64.b64decode(raw.raw_bytes)), authority.valid_for.start,
                 authority.valid_for.end)
                for authority in wire.certificate_authorities for raw in authority.cert_chain.certificates
            )
            rekor = tuple(log.to_log_key() for log in wire.tlogs)
            ctlogs = tuple(log.to_log_key() for log in wire.ctlogs)
        except (ValueError, binascii.Error) as e:
            raise SigningError(f"{source}: a certificate or key does not parse: {e}") from e
        return cls(tuple(c for c, _, _ in in_service), rekor, ctlogs, source, in_service)

    @classmethod
    def from_files(
        cls, *, trusted_root: Path | None = None, roots: Path | None = None,
        rekor_public_keys: Sequence[Path] = (), ctlog_public_keys: Sequence[Path] = (),
    ) -> TrustMaterial:
        """Combine a ``trusted_root.json`` with PEM files: CA certificates, Rekor and CT log public keys."""
        material = (cls.from_trusted_root(_read(trusted_root), str(trusted_root)) if trusted_root
                    else cls(certificates=(), source="configured files"))
        certificates = list(material.certificates)
        if roots is not None:
            try:
                certificates += x509.load_pem_x509_certificates(_read(roots))
            except ValueError as e:
                raise SigningError(f"{roots} holds no PEM certificates: {e}") from e
        rekor = [*material.rekor_keys, *(load_pem_log_key(_read(path), str(path)) for path in rekor_public_keys)]
        ctlogs = [*material.ctlog_keys, *(load_pem_log_key(_read(path), str(path)) for path in ctlog_public_keys)]
        sources = [str(p) for p in (trusted_root, roots, *rekor_public_keys, *ctlog_public_keys) if p]
        return cls(tuple(certificates), tuple(rekor), tuple(ctlogs), ", ".join(sources) or "no files",
                   material.in_service)

    @classmethod
    def public_good(cls) -> TrustMaterial:
        """The public Sigstore instance's trust root, fetched and verified through its TUF repository (network)."""
        from sigstore.models import ClientTrustConfig

        from vulnattest.compat.sigstore import trusted_root_json

        try:
            data = trusted_root_json(ClientTrustConfig.production().trusted_root)
        except Exception as e:  # TUF and network failures come in many types
            raise SigningError(
                f"cannot fetch the public Sigstore trust root through TUF ({type(e).__name__}); offline, set "
                "signing.trusted_root to a trusted_root.json"
            ) from e
        return cls.from_trusted_root(data, "public Sigstore (TUF)")


class _RawBytes(Wire):
    raw_bytes: str = Field(alias="rawBytes")


class _ValidFor(Wire):
    start: datetime | None = None
    end: datetime | None = None


class _PublicKey(Wire):
    raw_bytes: str = Field(alias="rawBytes")
    key_details: str = Field("", alias="keyDetails")
    valid_for: _ValidFor = Field(default_factory=_ValidFor, alias="validFor")


class _LogId(Wire):
    key_id: str = Field(alias="keyId")


class _Log(Wire):
    public_key: _PublicKey = Field(alias="publicKey")
    log_id: _LogId = Field(alias="logId")

    def to_log_key(self) -> LogKey:
        der = base64.b64decode(self.public_key.raw_bytes)
        return LogKey(
            log_id=base64.b64decode(self.log_id.key_id), key=_load_der_public_key(der, self.public_key.key_details),
            valid_from=self.public_key.valid_for.start, valid_until=self.public_key.valid_for.end,
        )


class _CertChain(Wire):
    certificates: list[_RawBytes]


class _CertificateAuthority(Wire):
    cert_chain: _CertChain = Field(alias="certChain")
    valid_for: _ValidFor = Field(default_factory=_ValidFor, alias="validFor")


class _TrustedRoot(Wire):
    media_type: str = Field(alias="mediaType")
    tlogs: list[_Log] = Field(default_factory=list)
    certificate_authorities: list[_CertificateAuthority] = Field(default_factory=list, alias="certificateAuthorities")
    ctlogs: list[_Log] = Field(default_factory=list)


def _load_der_public_key(der: bytes, key_details: str = "") -> PublicKey:
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        if "PKCS1" not in key_details:
            raise
        # CT log keys are sometimes stored as bare PKCS#1 RSAPublicKey
        key = serialization.load_pem_public_key(
            b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PUBLIC KEY-----\n")
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise ValueError(f"unsupported log key type {type(key).__name__}")
    return key


def load_pem_log_key(pem: bytes, source: str) -> LogKey:
    """A transparency log's PEM public key; `source` names it in errors."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as e:
        raise SigningError(f"{source} is not a PEM public key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise SigningError(f"{source}: unsupported key type {type(key).__name__}")
    return LogKey(log_id=log_id_of(key), key=key)


def log_id_of(key: PublicKey) -> bytes:
    """A transparency log's id: the SHA-256 of its DER SubjectPublicKeyInfo (Rekor's and RFC 6962's)."""
    return hashlib.sha256(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise SigningError(f"cannot read {path}: {e.strerror}") from e


def certificate_subjects(cert: x509.Certificate) -> list[str]:
    """The identities a certificate names: its SAN emails, URIs, DNS names, and Fulcio's username other name (the
    only other name cosign reads as an identity)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    subjects: list[str] = [
        *san.get_values_for_type(x509.RFC822Name),
        *san.get_values_for_type(x509.UniformResourceIdentifier),
        *san.get_values_for_type(x509.DNSName),
    ]
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id != FULCIO_USERNAME:
            continue
        text = _der_utf8(other.value)
        if text is not None:
            subjects.append(text)
    return subjects


def certificate_issuer(cert: x509.Certificate) -> str | None:
    """The OIDC issuer Fulcio recorded: extension 1.3.6.1.4.1.57264.1.8 (DER UTF8String), else the older .1.1."""
    for oid, der in ((OIDC_ISSUER_V2, True), (OIDC_ISSUER_V1, False)):
        try:
            value = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        return _der_utf8(raw) if der else raw.decode("utf-8", errors="replace")
    return None


def _der_utf8(raw: bytes) -> str | None:
    """Decode a DER UTF8String (tag 12) with a short or long length; None when it is something else."""
    if len(raw) < 2 or raw[0] != 0x0C:
        return None
    length, offset = raw[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(raw[2:2 + count], "big"), 2 + count
    if offset + length != len(raw):
        return None
    return raw[offset:].decode("utf-8", errors="replace")


@dataclass(frozen=True)
class RekorBundle:
    """cosign's ``dev.sigstore.cosign/bundle`` annotation: a Rekor entry and its Signed Entry Timestamp."""

    signed_entry_timestamp: bytes
    body: bytes
    integrated_time: int
    log_index: int
    log_id: bytes

    @classmethod
    def from_json(cls, data: bytes) -> RekorBundle:
        """Parse the annotation; raise VerificationError when it is malformed."""
        try:
            wire = _BundleWire.read_json(data)
            return cls(
                signed_entry_timestamp=base64.b64decode(wire.signed_entry_timestamp, validate=True),
                body=base64.b64decode(wire.payload.body, validate=True),
                integrated_time=wire.payload.integrated_time, log_index=wire.payload.log_index,
                log_id=bytes.fromhex(wire.payload.log_id),
            )
        except (ValidationError, ValueError) as e:
            raise VerificationError(f"the Rekor bundle annotation is malformed: {str(e).splitlines()[0]}") from e

    def to_json(self) -> bytes:
        """Serialise as cosign writes the annotation."""
        return _BundleWire(signed_entry_timestamp=base64.b64encode(self.signed_entry_timestamp).decode(),
                           payload=self._wire_payload()).to_json()

    def payload(self) -> dict[str, Any]:
        """The object the Signed Entry Timestamp signs (canonicalised with RFC 8785)."""
        return self._wire_payload().model_dump()

    def _wire_payload(self) -> _BundlePayload:
        return _BundlePayload(body=base64.b64encode(self.body).decode(), integrated_time=self.integrated_time,
                              log_index=self.log_index, log_id=self.log_id.hex())

    @property
    def integrated_at(self) -> datetime:
        """When the log integrated the entry: the verified signing time."""
        return datetime.fromtimestamp(self.integrated_time, UTC)


class _BundlePayload(Wire):
    body: str
    integrated_time: int = Field(alias="integratedTime")
    log_index: int = Field(alias="logIndex")
    log_id: str = Field(alias="logID")


class _BundleWire(Wire):
    signed_entry_timestamp: str = Field(alias="SignedEntryTimestamp")
    payload: _BundlePayload = Field(alias="Payload")


def verify_with_log_key(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Verify a log's signature (ECDSA/SHA-256, RSA PKCS#1 v1.5/SHA-256 or Ed25519) over `data`."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


@dataclass
class CertificateVerifier:
    """Accepts DSSE envelopes signed under one of `identities`, chained to `trust`; implements `Verifier`."""

    identities: Sequence[CertificateIdentity]
    trust: TrustMaterial
    require_tlog: bool = True
    require_sct: bool = True
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), repr=False)

    def __post_init__(self) -> None:
        if not self.identities:
            raise SigningError("no certificate identity to accept: set signing.identities (subject and issuer)")
        if not self.trust.roots:
            raise SigningError(f"{self.trust.source}: no root certificate to chain keyless certificates to")
        if self.require_tlog and not self.trust.rekor_keys:
            raise SigningError(
                f"{self.trust.source}: no Rekor public key; add one (signing.rekor_public_keys or a "
                "trusted_root.json), or, for a private deployment without a log, set signing.ignore_tlog: true"
            )
        if self.require_sct and not self.trust.ctlog_keys:
            raise SigningError(
                f"{self.trust.source}: no CT log public key; add one (signing.ctlog_public_keys or a "
                "trusted_root.json), or, for a private CA without a CT log, set signing.ignore_sct: true"
            )

    def verify_dsse(
        self, payload_type: str, payload: bytes, signatures: Sequence[bytes], material: CertificateMaterial | None,
    ) -> VerifiedSigner:
        """Verify the envelope against the certificate material; raise VerificationError saying what failed."""
        if material is None:
            raise VerificationError(
                "no signing certificate on this attestation (signed with a key?); the configured identities accept "
                "keyless attestations only"
            )
        leaf, chain = _load_certificates(material)
        public = leaf.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise VerificationError("the signing certificate's key is not ECDSA")
        data = pae(payload_type, payload)
        signature = next((s for s in signatures if _ecdsa_ok(public, s, data)), None)
        if signature is None:
            raise VerificationError("signature does not verify with the signing certificate's key (tampered?)")

        # without the log there is no trusted signing time: check the certificate against now, as cosign does
        signed_at = (self._verify_log_entry(material, leaf, payload, signature) if self.require_tlog
                     else self.clock())
        if not leaf.not_valid_before_utc <= signed_at <= leaf.not_valid_after_utc:
            raise VerificationError(
                f"the signing certificate was not valid at signing time {signed_at.isoformat()} (valid "
                f"{leaf.not_valid_before_utc.isoformat()} to {leaf.not_valid_after_utc.isoformat()})"
            )
        path = self._verify_chain(leaf, chain, signed_at)
        if self.require_sct:
            self._verify_sct(leaf, path)
        _check_code_signing(leaf)

        subjects, issuer = certificate_subjects(leaf), certificate_issuer(leaf)
        if not any(identity.matches(subjects, issuer) for identity in self.identities):
            raise VerificationError(
                f"certificate identity {', '.join(subjects) or '(none)'} (issuer {issuer or 'none'}) is not one of "
                f"the accepted identities: {'; '.join(i.describe() for i in self.identities)}"
            )
        return VerifiedSigner(
            key_id=f"{subjects[0] if subjects else '?'} ({issuer})", identity=subjects[0] if subjects else None,
            issuer=issuer, signed_at=signed_at,
        )

    def _verify_log_entry(
        self, material: CertificateMaterial, leaf: x509.Certificate, payload: bytes, signature: bytes,
    ) -> datetime:
        if not material.rekor_bundle:
            raise VerificationError(
                "no Rekor bundle on this attestation, so no transparency-log proof and no trusted signing time "
                "(signing.ignore_tlog: true accepts that, for private deployments without a log)"
            )
        bundle = RekorBundle.from_json(material.rekor_bundle)
        key = next((k for k in self.trust.rekor_keys if k.log_id == bundle.log_id), None)
        if key is None:
            raise VerificationError(f"the attestation was logged in Rekor log {bundle.log_id.hex()}, not a trusted one")
        if not verify_with_log_key(key.key, bundle.signed_entry_timestamp, rfc8785.dumps(bundle.payload())):
            raise VerificationError("the Rekor Signed Entry Timestamp does not verify (a forged or altered entry)")
        if not key.usable_at(bundle.integrated_at):
            raise VerificationError(f"the Rekor key was not in service at {bundle.integrated_at.isoformat()}")
        _check_entry_body(bundle.body, leaf, payload, signature)
        return bundle.integrated_at

    def _verify_chain(
        self, leaf: x509.Certificate, chain: Sequence[x509.Certificate], signed_at: datetime,
    ) -> list[x509.Certificate]:
        # Fulcio leaves carry code-signing, not client-auth, usage: allow any EKU, keep the other WebPKI checks
        # (sigstore-python does the same)
        ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
            x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
        ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
            x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
        trust = self.trust.serving_at(signed_at)  # a certificate authority counts only while it was in service
        try:
            verifier = (
                PolicyBuilder().store(Store(trust.roots)).time(signed_at)
                .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy).build_client_verifier()
            )
            intermediates = [*[c for c in chain if c.issuer != c.subject], *trust.intermediates]
            return list(verifier.verify(leaf, intermediates).chain)
        except (X509VerificationError, ValueError) as e:
            raise VerificationError(
                f"the signing certificate (issued by {leaf.issuer.rfc4514_string()}) does not chain to a trusted root "
                f"in {self.trust.source}: {e}"
            ) from e

    def _verify_sct(self, leaf: x509.Certificate, path: Sequence[x509.Certificate]) -> None:
        try:
            scts = leaf.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps).value
        except x509.ExtensionNotFound as e:
            raise VerificationError(
                "the signing certificate has no SCT (signing.ignore_sct: true accepts that, for a CA without a CT log)"
            ) from e
        if len(path) < 2:
            raise VerificationError("cannot verify the SCT: the certificate's issuer is unknown")
        issuer_key_hash = hashlib.sha256(path[1].public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()
        for sct in scts:
            key = next((k for k in self.trust.ctlog_keys if k.log_id == sct.log_id), None)
            if key is None or not key.usable_at(sct.timestamp.replace(tzinfo=UTC)):  # a retired log's key: no
                continue
            if verify_with_log_key(key.key, sct.signature, sct_signed_data(sct, leaf, issuer_key_hash)):
                return
        raise VerificationError("no SCT on the signing certificate verifies with a trusted CT log key")


def sct_signed_data(sct: SignedCertificateTimestamp, leaf: x509.Certificate, issuer_key_hash: bytes) -> bytes:
    """The RFC 6962 ``digitally-signed`` struct an embedded (precertificate) SCT signs."""
    if sct.entry_type != LogEntryType.PRE_CERTIFICATE:
        raise VerificationError("the SCT is not for a precertificate; embedded SCTs always are")
    tbs = leaf.tbs_precertificate_bytes
    millis = int(sct.timestamp.replace(tzinfo=UTC).timestamp() * 1000)
    return (
        struct.pack("!BBQH", sct.version.value, 0, millis, LogEntryType.PRE_CERTIFICATE.value)
        + issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs
        + struct.pack("!H", len(sct.extension_bytes)) + sct.extension_bytes
    )


def _load_certificates(material: CertificateMaterial) -> tuple[x509.Certificate, list[x509.Certificate]]:
    try:
        leaf = x509.load_pem_x509_certificate(material.certificate)
        chain = x509.load_pem_x509_certificates(material.chain) if material.chain.strip() else []
    except ValueError as e:
        raise VerificationError(f"the certificate annotations do not hold PEM certificates: {e}") from e
    return leaf, chain


def _ecdsa_ok(public: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    try:
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _check_code_signing(leaf: x509.Certificate) -> None:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as e:
        raise VerificationError("the signing certificate lacks key usage or extended key usage") from e
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise VerificationError("the signing certificate is not for code signing (digitalSignature, codeSigning)")


def _check_entry_body(body: bytes, leaf: x509.Certificate, payload: bytes, signature: bytes) -> None:
    """The logged entry must record this payload, this signature and this certificate (CVE-2022-36056's lesson)."""
    try:
        entry = RekorEntry.read_json(body)
    except ValidationError as e:
        raise VerificationError(f"the Rekor entry body is not a Rekor entry ({first_error(e)})") from None
    kind, version, spec = entry.kind, entry.api_version, entry.spec
    cert_pem = leaf.public_bytes(serialization.Encoding.PEM)
    if (kind, version) == ("dsse", "0.0.1"):  # what sigstore-python and cosign v3 log
        payload_hash = spec.payload_hash
        expected = (base64.b64encode(signature).decode(), base64.b64encode(cert_pem).decode())
        recorded = [(s.signature, s.verifier) for s in spec.signatures if s is not None]
    elif (kind, version) == ("intoto", "0.0.2"):  # what cosign v2 logged (rekor pkg/types/intoto/v0.0.2)
        content = spec.content
        payload_hash = content.payload_hash if content else None
        # its signature and key are base64 of the envelope's own base64 text and of the PEM certificate
        expected = (base64.b64encode(base64.b64encode(signature)).decode(), base64.b64encode(cert_pem).decode())
        recorded = [(s.sig, s.public_key) for s in (content.envelope.signatures if content and content.envelope
                                                    else []) if s is not None]
    else:
        raise VerificationError(f"Rekor entry kind {kind}/{version} is not supported (dsse/0.0.1 and intoto/0.0.2 "
                                "are, as cosign and Kyverno read them)")
    if payload_hash is None or (payload_hash.algorithm, payload_hash.value) != ("sha256",
                                                                              hashlib.sha256(payload).hexdigest()):
        raise VerificationError("the Rekor entry records another payload than this attestation's")
    if expected not in recorded:
        raise VerificationError("the Rekor entry records another signature or certificate than this attestation's")
