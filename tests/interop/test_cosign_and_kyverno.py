"""What vulnattest attaches, judged by the real readers: cosign v3.1.3 (`cosign verify-attestation`) and Kyverno's
CLI v1.19.1 (`kyverno apply` with the policy vulnattest generates), in both layouts; and what `cosign attest`
attaches, judged by vulnattest."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.integration.test_freshness import REPORT, TRIVY
from vulnattest.attestations import VULN_PREDICATE_TYPE, Invocation, sign_statement, vuln_statement
from vulnattest.attestations.attach import LayoutAttacher
from vulnattest.cli import app
from vulnattest.config import FleetConfig
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.errors import VulnattestError
from vulnattest.images import ImageRef
from vulnattest.kyverno import cluster_policy, image_validating_policy
from vulnattest.registry import ResolvedImage, resolve
from vulnattest.scanners.interface import ScanReport
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair
from vulnattest.storage import ObjectKey, StoredObject, VerifiedReport
from vulnattest.verification import LAYOUTS

LAYOUT_NAMES = ["legacy", "bundle"]
CASES = ("fresh", "stale", "missing", "other-signer")


@dataclass(frozen=True)
class Fleet:
    """Images attested in one layout: one per case, by digest; the policies generated for them."""

    layout: str
    images: dict[str, str]
    policy: Path
    config: FleetConfig


def attest(registry: LocalRegistry, image: ResolvedImage, signer: KeyFileSigner, age: timedelta, layout: str) -> None:
    """A vuln attestation of `image` as the pipeline makes it, its scan finished `age` ago, in `layout`."""
    finished = datetime.now(UTC) - age
    report = ScanReport(image, REPORT, finished - timedelta(seconds=20), finished, TRIVY, ())
    stored = VerifiedReport(StoredObject(ObjectKey("reports/r.json"), "s3://reports/r.json", report.sha256))
    envelope = sign_statement(vuln_statement(report, stored, Invocation()), signer)
    LayoutAttacher(LAYOUTS[layout]).attach(registry.client(), image, envelope, VULN_PREDICATE_TYPE)


@pytest.fixture(scope="module", params=LAYOUT_NAMES)
def fleet(request: pytest.FixtureRequest, registry: LocalRegistry, keypair: tuple[Path, Path],
          tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    layout = str(request.param)
    ours = KeyFileSigner.from_file(keypair[0])
    other = KeyFileSigner.from_file(generate_keypair(tmp_path_factory.mktemp("other"))[0])
    client = registry.client()
    images = {}
    for case in CASES:
        repository = f"interop-{layout}/{case}"
        push_image(client, repository, "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=f"{layout}-{case}"))
        image = resolve(client, ImageRef.parse(f"{registry.host}/{repository}:1"))
        images[case] = image.image.pinned
        if case != "missing":
            attest(registry, image, other if case == "other-signer" else ours,
                   timedelta(hours=200 if case == "stale" else 1), layout)
    config = FleetConfig.model_validate({
        "images": [image.split("@")[0] + ":1" for image in images.values()], "signing": {"key": str(keypair[0])},
        "attach": layout,
    })
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(yaml.safe_dump(cluster_policy(config, datetime.now(UTC)), sort_keys=False))
    return Fleet(layout, images, policy, config)


def cosign_verify(cosign: Path, public_key: Path, image: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(cosign), "verify-attestation", "--key", str(public_key), "--type", "vuln",
                           "--insecure-ignore-tlog=true", image], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "COSIGN_PASSWORD": ""})


def kyverno_admits(kyverno: Path, policy: Path, image: str, directory: Path) -> tuple[bool, str]:
    """Whether Kyverno's verifyImages admits a Pod naming `image`, and what it said."""
    pod = directory / f"pod-{abs(hash(image))}.yaml"
    pod.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": "app"},
                                   "spec": {"containers": [{"name": "app", "image": image}]}}))
    done = subprocess.run([str(kyverno), "apply", str(policy), "--resource", str(pod)], capture_output=True,
                          text=True, timeout=180, check=False)
    output = done.stdout + done.stderr
    summary = next(line for line in output.splitlines() if line.startswith("pass:"))
    counts = dict(part.strip().split(": ") for part in summary.split(","))
    return counts["pass"] != "0" and counts["fail"] == "0" and counts["error"] == "0", output


def test_cosign_accepts_what_vulnattest_attaches_from_its_signer_only(
    fleet: Fleet, cosign: Path, keypair: tuple[Path, Path]
):
    for case, image in fleet.images.items():
        done = cosign_verify(cosign, keypair[1], image)
        accepted = case in ("fresh", "stale")  # cosign checks the signature and the subject, not the age
        assert (done.returncode == 0) is accepted, (fleet.layout, case, done.stderr[-2000:])
        if accepted:
            envelope = json.loads(done.stdout.splitlines()[0])
            statement = json.loads(base64.b64decode(envelope["payload"]))
            assert statement["predicateType"] == VULN_PREDICATE_TYPE
            assert statement["subject"][0]["digest"]["sha256"] == image.split("@sha256:")[1]


def test_kyverno_admits_the_fresh_image_and_refuses_the_stale_the_missing_and_another_signers(
    fleet: Fleet, kyverno: Path, tmp_path: Path
):
    decisions = {case: kyverno_admits(kyverno, fleet.policy, image, tmp_path) for case, image in fleet.images.items()}
    assert {case: admitted for case, (admitted, _) in decisions.items()} == {
        "fresh": True, "stale": False, "missing": False, "other-signer": False}, decisions
    assert "the vulnerability scan is older than 168h0m0s" in decisions["stale"][1]


def test_kyverno_judges_bundles_with_the_image_validating_policy_as_with_the_cluster_policy(
    fleet: Fleet, kyverno: Path, tmp_path: Path
):
    if fleet.layout != "bundle":
        with pytest.raises(VulnattestError, match="reads Sigstore bundles only"):
            image_validating_policy(fleet.config, datetime.now(UTC))
        return
    policy = tmp_path / "ivp.yaml"
    policy.write_text(yaml.safe_dump(image_validating_policy(fleet.config, datetime.now(UTC)), sort_keys=False))
    decisions = {case: kyverno_admits(kyverno, policy, image, tmp_path) for case, image in fleet.images.items()}
    assert {case: admitted for case, (admitted, _) in decisions.items()} == {
        "fresh": True, "stale": False, "missing": False, "other-signer": False}, decisions
    assert "the vulnerability scan is older than 168h0m0s" in decisions["stale"][1]


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_vulnattest_accepts_what_cosign_attests(
    layout: str, registry: LocalRegistry, cosign: Path, keypair: tuple[Path, Path], tmp_path: Path
):
    env = {**os.environ, "COSIGN_PASSWORD": ""}
    exported = CliRunner().invoke(app, ["keys", "export", str(keypair[0]), "-o", str(tmp_path)], env=env)
    assert exported.exit_code == 0, exported.output
    client = registry.client()
    repository = f"cosign-made-{layout}/app"
    push_image(client, repository, "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=f"cosign-{layout}"))
    image = resolve(client, ImageRef.parse(f"{registry.host}/{repository}:1")).image.pinned
    finished = datetime.now(UTC) - timedelta(hours=2)
    predicate = {"invocation": {}, "scanner": {"uri": "pkg:github/aquasecurity/trivy@0.76.0", "version": "0.76.0",
                                               "result": json.loads(REPORT)},
                 "metadata": {"scanStartedOn": (finished - timedelta(seconds=30)).isoformat(),
                              "scanFinishedOn": finished.isoformat()}}
    (tmp_path / "predicate.json").write_text(json.dumps(predicate))
    flags = ["--new-bundle-format=false"] if layout == "legacy" else []
    done = subprocess.run([str(cosign), "attest", "--key", str(tmp_path / "cosign.key"), "--type", "vuln",
                           "--predicate", str(tmp_path / "predicate.json"), "--tlog-upload=false",
                           "--use-signing-config=false", "-y", *flags, image],
                          capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]

    verified = CliRunner().invoke(app, ["verify", image, "--key", str(keypair[1]), "--attach", layout, "--json"])

    assert verified.exit_code == 0, verified.output
    result = json.loads(verified.stdout)
    assert result["verdict"] == "fresh"
    other = CliRunner().invoke(app, ["verify", image, "--key", str(keypair[1]), "--attach",
                                     "bundle" if layout == "legacy" else "legacy"])
    assert other.exit_code == 1 and "missing" in other.output  # only the layout cosign wrote holds it


FINDINGS_POLICIES = {
    "critical-refused": ({"severity": "CRITICAL"}, False),
    "critical-allowed": ({"severity": "CRITICAL", "allow": [
        {"id": "cve-2099-0001", "reason": "not reachable", "expires": "2999-01-01"}]}, True),
    "high-with-a-fix": ({"severity": "HIGH", "fixed_only": True}, False),
    "medium-unfixed-ignored": ({"severity": "MEDIUM", "fixed_only": True, "allow": [
        {"id": "CVE-2099-0001", "reason": "not reachable", "expires": "2999-01-01"}]}, True),
    "denied": ({"deny": ["CVE-2099-0003"]}, False),
}


@pytest.mark.parametrize("case", sorted(FINDINGS_POLICIES))
def test_kyverno_and_vulnattest_judge_the_findings_alike(
    case: str, fleet: Fleet, kyverno: Path, keypair: tuple[Path, Path], registry: LocalRegistry, tmp_path: Path
):
    from vulnattest.freshness import FreshnessChecker
    from vulnattest.signing.factory import verifier_from_settings

    settings, admitted = FINDINGS_POLICIES[case]
    config = fleet.config.model_copy(update={"policy": FleetConfig.model_validate({"policy": settings}).policy})
    image = fleet.images["fresh"]  # its report: CVE-2099-0001 critical with a fix, CVE-2099-0003 medium without
    generated = [cluster_policy(config, datetime.now(UTC))]
    if fleet.layout == "bundle":
        generated.append(image_validating_policy(config, datetime.now(UTC)))
    for number, document in enumerate(generated):
        policy = tmp_path / f"policy-{number}.yaml"
        policy.write_text(yaml.safe_dump(document, sort_keys=False))
        decision, output = kyverno_admits(kyverno, policy, image, tmp_path)
        assert decision is admitted, (document["kind"], output[-3000:])
    checker = FreshnessChecker.from_config(config, verifier_from_settings(config.signing), "fleet.yaml")
    verdict = checker.check(registry.client(), ImageRef.parse(image))
    assert verdict.ok is admitted, verdict.reason
