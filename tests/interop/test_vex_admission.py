"""A VEX statement removes a finding from the verdict and from the admission policy, with its justification: the
same image whose critical finding the policy refuses is admitted by the real Kyverno CLI (v1.19.1) once the policy
is generated with a VEX document that suppresses it, and check-freshness agrees and says why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.interop.test_cosign_and_kyverno import attest, kyverno_admits
from vulnattest.config import FleetConfig
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.freshness import FreshnessChecker, Verdict
from vulnattest.images import ImageRef
from vulnattest.kyverno import cluster_policy, image_validating_policy
from vulnattest.registry import resolve
from vulnattest.signing.factory import verifier_from_settings
from vulnattest.signing.keyfile import KeyFileSigner


def vex_file(directory: Path, product: str) -> Path:
    path = directory / "app.vex.json"
    path.write_text(json.dumps({
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/app-1", "author": "Team App",
        "timestamp": "2030-01-01T00:00:00Z", "version": 1,
        "statements": [{"vulnerability": {"name": "CVE-2099-0001"}, "products": [{"@id": product}],
                        "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path",
                        "impact_statement": "busybox is never run in this image"}],
    }))
    return path


def generated(config: FleetConfig) -> list[dict[str, Any]]:
    policies = [cluster_policy(config, datetime.now(UTC))]
    if config.attach == "bundle":
        policies.append(image_validating_policy(config, datetime.now(UTC)))
    return policies


@pytest.mark.parametrize("layout", ["legacy", "bundle"])
def test_a_vex_statement_removes_a_finding_from_the_verdict_and_the_policy_with_its_justification(
    layout: str, registry: LocalRegistry, kyverno: Path, keypair: tuple[Path, Path], tmp_path: Path
):
    client = registry.client()
    repository = f"vex-{layout}/app"
    push_image(client, repository, "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=f"vex-{layout}"))
    image = resolve(client, ImageRef.parse(f"{registry.host}/{repository}:1"))
    # its attested report: CVE-2099-0001 critical with a fix, CVE-2099-0003 medium without
    attest(registry, image, KeyFileSigner.from_file(keypair[0]), timedelta(hours=1), layout)
    base = {"images": [f"{registry.host}/{repository}:1"], "signing": {"key": str(keypair[0])}, "attach": layout}
    strict = FleetConfig.model_validate({**base, "policy": {"severity": "CRITICAL"}})
    vex = vex_file(tmp_path, f"pkg:oci/app?repository_url={registry.host}/{repository}")
    with_vex = FleetConfig.model_validate({**base, "policy": {"severity": "CRITICAL", "vex": [str(vex)]}})

    for config, admitted in ((strict, False), (with_vex, True)):
        for number, document in enumerate(generated(config)):
            policy = tmp_path / f"policy-{admitted}-{number}.yaml"
            policy.write_text(yaml.safe_dump(document, sort_keys=False))
            decision, output = kyverno_admits(kyverno, policy, image.image.pinned, tmp_path)
            assert decision is admitted, (document["kind"], output[-3000:])
        checker = FreshnessChecker.from_config(config, verifier_from_settings(config.signing), "fleet.yaml")
        verdict = checker.check(client, ImageRef.parse(f"{registry.host}/{repository}:1"))
        assert verdict.verdict is (Verdict.FRESH if admitted else Verdict.POLICY), verdict.reason

    assert verdict.reason.endswith(
        "; VEX suppresses 1 finding(s): CVE-2099-0001 in busybox: not_affected: vulnerable_code_not_in_execute_path "
        f"(busybox is never run in this image) (VEX {vex})")
    assert verdict.to_json()["reason"] == verdict.reason  # what status --json and the reports show
