"""vulnattest's verdict is admission's: generated ``.att`` tags (see cases.py) judged three ways, by vulnattest's own
check (what `status` and `check-freshness` say), by the real Kyverno CLI with the ClusterPolicy vulnattest generates,
and by the real cosign (`verify-attestation --type vuln`, which attestations it accepts). Any disagreement that is not
one of README's deliberate differences fails, naming the case.

`VULNATTEST_DIFFERENTIAL_CASES` sets how many cases (300 by default, with a fixed seed: the same cases every run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, seed, settings

from tests.differential.cases import Case, Layer, att_tags
from vulnattest.attestations.cosign import OCI_CONFIG, attestation_tag
from vulnattest.config import FleetConfig
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.freshness import FreshnessChecker
from vulnattest.images import ImageRef
from vulnattest.kyverno import cluster_policy
from vulnattest.registry import OCI_MANIFEST, RegistryClient, resolve
from vulnattest.signing.interface import PublicKeyVerifier
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair
from vulnattest.verification import DROPPED_BEFORE_CONDITIONS, Check, check_attestations

CASES = int(os.environ.get("VULNATTEST_DIFFERENTIAL_CASES", "300"))
SEED = 20261206
VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"


def push_att(client: RegistryClient, repository: str, digest: str, layers: tuple[Layer, ...]) -> None:
    """Write `layers` as the image's ``.att`` manifest, byte for byte (no vulnattest attach logic in between)."""
    descriptors = []
    for layer in layers:
        descriptor: dict[str, object] = {"size": len(layer.blob),
                                         "digest": client.push_blob(repository, layer.blob, check_exists=False)}
        if layer.media_type is not None:
            descriptor["mediaType"] = layer.media_type
        if layer.annotations:
            descriptor["annotations"] = layer.annotations
        descriptors.append(descriptor)
    config = json.dumps({"architecture": "", "os": "", "config": {}, "rootfs": {
        "type": "layers", "diff_ids": [d["digest"] for d in descriptors]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": OCI_CONFIG, "size": len(config), "digest": client.push_blob(repository, config)},
        "layers": descriptors}).encode()
    client.put_manifest(repository, attestation_tag(digest), manifest, OCI_MANIFEST)


def kyverno_decisions(kyverno: Path, policy: Path, pods: dict[str, str], directory: Path) -> dict[str, bool]:
    """Admitted or not, per Pod name, from one `kyverno apply` over every Pod."""
    resources = directory / "pods.yaml"
    resources.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "diff"},
         "spec": {"containers": [{"name": "app", "image": image}]}} for name, image in pods.items()]))
    done = subprocess.run([str(kyverno), "apply", str(policy), "--resource", str(resources)], capture_output=True,
                          text=True, timeout=1800, check=False)
    output = done.stdout + done.stderr
    refused = set(re.findall(r"-> resource diff/Pod/(c\d+) (?:failed|error)", output))
    assert re.search(r"pass: \d+, fail: \d+", output), output[-3000:]
    return {name: name not in refused for name in pods}


def cosign_accepted(cosign: Path, public_key: Path, image: str) -> int:
    """How many vuln attestations cosign verifies and returns for `image` (0 when it refuses)."""
    done = subprocess.run([str(cosign), "verify-attestation", "--key", str(public_key), "--type", VULN,
                           "--insecure-ignore-tlog=true", image], capture_output=True, text=True, timeout=120,
                          check=False)
    return len([line for line in done.stdout.splitlines() if line.startswith("{")]) if done.returncode == 0 else 0


def deliberate(case: Case, ours: str, kyverno: str) -> bool:
    """README's deliberate differences: vulnattest refuses a scan time in the future (a clock or a signer that
    lies); Kyverno's time_since takes it as age zero and admits."""
    return ours == "refused" and kyverno == "admitted" and "age='future'" in case.description


def test_vulnattest_kyverno_and_cosign_agree_on_generated_attestations(
    registry: LocalRegistry, kyverno: Path, cosign: Path, tmp_path: Path
):
    collected: list[Case] = []

    @seed(SEED)
    @settings(max_examples=CASES, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(att_tags)
    def collect(tag: list) -> None:  # type: ignore[type-arg]
        collected.append(Case(" + ".join(repr(e) for e in tag), tuple(tag)))  # type: ignore[arg-type]

    collect()
    keys = {"ours": KeyFileSigner.from_file(generate_keypair(tmp_path / "ours")[0]),
            "other": KeyFileSigner.from_file(generate_keypair(tmp_path / "other")[0])}
    client = registry.client()
    now = datetime.now(UTC)
    images: dict[str, str] = {}
    for number, case in enumerate(collected):
        name = f"c{number:04d}"
        repository = f"diff/{name}"
        digest = push_image(client, repository, "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=f"diff-{name}"))
        envelopes = case.layers
        layers = tuple(e.layer(digest, now, keys) for e in envelopes)  # type: ignore[attr-defined]
        push_att(client, repository, digest, layers)
        images[name] = f"{registry.host}/{repository}@{digest}"

    config = FleetConfig.model_validate({"images": [i.split("@")[0] + ":1" for i in images.values()],
                                         "signing": {"key": str(tmp_path / "ours" / "vulnattest.key")}})
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(cluster_policy(config, now), sort_keys=False))
    admitted = kyverno_decisions(kyverno, policy, images, tmp_path)
    verifier = PublicKeyVerifier.from_pem_files([tmp_path / "ours" / "vulnattest.pub"])
    checker = FreshnessChecker.from_config(config, verifier, "fleet.yaml")

    disagreements = []
    for number, case in enumerate(collected):
        name = f"c{number:04d}"
        image = ImageRef.parse(images[name])
        verdict = checker.check(client, image)
        ours = "admitted" if verdict.ok else "refused"
        theirs = "admitted" if admitted[name] else "refused"
        if ours != theirs and not deliberate(case, ours, theirs):
            disagreements.append(f"{name}: vulnattest {ours} ({verdict.verdict.value}: {verdict.reason}), Kyverno "
                                 f"{theirs}; case {case.description}")
            continue
        resolved = resolve(client, image)
        selected = [c for c in check_attestations(client, resolved, verifier, now=datetime.now(UTC))
                    if c.failed not in DROPPED_BEFORE_CONDITIONS]
        # the cosign CLI reads every attestation it verified as Kyverno does (exact "payload" key, standard
        # base64), but where Kyverno refuses the image, the CLI fails outright: it returns none
        expected = 0 if any(c.failed is Check.DECODE for c in selected) else len(selected)
        accepted = cosign_accepted(cosign, tmp_path / "ours" / "vulnattest.pub", images[name])
        if accepted != expected:
            disagreements.append(f"{name}: vulnattest expects cosign to return {expected} attestation(s), cosign "
                                 f"returns {accepted}; case {case.description}")
    # the cases are worth comparing only if admission both admits and refuses a fair share of them
    admitted_share = sum(admitted.values()) / len(admitted)
    assert 0.1 < admitted_share < 0.9, f"Kyverno admitted {admitted_share:.0%} of the cases: the generator is off"
    assert not disagreements, f"{len(disagreements)} of {len(collected)} disagree:\n" + "\n".join(disagreements[:40])
