"""OpenVEX attached to an image as an attestation (``policy.vex_attestations``): only one signed by a trusted signer
counts; the scan hands it to the real Trivy, and check-freshness names it while the attested report predates it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.test_vex_scan import vex_document
from tests.interop.test_cosign_and_kyverno import attest
from vulnattest.attestations import sign_statement
from vulnattest.attestations.attach import LayoutAttacher
from vulnattest.attestations.statement import STATEMENT_TYPE
from vulnattest.config import FleetConfig
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.freshness import FreshnessChecker, Verdict
from vulnattest.images import ImageRef
from vulnattest.registry import Registries, ResolvedImage, resolve
from vulnattest.services import trivy_scanner
from vulnattest.signing.factory import verifier_from_settings
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair
from vulnattest.verification import LAYOUTS, vex_attestations

VEX_TYPE = "https://openvex.dev/ns/v0.2.0"


def attach_vex(registry: LocalRegistry, image: ResolvedImage, signer: KeyFileSigner, layout: str,
               subject: str | None = None) -> None:
    statement = {"_type": STATEMENT_TYPE, "predicateType": VEX_TYPE,
                 "subject": [{"name": image.image.name,
                              "digest": {"sha256": (subject or image.digest).removeprefix("sha256:")}}],
                 "predicate": vex_document(f"pkg:oci/app@{image.digest}")}
    envelope = sign_statement(json.dumps(statement).encode(), signer)
    LayoutAttacher(LAYOUTS[layout]).attach(registry.client(), image, envelope, VEX_TYPE)


@pytest.mark.parametrize("layout", ["legacy", "bundle"])
def test_only_vex_signed_by_a_trusted_signer_counts_and_the_scan_applies_it(
    layout: str, registry: LocalRegistry, keypair: tuple[Path, Path], trivy_cache: Path, tmp_path: Path
):
    client = registry.client()
    repository = f"vex-attested-{layout}/app"
    push_image(client, repository, "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=f"vex-attested-{layout}"))
    image = resolve(client, ImageRef.parse(f"{registry.host}/{repository}:1"))
    ours = KeyFileSigner.from_file(keypair[0])
    attest(registry, image, ours, timedelta(hours=1), layout)  # its report holds CVE-2099-0001, critical
    config = FleetConfig.model_validate({
        "images": [f"{registry.host}/{repository}:1"], "signing": {"key": str(keypair[0])}, "attach": layout,
        "policy": {"severity": "CRITICAL", "vex_attestations": True},
        "scanner": {"trivy": {"cache_dir": str(trivy_cache), "offline": True, "server": "standalone"}},
    })
    verifier = verifier_from_settings(config.signing)
    checker = FreshnessChecker.from_config(config, verifier, "fleet.yaml")

    def scanned_ids() -> set[str]:
        with trivy_scanner(config, Registries()) as scanner:
            return {f.vulnerability_id for f in scanner.scan(image).findings}

    # another signer's statement, and ours about another digest: neither counts
    attach_vex(registry, image, KeyFileSigner.from_file(generate_keypair(tmp_path / "other")[0]), layout)
    attach_vex(registry, image, ours, layout, subject="sha256:" + "0" * 64)
    assert vex_attestations(client, image, verifier, LAYOUTS[layout]) == []
    assert "CVE-2099-0001" in scanned_ids()
    before = checker.check(client, ImageRef.parse(f"{registry.host}/{repository}:1"))
    assert before.verdict is Verdict.POLICY
    assert "VEX" not in before.reason

    attach_vex(registry, image, ours, layout)
    [document] = vex_attestations(client, image, verifier, LAYOUTS[layout])
    assert document.statements[0].vulnerability.name == "CVE-2099-0001"
    assert "CVE-2099-0001" not in scanned_ids()  # the next attestation's report leaves it out
    # the attested report still holds it, and admission reads that report: refused until the image is scanned again
    verdict = checker.check(client, ImageRef.parse(f"{registry.host}/{repository}:1"))
    assert verdict.verdict is Verdict.POLICY
    assert ("the image's VEX attestations suppress every one: CVE-2099-0001 (not_affected: "
            "vulnerable_code_not_in_execute_path (the affected applet is never run)") in verdict.reason
    assert verdict.action == f"vulnattest run --config fleet.yaml --image {registry.host}/{repository}:1"
