"""Attestations in cosign's registry layout: one OCI manifest at ``<repo>:sha256-<hex>.att``, a layer each."""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from vulnattest.attestations.dsse import Envelope
from vulnattest.errors import TransientRegistryError, VerificationError
from vulnattest.registry import OCI_MANIFEST, RegistryClient, ResolvedImage

log = logging.getLogger(__name__)

DSSE_LAYER = "application/vnd.dsse.envelope.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PREDICATE_ANNOTATION = "predicateType"
_WRITE_ATTEMPTS = 5


def attestation_tag(digest: str) -> str:
    """The tag cosign keeps an image's attestations under: ``sha256-<hex>.att``."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}-{hex_digest}.att"


@dataclass(frozen=True)
class AttachedAttestation:
    """One layer of an image's ``.att`` manifest: its descriptor and the envelope it holds."""

    descriptor: dict[str, Any]
    envelope_bytes: bytes

    @property
    def predicate_type(self) -> str:
        """The predicate type the layer annotates (what ``--replace`` compares)."""
        return str(self.descriptor.get("annotations", {}).get(PREDICATE_ANNOTATION, ""))

    def envelope(self, where: str) -> Envelope:
        """Parse the envelope."""
        return Envelope.from_json(self.envelope_bytes, where)

    def statement_predicate_type(self, where: str) -> str:
        """The predicate type inside the signed statement (cosign ``--replace`` reads this, not the annotation)."""
        return str(self.envelope(where).statement(where).get("predicateType", ""))


@dataclass(frozen=True)
class AttachResult:
    """What attaching did: the new ``.att`` manifest digest, the layer digest, and how many old layers it replaced."""

    manifest_digest: str
    layer_digest: str
    replaced: int
    kept: int


def read_attestations(client: RegistryClient, image: ResolvedImage) -> list[AttachedAttestation]:
    """Every layer of the image's ``.att`` manifest, newest first as cosign orders them; [] when there is none."""
    manifest = client.find_manifest(image.image.repository, attestation_tag(image.digest))
    if manifest is None:
        return []
    layers = manifest.json().get("layers", [])
    return [
        AttachedAttestation(layer, client.get_blob(image.image.repository, str(layer["digest"])))
        for layer in layers
        if layer.get("mediaType") == DSSE_LAYER
    ]


@dataclass
class CosignAttacher:
    """Attaches envelopes with ``cosign attest --replace`` semantics, one writer per image digest at a time.

    Registries offer no compare-and-swap on tags, so after each write the tag is read again: if another writer's
    manifest replaced ours, the read-modify-write is redone on top of theirs.
    """

    _locks: defaultdict[str, threading.Lock] = field(default_factory=lambda: defaultdict(threading.Lock))
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def _lock_for(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks[key]

    def attach(
        self, client: RegistryClient, image: ResolvedImage, envelope: Envelope, predicate_type: str
    ) -> AttachResult:
        """Put `envelope` first in the image's ``.att`` manifest, dropping older layers of `predicate_type`."""
        repository, tag = image.image.repository, attestation_tag(image.digest)
        envelope_bytes = envelope.to_json()
        layer = {
            "mediaType": DSSE_LAYER,
            "size": len(envelope_bytes),
            "digest": client.push_blob(repository, envelope_bytes),
            "annotations": {PREDICATE_ANNOTATION: predicate_type, SIGNATURE_ANNOTATION: ""},
        }
        with self._lock_for(f"{image.image.name}@{image.digest}"):
            for _attempt in range(_WRITE_ATTEMPTS):
                existing = read_attestations(client, image)
                kept = [a.descriptor for a in existing if not _same_type(a, predicate_type, image)]
                layers = [layer, *kept]
                manifest = _manifest(client, repository, layers)
                digest = client.put_manifest(repository, tag, manifest, OCI_MANIFEST)
                current = client.find_manifest(repository, tag)
                if current is not None and current.digest == digest:
                    return AttachResult(digest, str(layer["digest"]), len(existing) - len(kept), len(kept))
                log.info("%s was rewritten by another writer; attaching again", tag)
        raise TransientRegistryError(
            f"{image.image.pinned}: {tag} kept changing under concurrent writers; retry later"
        )


def _same_type(attached: AttachedAttestation, predicate_type: str, image: ResolvedImage) -> bool:
    where = f"{image.image.pinned} attestation layer {attached.descriptor.get('digest')}"
    try:
        return attached.statement_predicate_type(where) == predicate_type
    except VerificationError:
        # a layer we cannot read is not ours to drop
        return False


def _manifest(client: RegistryClient, repository: str, layers: list[dict[str, Any]]) -> bytes:
    config = json.dumps({
        "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "", "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        "config": {},
    }, separators=(",", ":")).encode()
    config_digest = client.push_blob(repository, config)
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": layers,
    }, separators=(",", ":")).encode()

