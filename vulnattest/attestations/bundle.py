"""Attestations as cosign v3 writes them by default: a Sigstore bundle (v0.3, holding the DSSE envelope) in an OCI 1.1
referrer of the image, found through the registry's referrers API or, where it has none, the fallback tag
``sha256-<hex>`` (an OCI index of the referrers, as the distribution spec 1.1 has clients keep it).

Kyverno's ``type: SigstoreBundle`` and its ImageValidatingPolicy read these (kyverno/kyverno
``pkg/image/verifiers/cpol/cosign/sigstore.go``, ``fetchBundles``): it refuses an image with more than 50 referrers
(``attestationlimit``) and one whose bundle layer is over 10 MB (``maxLayerSize``), so vulnattest replaces its own
vuln bundles rather than letting them pile up, and refuses to write a bundle Kyverno could not read.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import Field, ValidationError

from vulnattest.attestations.cosign import AttachResult, LockFactory
from vulnattest.attestations.dsse import Envelope
from vulnattest.errors import RegistryError, TransientRegistryError, VerificationError
from vulnattest.images import digest_tag
from vulnattest.locks import FileLocks
from vulnattest.registry import OCI_INDEX, OCI_MANIFEST, ResolvedImage, sha256_digest
from vulnattest.registry_api import Registry
from vulnattest.signing.certificates import RekorBundle
from vulnattest.signing.interface import CertificateMaterial
from vulnattest.wire import Descriptor, DsseEnvelope, EnvelopeSignature, ManifestDocument, Wire, first_error

log = logging.getLogger(__name__)

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
PREDICATE_TYPE_ANNOTATION = "dev.sigstore.bundle.predicateType"
CREATED_ANNOTATION = "org.opencontainers.image.created"
SIGNER_ANNOTATION = "dev.vulnattest.signer"
"""Ours: who signed the bundle (a key hint, or certificate identity), so replacing needs no bundle download."""
KYVERNO_REFERRER_LIMIT = 50
KYVERNO_BUNDLE_LIMIT = 10 * 1000 * 1000
REFERRER_WARNING = 40


class _RawBytes(Wire):
    raw_bytes: str = Field(alias="rawBytes")


class _Chain(Wire):
    certificates: list[_RawBytes]


class _Hint(Wire):
    hint: str = ""


class _LogId(Wire):
    key_id: str = Field(alias="keyId")


class _Promise(Wire):
    signed_entry_timestamp: str = Field(alias="signedEntryTimestamp")


class _Entry(Wire):
    log_index: str | int = Field(alias="logIndex")
    log_id: _LogId = Field(alias="logId")
    integrated_time: str | int | None = Field(None, alias="integratedTime")
    inclusion_promise: _Promise | None = Field(None, alias="inclusionPromise")
    canonicalized_body: str = Field(alias="canonicalizedBody")


class _Material(Wire):
    public_key: _Hint | None = Field(None, alias="publicKey")
    certificate: _RawBytes | None = None
    chain: _Chain | None = Field(None, alias="x509CertificateChain")
    tlog_entries: list[_Entry] = Field(default_factory=list, alias="tlogEntries")


class SigstoreBundle(Wire):
    """The parts of a Sigstore bundle (v0.1-v0.3) vulnattest reads: its verification material and DSSE envelope."""

    media_type: str = Field(alias="mediaType")
    verification_material: _Material = Field(alias="verificationMaterial")
    dsse_envelope: DsseEnvelope | None = Field(None, alias="dsseEnvelope")

    @classmethod
    def parse(cls, data: bytes, where: str) -> SigstoreBundle:
        """Parse untrusted bundle bytes; `where` names them in errors."""
        try:
            return cls.read_json(data)
        except ValidationError as e:
            raise VerificationError(f"{where}: not a Sigstore bundle ({first_error(e)})") from None

    def certificate(self) -> x509.Certificate | None:
        """The signing certificate (v0.3 ``certificate``, or the first of an older bundle's chain)."""
        material = self.verification_material
        raw = material.certificate or (material.chain.certificates[0] if material.chain and
                                       material.chain.certificates else None)
        return x509.load_der_x509_certificate(base64.b64decode(raw.raw_bytes)) if raw else None

    def rekor_bundle(self) -> RekorBundle | None:
        """The first log entry with a Signed Entry Timestamp, as cosign's legacy bundle annotation holds it."""
        for entry in self.verification_material.tlog_entries:
            if entry.inclusion_promise is not None and entry.integrated_time is not None:
                return RekorBundle(
                    signed_entry_timestamp=base64.b64decode(entry.inclusion_promise.signed_entry_timestamp),
                    body=base64.b64decode(entry.canonicalized_body), integrated_time=int(entry.integrated_time),
                    log_index=int(entry.log_index), log_id=base64.b64decode(entry.log_id.key_id),
                )
        return None

    def envelope(self, where: str) -> Envelope:
        """The DSSE envelope, with the certificate material (keyless) the verifiers read."""
        wire = self.dsse_envelope
        if wire is None:
            raise VerificationError(f"{where}: the bundle holds no DSSE envelope (a message signature is not an "
                                    "attestation)")
        try:
            payload = base64.b64decode(wire.payload)
            signatures = tuple(base64.b64decode(s.sig) for s in wire.signatures)
            certificate = self.certificate()
        except ValueError as e:
            raise VerificationError(f"{where}: the bundle does not decode ({e})") from None
        material = None
        if certificate is not None:
            rekor = self.rekor_bundle()
            material = CertificateMaterial(certificate=certificate.public_bytes(serialization.Encoding.PEM),
                                           rekor_bundle=rekor.to_json() if rekor else None)
        hint = self.verification_material.public_key.hint if self.verification_material.public_key else None
        return Envelope(payload, wire.payload_type, signatures, material, key_hint=hint)


def bundle_bytes(envelope: Envelope) -> bytes:
    """The Sigstore bundle (v0.3) of a signed envelope: the one keyless signing returned, or, for a key, one that
    names the key by its hint (base64 of the sha256 of its DER public key, as cosign writes it)."""
    if envelope.material is not None:
        if envelope.material.bundle is None:
            raise VerificationError("a keyless signature without the Sigstore bundle it was made with cannot be "
                                    "attached as a bundle")
        return envelope.material.bundle
    return SigstoreBundle(
        media_type=BUNDLE_MEDIA_TYPE,
        verification_material=_Material(public_key=_Hint(hint=envelope.key_hint or "")),
        dsse_envelope=DsseEnvelope(
            payload=base64.b64encode(envelope.payload).decode(), payload_type=envelope.payload_type,
            signatures=[EnvelopeSignature(sig=base64.b64encode(s).decode()) for s in envelope.signatures],
        ),
    ).to_json()


def signer_of(envelope: Envelope) -> str:
    """Who signed, as the signer annotation names it: ``key:<hint>``, or ``identity:<SAN>`` of the certificate."""
    if envelope.material is None:
        return f"key:{envelope.key_hint or ''}"
    certificate = x509.load_pem_x509_certificate(envelope.material.certificate)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return "identity:" + ",".join(sorted(str(v) for v in names.get_values_for_type(x509.UniformResourceIdentifier)
                                             + names.get_values_for_type(x509.RFC822Name)))
    except x509.ExtensionNotFound:
        return "identity:"


def key_hint(public_key_der: bytes) -> str:
    """cosign's public-key hint: base64 of the sha256 of the DER SubjectPublicKeyInfo."""
    return base64.b64encode(hashlib.sha256(public_key_der).digest()).decode()


def fallback_tag(digest: str) -> str:
    """The referrers fallback tag of a manifest digest: ``sha256-<hex>``."""
    return digest_tag(digest)


@dataclass(frozen=True)
class Referrer:
    """One bundle referrer of an image: its manifest descriptor (from the referrers list) and where its bundle is."""

    descriptor: Descriptor

    @property
    def digest(self) -> str:
        """The referrer manifest's digest."""
        return self.descriptor.digest

    @property
    def annotations(self) -> dict[str, Any]:
        """The descriptor's annotations (the referrers API copies the manifest's)."""
        return self.descriptor.annotations

    @property
    def is_bundle(self) -> bool:
        """Whether it is a Sigstore bundle, as Kyverno tells (``artifactType`` prefix)."""
        return self.descriptor.artifact_type.startswith(BUNDLE_PREFIX)


def list_referrers(client: Registry, image: ResolvedImage) -> tuple[list[Referrer], bool]:
    """The image's referrers, and whether the registry keeps the list itself (the referrers API) rather than the
    fallback tag."""
    listed = client.referrers(image.image.repository, image.digest)
    if listed is not None:
        return [Referrer(d) for d in listed], True
    index = client.find_manifest(image.image.repository, fallback_tag(image.digest))
    if index is None:
        return [], False
    manifests = index.document().manifests or []
    return [Referrer(d) for d in manifests if d is not None and d.digest], False


@dataclass(frozen=True)
class AttachedBundle:
    """A bundle referrer and the bundle it holds."""

    referrer: Referrer
    data: bytes

    def envelope(self, where: str) -> Envelope:
        """The DSSE envelope and verification material of the bundle."""
        return SigstoreBundle.parse(self.data, where).envelope(where)


def read_bundles(client: Registry, image: ResolvedImage) -> list[AttachedBundle]:
    """Every Sigstore bundle referrer of the image, with its bundle, as Kyverno reads them (the first layer of
    each referrer manifest whose ``artifactType`` is a bundle's). Raises VerificationError where Kyverno refuses the
    image outright: over 50 referrers, or a bundle over 10 MB."""
    referrers, _ = list_referrers(client, image)
    if len(referrers) > KYVERNO_REFERRER_LIMIT:
        raise VerificationError(f"{image.image.pinned} has {len(referrers)} referrers; Kyverno refuses an image with "
                                f"more than {KYVERNO_REFERRER_LIMIT}: delete old ones")
    return [_fetch(client, image, referrer) for referrer in referrers if referrer.is_bundle]


def _fetch(client: Registry, image: ResolvedImage, referrer: Referrer) -> AttachedBundle:
    """A referrer's bundle: the first layer of its manifest, refused where Kyverno refuses it."""
    layers = client.get_manifest(image.image.repository, referrer.digest).document().layers
    layer = layers[0] if layers else None
    if layer is None or not layer.digest:
        raise VerificationError(f"{image.image.pinned}: bundle referrer {referrer.digest} has no layer; Kyverno "
                                "refuses the image")
    if layer.size is not None and layer.size > KYVERNO_BUNDLE_LIMIT:
        raise VerificationError(f"{image.image.pinned}: bundle referrer {referrer.digest} is {layer.size} bytes; "
                                f"Kyverno refuses bundles over {KYVERNO_BUNDLE_LIMIT}")
    blob = client.get_blob(image.image.repository, layer.digest, layer.size)
    return AttachedBundle(referrer, blob)


@dataclass
class ReferrerAttacher:
    """Attaches Sigstore bundles as OCI 1.1 referrers, replacing this signer's older bundles of the same predicate
    type (`cosign attest --replace` does nothing for bundles: they would pile up to Kyverno's limit of 50).

    Where the registry has no referrers API, the fallback tag's index is a read-modify-write, serialised per image
    digest by `lock`, and read back after writing, as the ``.att`` tag is.
    """

    lock: LockFactory = field(default_factory=FileLocks)

    def attach(self, client: Registry, image: ResolvedImage, envelope: Envelope,
               predicate_type: str) -> AttachResult:
        """Attach `envelope` as a bundle referrer of `image` and drop this signer's older ones of `predicate_type`."""
        data = bundle_bytes(envelope)
        if len(data) > KYVERNO_BUNDLE_LIMIT:
            raise VerificationError(
                f"{image.image.pinned}: the attestation's bundle is {len(data)} bytes; Kyverno refuses bundles over "
                f"{KYVERNO_BUNDLE_LIMIT} (its report has too many findings): attach it in the legacy layout "
                "(`attach: legacy`)"
            )
        repository = image.image.repository
        signer = signer_of(envelope)
        client.push_blob(repository, EMPTY_CONFIG)
        layer_digest = client.push_blob(repository, data, check_exists=False)
        annotations = {CONTENT_ANNOTATION: "dsse-envelope", PREDICATE_TYPE_ANNOTATION: predicate_type,
                       CREATED_ANNOTATION: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), SIGNER_ANNOTATION: signer}
        manifest = ManifestDocument(
            schema_version=2, media_type=OCI_MANIFEST, artifact_type=BUNDLE_MEDIA_TYPE,
            config=Descriptor(media_type=EMPTY_CONFIG_MEDIA_TYPE, size=len(EMPTY_CONFIG),
                              digest=sha256_digest(EMPTY_CONFIG)),
            layers=[Descriptor(media_type=BUNDLE_MEDIA_TYPE, size=len(data), digest=layer_digest)],
            subject=Descriptor(media_type=image.media_type, size=image.size, digest=image.digest),
            annotations=annotations,
        ).to_json()
        descriptor = Descriptor(media_type=OCI_MANIFEST, size=len(manifest), digest=sha256_digest(manifest),
                                artifact_type=BUNDLE_MEDIA_TYPE, annotations=annotations)
        with self.lock(f"{image.image.name}@{image.digest}"):
            digest, indexed = client.put_referrer(repository, manifest)
            referrers, api = list_referrers(client, image)
            old = [r for r in referrers if r.digest != digest and r.is_bundle
                   and r.annotations.get(PREDICATE_TYPE_ANNOTATION) == predicate_type
                   and self._signed_by(client, image, r, signer)]
            if not (indexed or api):
                kept = [r.descriptor for r in referrers if r.digest != digest and r not in old]
                self._put_fallback(client, image, [descriptor, *kept])
            for referrer in old:
                self._delete(client, image, referrer)
        if len(referrers) - len(old) > REFERRER_WARNING:
            log.warning("%s has %d referrers; Kyverno refuses images with more than %d", image.image.pinned,
                        len(referrers) - len(old), KYVERNO_REFERRER_LIMIT)
        return AttachResult(digest, layer_digest, len(old), len(referrers) - len(old) - 1)

    def _signed_by(self, client: Registry, image: ResolvedImage, referrer: Referrer, signer: str) -> bool:
        """Whether `referrer` holds a bundle of `signer`: by our annotation, else (a bundle cosign made) by reading
        its bundle."""
        annotated = referrer.annotations.get(SIGNER_ANNOTATION)
        if isinstance(annotated, str):
            return annotated == signer
        where = f"{image.image.pinned} referrer {referrer.digest}"
        try:
            return signer_of(_fetch(client, image, referrer).envelope(where)) == signer
        except (VerificationError, RegistryError, ValueError):
            return False  # a referrer we cannot read is not ours to delete

    def _put_fallback(self, client: Registry, image: ResolvedImage, descriptors: list[Descriptor]) -> None:
        tag = fallback_tag(image.digest)
        index = ManifestDocument(schema_version=2, media_type=OCI_INDEX, manifests=list(descriptors)).to_json()
        client.put_manifest(image.image.repository, tag, index, OCI_INDEX)
        current = client.find_manifest(image.image.repository, tag)
        if current is None or current.digest != sha256_digest(index):
            raise TransientRegistryError(f"{image.image.pinned}: {tag} was rewritten by another writer while "
                                         "attaching; retry")

    def _delete(self, client: Registry, image: ResolvedImage, referrer: Referrer) -> None:
        try:
            client.delete_manifest(image.image.repository, referrer.digest)
        except RegistryError as e:  # some registries refuse deletes: the referrer stays, unlisted in the fallback
            log.warning("could not delete the replaced bundle %s of %s (%s)", referrer.digest, image.image.pinned, e)

