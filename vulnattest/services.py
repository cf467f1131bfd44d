"""The long-lived parts one run uses (registry clients, scanner, store, signer), built once from the config."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vulnattest.attestations.attach import LayoutAttacher
from vulnattest.config import FleetConfig
from vulnattest.errors import VulnattestError
from vulnattest.locks import FileLocks
from vulnattest.policy import scan_vex
from vulnattest.registry import Registries, ResolvedImage, check_pullable
from vulnattest.scanners.interface import Scanner
from vulnattest.scanners.trivy import TrivyScanner
from vulnattest.signing.factory import signer_from_settings, verifier_from_settings
from vulnattest.signing.interface import Signer, Verifier
from vulnattest.storage import ReportStore, open_store
from vulnattest.verification import LAYOUTS, vex_attestations
from vulnattest.vex import VexDocument, readable_vex_documents

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a scan-and-attest or freshness run talks to; share one per run, close it at the end."""

    config: FleetConfig
    registries: Registries
    store: ReportStore
    scanner: Scanner | None = None
    signer: Signer | None = None
    attacher: LayoutAttacher = field(default_factory=LayoutAttacher)

    @classmethod
    def for_checking(cls, config: FleetConfig) -> Services:
        """Registry clients and the store: enough to read and verify attestations."""
        return cls(
            config=config,
            registries=Registries(insecure_hosts=config.insecure_registries(), timeouts=config.registry_timeouts()),
            store=open_store(config.store.url, endpoint_url=config.store.endpoint_url, region=config.store.region,
                             timeout=config.store.timeout.total_seconds()),
            attacher=LayoutAttacher(LAYOUTS[config.attach], lock=FileLocks(config.attach_lock_dir)),
        )

    @classmethod
    def for_attesting(cls, config: FleetConfig, *, key_password: bytes | None = None) -> Services:
        """Everything, with the signer (key file, KMS key or keyless) built now, so a bad key fails before any scan.

        `key_password` (e.g. from a Prefect Secret) overrides the environment's."""
        services = cls.for_checking(config)
        try:
            services.signer = signer_from_settings(config.signing, password=key_password)
            services.scanner = trivy_scanner(config, services.registries).open()
        except BaseException:
            services.close()
            raise
        return services

    def require_scanner(self) -> Scanner:
        """The scanner; only attesting runs have one."""
        if self.scanner is None:
            raise VulnattestError("this run has no scanner: build its services with Services.for_attesting")
        return self.scanner

    def require_signer(self) -> Signer:
        """The signer; only attesting runs have one."""
        if self.signer is None:
            raise VulnattestError("this run has no signing key: build its services with Services.for_attesting")
        return self.signer

    def verifier(self) -> Verifier:
        """Verifier over the configured public keys and certificate identities."""
        return verifier_from_settings(self.config.signing)

    def close(self) -> None:
        """Close connection pools (the registries', the store's and the signer's) and stop the scanner's server."""
        if isinstance(self.scanner, TrivyScanner):
            self.scanner.close()
        self.registries.close()
        self.store.close()
        if self.signer is not None:
            self.signer.close()


def trivy_scanner(config: FleetConfig, registries: Registries) -> TrivyScanner:
    """The configured Trivy, not opened yet; its failures are classed by what `registries` say of the image."""
    trivy = config.scanner.trivy
    return TrivyScanner(
        binary=trivy.path, cache_dir=trivy.cache_dir, offline=trivy.offline, ignore_unfixed=trivy.ignore_unfixed,
        severities=trivy.severities, timeout=trivy.timeout, insecure_registries=config.insecure_registries(),
        db_repository=trivy.db_repository, server=trivy.server, token=os.environ.get(trivy.token_env) or None,
        probe=lambda image: check_pullable(registries.for_image(image.image), image),
        vex_for=_vex_for_scans(config, registries),
    )


def _vex_for_scans(config: FleetConfig, registries: Registries) -> Callable[[ResolvedImage], Sequence[VexDocument]]:
    """What each scan applies (`scan_vex`): the config's documents, read once now, and with
    `policy.vex_attestations`, the image's own, signed by a signer `signing` trusts. A document that cannot be read
    is logged as an error and left out: the scans go on, their reports only the stricter for it (what it would have
    suppressed is in them), and every image's attestation is renewed."""
    documents, problems = readable_vex_documents(config.policy.vex_locations())
    for problem in problems:
        log.error("%s", problem)
    verifier = verifier_from_settings(config.signing) if config.policy.vex_attestations else None

    def documents_for(image: ResolvedImage) -> Sequence[VexDocument]:
        attached = (vex_attestations(registries.for_image(image.image), image, verifier, LAYOUTS[config.attach])
                    if verifier is not None else ())
        return scan_vex(config.policy, image.image, documents, attached)

    return documents_for
