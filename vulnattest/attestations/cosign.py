"""Attestations in cosign's registry layout: one OCI manifest at ``<repo>:sha256-<hex>.att``, a layer each."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

from vulnattest.attestations.dsse import Envelope
from vulnattest.errors import RegistryError, TransientRegistryError, VerificationError
from vulnattest.images import digest_tag
from vulnattest.locks import FileLocks
from vulnattest.registry import OCI_MANIFEST, Manifest, ResolvedImage, sha256_digest
from vulnattest.registry_api import Registry
from vulnattest.signing.interface import CertificateMaterial
from vulnattest.wire import Descriptor, ManifestDocument, Platform

log = logging.getLogger(__name__)

DSSE_LAYER = "application/vnd.dsse.envelope.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PREDICATE_ANNOTATION = "predicateType"
# keyless: the Fulcio leaf, its chain, and the Rekor bundle (pkg/oci/static/signature.go)
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
MAX_LAYERS = 1000  # cosign reads at most this many layers of a signature or attestation tag (ociremote maxLayers)


def attestation_tag(digest: str) -> str:
    """The tag cosign keeps an image's attestations under: ``sha256-<hex>.att``."""
    return digest_tag(digest, ".att")


@dataclass(frozen=True)
class AttachedAttestation:
    """One layer of an image's ``.att`` manifest: its descriptor and the envelope it holds."""

    descriptor: Descriptor
    envelope_bytes: bytes

    @property
    def predicate_type(self) -> str:
        """The predicate type the layer annotates (what ``--replace`` compares)."""
        return str(self.descriptor.annotations.get(PREDICATE_ANNOTATION, ""))

    def certificate_material(self) -> CertificateMaterial | None:
        """The keyless annotations (certificate, chain, Rekor bundle), or None for a key-signed layer."""
        annotations = self.descriptor.annotations
        certificate = annotations.get(CERTIFICATE_ANNOTATION)
        if not isinstance(certificate, str) or not certificate:
            return None
        chain, bundle = annotations.get(CHAIN_ANNOTATION), annotations.get(BUNDLE_ANNOTATION)
        return CertificateMaterial(
            certificate=certificate.encode(), chain=chain.encode() if isinstance(chain, str) else b"",
            rekor_bundle=bundle.encode() if isinstance(bundle, str) and bundle else None,
        )

    def envelope(self, where: str) -> Envelope:
        """Parse the envelope, with the layer's keyless annotations as its certificate material."""
        return replace(Envelope.from_json(self.envelope_bytes, where), material=self.certificate_material())

    def statement_predicate_type(self, where: str) -> str:
        """The predicate type inside the signed statement (cosign ``--replace`` reads this, not the annotation)."""
        return str(self.envelope(where).statement(where).predicate_type or "")


@dataclass(frozen=True)
class AttachResult:
    """What attaching did: the new ``.att`` manifest digest, the layer digest, and how many old layers it replaced."""

    manifest_digest: str
    layer_digest: str
    replaced: int
    kept: int


def read_attestations(client: Registry, image: ResolvedImage) -> list[AttachedAttestation]:
    """Every layer of the image's ``.att`` manifest, newest first as cosign orders them; [] when there is none."""
    tag = attestation_tag(image.digest)
    manifest = client.find_manifest(image.image.repository, tag)
    if manifest is None:
        return []
    manifest = _image_manifest(client, image, manifest)
    layers = _layers(manifest)
    if len(layers) > MAX_LAYERS:
        raise VerificationError(f"{image.image.pinned}: {tag} has {len(layers)} layers; cosign and Kyverno read at "
                                f"most {MAX_LAYERS} and refuse the image: attest it again with --replace")
    descriptors = [layer for layer in layers if layer is not None and layer.digest]
    if len(descriptors) < len(layers):
        raise VerificationError(f"{image.image.pinned}: {attestation_tag(image.digest)} has a layer that is not a "
                                "descriptor with a digest; attest the image again to rewrite it")
    # every layer, whatever its media type: cosign reads each one as an attestation
    return [AttachedAttestation(layer, client.get_blob(image.image.repository, layer.digest, layer.size))
            for layer in descriptors]


def _image_manifest(client: Registry, image: ResolvedImage, manifest: Manifest) -> Manifest:
    """The image manifest cosign reads at the ``.att`` tag: an index stands for its first linux/amd64 child, a
    child without a platform counting as one (go-containerregistry ``remoteIndex.childByPlatform``, which cosign's
    ``remote.Image`` calls with its default platform), followed through nested indexes."""
    for _ in range(8):
        if not manifest.is_index:
            return manifest
        children = manifest.document().manifests
        child = next((c for c in children or [] if c is not None and _linux_amd64(c.platform)), None)
        if child is None or not child.digest:
            raise VerificationError(f"{image.image.pinned}: {attestation_tag(image.digest)} is an index with no "
                                    "linux/amd64 manifest; cosign and Kyverno cannot read it and refuse the image: "
                                    "attest it again with --replace")
        manifest = client.get_manifest(image.image.repository, child.digest)
    raise VerificationError(f"{image.image.pinned}: {attestation_tag(image.digest)} nests indexes too deep")


def _linux_amd64(platform: Platform | None) -> bool:
    return platform is None or (platform.os, platform.architecture) == ("linux", "amd64")


def _layers(manifest: Manifest) -> list[Descriptor | None]:
    """The ``.att`` manifest's layers; a layer that is no descriptor is None, and `layers` that is not a list one
    such layer (cosign refuses the manifest)."""
    layers = manifest.document().layers
    return [None] if layers is None else layers


LockFactory = Callable[[str], AbstractContextManager[object]]


@dataclass
class CosignAttacher:
    """Attaches envelopes with ``cosign attest --replace`` semantics, one writer per image digest at a time.

    Updating the ``.att`` tag is a read-modify-write and registries offer no compare-and-swap, so writers to one
    digest take `lock` (file locks by default, shared by every process on the host; `tasks.locks` has one shared
    through the Prefect server for workers on many hosts). The tag is read again after writing: a writer that takes
    no lock (another tool) and wrote over ours, having read the tag before our write, is caught so the attach is
    retried; one whose write we overwrote can only be caught by that writer reading back its own.
    """

    lock: LockFactory = field(default_factory=FileLocks)

    def attach(
        self, client: Registry, image: ResolvedImage, envelope: Envelope, predicate_type: str,
        *, replace: bool = True,
    ) -> AttachResult:
        """Put `envelope` first in the image's ``.att`` manifest, dropping older layers of `predicate_type`.

        With ``replace=False`` older layers stay, as ``cosign attest`` without ``--replace`` leaves them.
        """
        repository, tag = image.image.repository, attestation_tag(image.digest)
        # keyless: the bytes the log recorded, whose hash cosign checks; else our serialisation
        logged = envelope.material.envelope if envelope.material is not None else None
        envelope_bytes = logged if logged is not None else envelope.to_json()
        layer = Descriptor(
            media_type=DSSE_LAYER,
            size=len(envelope_bytes),
            digest=client.push_blob(repository, envelope_bytes, check_exists=False),  # a fresh signature
            annotations={PREDICATE_ANNOTATION: predicate_type, SIGNATURE_ANNOTATION: "",
                         **keyless_annotations(envelope.material)},
        )
        with self.lock(f"{image.image.name}@{image.digest}"):
            found = client.find_manifest(repository, tag)
            # a layer that is no descriptor cannot be carried into a manifest a registry accepts: it is dropped
            existing = [old for old in _layers(found) if old is not None and old.digest] if found is not None else []
            kept = [old for old in existing if not (replace and _same_type(client, image, old, predicate_type))]
            manifest = _manifest(client, repository, [layer, *kept])
            digest = _put(client, repository, tag, manifest)
            current = client.find_manifest(repository, tag)
        if current is None or current.digest != digest:
            raise TransientRegistryError(
                f"{image.image.pinned}: {tag} was rewritten by another writer while attaching; retry"
            )
        return AttachResult(digest, layer.digest, len(existing) - len(kept), len(kept))


def _put(client: Registry, repository: str, tag: str, manifest: bytes) -> str:
    """PUT the ``.att`` manifest; when the registry fails the request (after retries), read the tag back before
    judging: a registry that stored the manifest and then answered 500 did attach it."""
    try:
        return client.put_manifest(repository, tag, manifest, OCI_MANIFEST)
    except RegistryError as failed:
        try:
            current = client.find_manifest(repository, tag)
        except RegistryError:
            raise failed from None
        if current is None or current.digest != sha256_digest(manifest):
            raise
        log.warning("%s/%s:%s: the registry failed the manifest PUT (%s) but stored it; it is attached", client.host,
                    repository, tag, failed)
        return current.digest


def _same_type(client: Registry, image: ResolvedImage, layer: Descriptor, predicate_type: str) -> bool:
    """Whether `layer` holds an attestation of `predicate_type`, as ``--replace`` decides it.

    cosign compares the statement's own predicate type; it also writes that type as the layer's ``predicateType``
    annotation, so a layer that has the annotation is judged by it, without fetching its envelope (a whole scan
    report, or an SBOM). Only a DSSE layer without the annotation is read.
    """
    if layer.media_type != DSSE_LAYER:
        return False
    annotated = layer.annotations.get(PREDICATE_ANNOTATION)
    if annotated:
        return bool(annotated == predicate_type)
    attached = AttachedAttestation(layer, client.get_blob(image.image.repository, layer.digest, layer.size))
    where = f"{image.image.pinned} attestation layer {layer.digest}"
    try:
        return attached.statement_predicate_type(where) == predicate_type
    except VerificationError:
        # a layer we cannot read is not ours to drop
        return False


def _manifest(client: Registry, repository: str, layers: list[Descriptor]) -> bytes:
    config = json.dumps({
        "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "", "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "config": {},
    }, separators=(",", ":")).encode()
    config_digest = client.push_blob(repository, config, check_exists=False)  # names the fresh layer
    return ManifestDocument(
        schema_version=2, media_type=OCI_MANIFEST,
        config=Descriptor(media_type=OCI_CONFIG, size=len(config), digest=config_digest), layers=list(layers),
    ).to_json()


def keyless_annotations(material: CertificateMaterial | None) -> dict[str, str]:
    """cosign's layer annotations for a keyless signature; none for a key signature."""
    if material is None:
        return {}
    annotations = {CERTIFICATE_ANNOTATION: material.certificate.decode(), CHAIN_ANNOTATION: material.chain.decode()}
    if material.rekor_bundle is not None:
        annotations[BUNDLE_ANNOTATION] = material.rekor_bundle.decode()
    return annotations
