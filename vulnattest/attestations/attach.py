"""Where an attestation is attached: cosign's ``.att`` tag, a Sigstore bundle referrer, or both (config ``attach``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vulnattest.attestations.bundle import ReferrerAttacher
from vulnattest.attestations.cosign import AttachResult, CosignAttacher, LockFactory
from vulnattest.attestations.dsse import Envelope
from vulnattest.locks import FileLocks
from vulnattest.registry import ResolvedImage
from vulnattest.registry_api import Registry
from vulnattest.verification import BUNDLE, LAYOUTS, LEGACY


@dataclass
class LayoutAttacher:
    """Attaches each envelope in every layout of `layouts`, all under one lock per image digest."""

    layouts: tuple[str, ...] = LAYOUTS["legacy"]
    lock: LockFactory = field(default_factory=FileLocks)

    def attach(self, client: Registry, image: ResolvedImage, envelope: Envelope,
               predicate_type: str) -> AttachResult:
        """Attach `envelope` (replacing older attestations of `predicate_type`); the first layout's result."""
        results = []
        if LEGACY in self.layouts:
            results.append(CosignAttacher(lock=self.lock).attach(client, image, envelope, predicate_type))
        if BUNDLE in self.layouts:
            results.append(ReferrerAttacher(lock=self.lock).attach(client, image, envelope, predicate_type))
        return results[0]
