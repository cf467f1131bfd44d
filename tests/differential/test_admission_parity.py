"""vulnattest's verdict is admission's: generated ``.att`` tags (see cases.py) judged three ways, by vulnattest
(`vulnattest status --json`, one run over every case), by the real Kyverno CLI with the ClusterPolicy vulnattest
generates (one `kyverno apply` over a Pod per case), and by the real cosign (`verify-attestation --type vuln` per
case: which attestations it returns). Any disagreement that is not one of README's deliberate differences fails,
naming the case so it can be replayed.

`VULNATTEST_DIFFERENTIAL_CASES` sets how many cases (300 by default, with a fixed seed: the same cases every run;
`bench/differential.py --cases N` runs more)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, seed, settings

from tests.differential.cases import AGES, AttTag, Envelope, Layer, Statement, att_tags
from vulnattest.attestations.cosign import OCI_CONFIG, attestation_tag
from vulnattest.config import FleetConfig
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.errors import VerificationError
from vulnattest.images import ImageRef
from vulnattest.kyverno import cluster_policy
from vulnattest.registry import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RegistryClient, resolve
from vulnattest.signing.interface import PublicKeyVerifier
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair
from vulnattest.verification import DROPPED_BEFORE_CONDITIONS, Check, check_attestations

CASES = int(os.environ.get("VULNATTEST_DIFFERENTIAL_CASES", "300"))
SEED = 20261206
VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"


@dataclass(frozen=True)
class Judged:
    """One case, pushed, and what each reader said of it."""

    name: str
    image: str  # pinned
    tag: AttTag
    ours: dict[str, object]  # its `status --json` object
    kyverno_admits: bool

    @property
    def we_admit(self) -> bool:
        return self.ours["verdict"] in ("fresh", "expiring")


def push_att(client: RegistryClient, repository: str, digest: str, layers: tuple[Layer, ...], kind: str) -> None:
    """Write `layers` as the image's ``.att`` tag, byte for byte (no vulnattest attach logic in between), held by a
    manifest of `kind` (see `AttTag.kind`)."""
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
    media_type, config_type = (DOCKER_MANIFEST, DOCKER_CONFIG) if kind == "docker" else (OCI_MANIFEST, OCI_CONFIG)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": media_type, "config": {
        "mediaType": config_type, "size": len(config), "digest": client.push_blob(repository, config)},
        "layers": descriptors}).encode()
    if not kind.startswith("index"):
        client.put_manifest(repository, attestation_tag(digest), manifest, media_type)
        return
    child = {"mediaType": OCI_MANIFEST, "size": len(manifest),
             "digest": client.put_manifest(repository, "sha256:" + _sha256(manifest), manifest, OCI_MANIFEST)}
    amd64, arm64 = {"os": "linux", "architecture": "amd64"}, {"os": "linux", "architecture": "arm64"}
    # an arm64 child points at an empty manifest of its own, so only the amd64 one holds the attestations
    empty = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": OCI_CONFIG, "size": 2, "digest": client.push_blob(repository, b"{}")}, "layers": []}).encode()
    other = {"mediaType": OCI_MANIFEST, "size": len(empty),
             "digest": client.put_manifest(repository, "sha256:" + _sha256(empty), empty, OCI_MANIFEST)}
    children = {"index-amd64": [{**child, "platform": amd64}], "index-no-platform": [child],
                "index-arm64-first": [{**other, "platform": arm64}, {**child, "platform": amd64}],
                "index-arm64": [{**child, "platform": arm64}]}[kind]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    client.put_manifest(repository, attestation_tag(digest), index, OCI_INDEX)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kyverno_decisions(kyverno: Path, policy: Path, pods: dict[str, str], directory: Path) -> dict[str, bool]:
    """Admitted or not, per Pod name, from one `kyverno apply` over every Pod."""
    resources = directory / "pods.yaml"
    resources.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "diff"},
         "spec": {"containers": [{"name": "app", "image": image}]}} for name, image in pods.items()]))
    done = subprocess.run([str(kyverno), "apply", str(policy), "--resource", str(resources)], capture_output=True,
                          text=True, timeout=1800, check=False)
    output = done.stdout + done.stderr
    refused = set(re.findall(r"-> resource diff/Pod/(\w+) (?:failed|error)", output))
    assert re.search(r"pass: \d+, fail: \d+", output), output[-3000:]
    return {name: name not in refused for name in pods}


def cosign_returns(cosign: Path, public_key: Path, image: str) -> int:
    """How many vuln attestations cosign verifies and returns for `image` (0 when it refuses)."""
    done = subprocess.run([str(cosign), "verify-attestation", "--key", str(public_key), "--type", VULN,
                           "--insecure-ignore-tlog=true", image], capture_output=True, text=True, timeout=120,
                          check=False)
    return len([line for line in done.stdout.splitlines() if line.startswith("{")]) if done.returncode == 0 else 0


def deliberate(judged: Judged) -> bool:
    """README's deliberate differences: vulnattest refuses a scan time in the future (a clock or a signer that
    lies), saying so in its reason; Kyverno's time_since takes it as age zero and admits."""
    return (not judged.we_admit and judged.kyverno_admits and "in the future" in str(judged.ours["reason"])
            and any(e.statement.age == "future" for e in judged.tag.envelopes))


def judge(tags: list[AttTag], registry: LocalRegistry, kyverno: Path, directory: Path) -> list[Judged]:
    """Push each tag beside an image of its own, then ask vulnattest and Kyverno about all of them at once."""
    keys = {"ours": KeyFileSigner.from_file(generate_keypair(directory / "ours")[0]),
            "other": KeyFileSigner.from_file(generate_keypair(directory / "other")[0])}
    client = registry.client()
    now = datetime.now(UTC)
    images: dict[str, str] = {}
    for number, tag in enumerate(tags):
        name = f"c{number:04d}"
        repository = f"diff/{name}"
        digest = push_image(client, repository, "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=f"diff-{name}"))
        push_att(client, repository, digest, tag.layers(digest, now, keys), tag.kind)
        images[name] = f"{registry.host}/{repository}@{digest}"
    config = {"images": list(images.values()), "signing": {"key": str(directory / "ours" / "vulnattest.key")}}
    (directory / "fleet.yaml").write_text(yaml.safe_dump(config))
    policy = directory / "policy.yaml"
    policy.write_text(yaml.safe_dump(cluster_policy(FleetConfig.model_validate(config), now), sort_keys=False))
    admitted = kyverno_decisions(kyverno, policy, images, directory)
    done = subprocess.run([sys.executable, "-m", "vulnattest", "status", "--config", str(directory / "fleet.yaml"),
                           "--json", "--all"], capture_output=True, text=True, timeout=1800, check=True)
    ours = {ImageRef.parse(v["image"]).repository.rsplit("/", 1)[-1]: v for v in json.loads(done.stdout)}
    return [Judged(name, images[name], tag, ours[name], admitted[name])
            for name, tag in zip(images, tags, strict=True)]


def disagreements(judged: list[Judged], registry: LocalRegistry, cosign: Path, directory: Path) -> list[str]:
    """Every case where vulnattest and Kyverno differ (beyond the deliberate), or where cosign returns other
    attestations than the ones vulnattest expects it to."""
    client = registry.client()
    verifier = PublicKeyVerifier.from_pem_files([directory / "ours" / "vulnattest.pub"])
    found = []
    for case in judged:
        if case.we_admit != case.kyverno_admits and not deliberate(case):
            found.append(f"{case.name}: vulnattest {case.ours['verdict']} ({case.ours['reason']}), Kyverno "
                         f"{'admitted' if case.kyverno_admits else 'refused'}; case {case.tag!r}")
            continue
        try:
            checks = check_attestations(client, resolve(client, ImageRef.parse(case.image)), verifier,
                                        now=datetime.now(UTC))
        except VerificationError:  # an .att cosign cannot read either (then it returns nothing)
            checks = []
        selected = [c for c in checks if c.failed not in DROPPED_BEFORE_CONDITIONS]
        # the cosign CLI reads every attestation it verified as Kyverno does (exact "payload" key, standard
        # base64), but where Kyverno refuses the image, the CLI fails outright: it returns none
        expected = 0 if any(c.failed is Check.DECODE for c in selected) else len(selected)
        returned = cosign_returns(cosign, directory / "ours" / "vulnattest.pub", case.image)
        if returned != expected:
            found.append(f"{case.name}: vulnattest expects cosign to return {expected} attestation(s), cosign "
                         f"returns {returned}; case {case.tag!r}")
    return found


def test_vulnattest_kyverno_and_cosign_agree_on_generated_attestations(
    registry: LocalRegistry, kyverno: Path, cosign: Path, tmp_path: Path
):
    tags: list[AttTag] = []

    @seed(SEED)
    @settings(max_examples=CASES, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(att_tags)
    def collect(tag: AttTag) -> None:
        tags.append(tag)

    collect()
    judged = judge(tags, registry, kyverno, tmp_path)
    # the cases are worth comparing only if admission both admits and refuses a fair share of them
    admitted_share = sum(case.kyverno_admits for case in judged) / len(judged)
    assert 0.1 < admitted_share < 0.9, f"Kyverno admitted {admitted_share:.0%} of the cases: the generator is off"
    found = disagreements(judged, registry, cosign, tmp_path)
    assert not found, f"{len(found)} of {len(judged)} disagree:\n" + "\n".join(found[:40])


def test_a_stale_statement_beside_a_fresh_one_refuses_the_image_whatever_its_layer_says(
    registry: LocalRegistry, kyverno: Path, cosign: Path, tmp_path: Path
):
    """The stale statement sits in a layer with another media type and no predicate annotation: cosign returns it
    and Kyverno requires every vuln statement to pass, so the image is refused, and vulnattest must say so."""
    assert AGES["stale"] > AGES["fresh"]
    fresh = Envelope()
    stale_elsewhere = Envelope(statement=Statement(age="stale"), media_type="application/octet-stream",
                               annotation=None)
    stale_url_safe = Envelope(statement=Statement(age="stale"), base64_form="url-safe", media_type=None)
    tags = [AttTag((fresh, stale_elsewhere)), AttTag((stale_url_safe, fresh)), AttTag((fresh,))]
    judged = judge(tags, registry, kyverno, tmp_path)
    assert [case.kyverno_admits for case in judged] == [False, False, True]
    assert [case.ours["verdict"] for case in judged] == ["stale", "stale", "fresh"]
    assert [cosign_returns(cosign, tmp_path / "ours" / "vulnattest.pub", case.image) for case in judged] == [2, 2, 1]
