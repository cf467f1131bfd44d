"""Keyless attestations vulnattest makes (sigstore-python against the tests' own Fulcio and Rekor), judged by the
real cosign with that deployment's trusted root, in both layouts."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.integration.test_keyless import ISSUER, SUBJECT, _config, _statement
from vulnattest.attestations import VULN_PREDICATE_TYPE, sign_statement
from vulnattest.attestations.attach import LayoutAttacher
from vulnattest.config import parse_config
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.demo.testpki import FakeSigstoreServer, identity_token
from vulnattest.images import ImageRef
from vulnattest.registry import resolve
from vulnattest.signing.factory import signer_from_settings, verifier_from_settings
from vulnattest.verification import LAYOUTS, check_attestations


@pytest.mark.parametrize("layout", ["legacy", "bundle"])
def test_cosign_accepts_vulnattests_keyless_attestation_for_its_identity_only(
    layout: str, deployment: Path, sigstore: FakeSigstoreServer, registry: LocalRegistry, cosign: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", identity_token(subject=SUBJECT, issuer=ISSUER))
    signing = parse_config(_config(deployment), base=deployment).signing
    client = registry.client()
    push_image(client, f"keyless-{layout}/app", "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=f"kl-{layout}"))
    image = resolve(client, ImageRef.parse(f"{registry.host}/keyless-{layout}/app:1"))
    envelope = sign_statement(_statement(image), signer_from_settings(signing))
    LayoutAttacher(LAYOUTS[layout]).attach(client, image, envelope, VULN_PREDICATE_TYPE)
    [check] = check_attestations(client, image, verifier_from_settings(signing), layouts=LAYOUTS[layout])
    assert check.ok, check.reason

    def cosign_verify(identity: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(cosign), "verify-attestation", "--type", "vuln", "--trusted-root",
             str(deployment / "trusted_root.json"), "--certificate-identity", identity,
             "--certificate-oidc-issuer", ISSUER, image.image.pinned],
            capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "COSIGN_PASSWORD": ""})

    accepted = cosign_verify(SUBJECT)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    refused = cosign_verify("someone-else@acme.example")
    assert refused.returncode != 0


def test_a_keyless_layer_holding_another_serialisation_of_its_envelope_is_refused_by_cosign_and_vulnattest(
    deployment: Path, sigstore: FakeSigstoreServer, registry: LocalRegistry, cosign: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", identity_token(subject=SUBJECT, issuer=ISSUER))
    signing = parse_config(_config(deployment), base=deployment).signing
    client = registry.client()
    push_image(client, "keyless-reserialised/app", "1", alpine_image(DEMO_ALPINE_PACKAGES, marker="kl-reser"))
    image = resolve(client, ImageRef.parse(f"{registry.host}/keyless-reserialised/app:1"))
    signed = sign_statement(_statement(image), signer_from_settings(signing))
    assert signed.material is not None and signed.material.envelope is not None
    # the same payload and signature, but not the bytes the log recorded (what vulnattest once stored)
    reserialised = dataclasses.replace(signed, material=dataclasses.replace(signed.material, envelope=None))
    assert reserialised.to_json() != signed.material.envelope
    LayoutAttacher(LAYOUTS["legacy"]).attach(client, image, reserialised, VULN_PREDICATE_TYPE)

    done = subprocess.run(
        [str(cosign), "verify-attestation", "--type", "vuln", "--trusted-root", str(deployment / "trusted_root.json"),
         "--certificate-identity", SUBJECT, "--certificate-oidc-issuer", ISSUER, image.image.pinned],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0 and "matching bundle to payload" in done.stderr
    [check] = check_attestations(client, image, verifier_from_settings(signing))
    assert not check.ok and "another serialisation of the envelope" in check.reason


def test_kyverno_admits_vulnattests_keyless_attestation_with_the_generated_policy_for_its_identity_only(
    deployment: Path, sigstore: FakeSigstoreServer, registry: LocalRegistry, kyverno: Path,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
):
    from tests.interop.test_cosign_and_kyverno import kyverno_admits
    from vulnattest.kyverno import cluster_policy

    # The legacy layout only: Kyverno 1.19 checks keyless bundles (ClusterPolicy SigstoreBundle, and every
    # ImageValidatingPolicy keyless attestor) against trust it fetches through TUF, which a private deployment
    # offline cannot serve; cosign, given the trusted root, judges keyless bundles above.
    layout = "legacy"

    monkeypatch.setenv("SIGSTORE_ID_TOKEN", identity_token(subject=SUBJECT, issuer=ISSUER))
    client = registry.client()
    repository = f"keyless-kyverno-{layout}/app"
    push_image(client, repository, "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=f"klk-{layout}"))
    image = resolve(client, ImageRef.parse(f"{registry.host}/{repository}:1"))
    config = parse_config(_config(deployment) + f"images: ['{registry.host}/{repository}:1']\nattach: {layout}\n",
                          base=deployment)
    envelope = sign_statement(_statement(image, finished=datetime.now(UTC)), signer_from_settings(config.signing))
    LayoutAttacher(LAYOUTS[layout]).attach(client, image, envelope, VULN_PREDICATE_TYPE)
    decisions = {}
    for name, subject in (("ours", SUBJECT), ("another", "someone-else@acme.example")):
        other = parse_config(_config(deployment, subject=subject)
                             + f"images: ['{registry.host}/{repository}:1']\nattach: {layout}\n", base=deployment)
        policy = tmp_path / f"{name}.yaml"
        policy.write_text(yaml.safe_dump(cluster_policy(other, datetime.now(UTC)), sort_keys=False))
        decisions[name] = kyverno_admits(kyverno, policy, image.image.pinned, tmp_path)
    assert decisions["ours"][0], decisions["ours"][1][-3000:]
    assert not decisions["another"][0]
