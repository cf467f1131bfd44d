"""Pods in front of Kyverno's real admission controller, with what vulnattest generates and attaches: the ClusterPolicy
of `vulnattest policy kyverno`, attestations made by `vulnattest run` with each signer in each layout, and `vulnattest
status` asked first: admission must do exactly what it said.

One repository per signer and layout holds four images, by tag: `fresh` (attested by the run), `stale` (its scan
re-attested as 200 h old), `unattested`, and `other-key` (attested by a key the policy does not trust).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import ConfigWriter, kms_signing_key
from tests.flows.test_signing_identities import ISSUER, SUBJECT
from tests.integration.test_freshness import WebhookReceiver
from tests.interop.test_cosign_and_kyverno import attest
from vulnattest.cli import app
from vulnattest.demo.cluster import Admission, LocalCluster
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.demo.testpki import FakeSigstoreServer, TestSigstore, identity_token
from vulnattest.images import ImageRef
from vulnattest.registry import resolve
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair
from vulnattest.walkthrough import backdate

pytestmark = pytest.mark.usefixtures("prefect_server", "no_policies")

CASES = ("fresh", "stale", "unattested", "other-key")
# Kyverno 1.19 checks keyless bundles against trust it fetches through TUF, which a private deployment offline does not
# serve (README, Compatibility): keyless runs in the legacy layout
ROWS = [("key", "legacy"), ("key", "bundle"), ("kms", "legacy"), ("kms", "bundle"), ("keyless", "legacy")]
NAMESPACE = "default"


@dataclass(frozen=True)
class Attested:
    """One signer and layout's images (by case), the config `status` reads and the policy admission enforces."""

    signer: str
    layout: str
    images: dict[str, str]
    config: Path
    policy: dict[str, Any]

    def run(self, *images: str) -> None:
        """`vulnattest run` for `images` (every image the run config lists when none)."""
        selected = [arg for image in images for arg in ("--image", image)]
        result = CliRunner().invoke(app, ["run", "--config", str(self.config.with_name("run.yaml")), *selected])
        assert result.exit_code == 0, result.output

    def status(self) -> dict[str, dict[str, Any]]:
        """`vulnattest status --json`, by case."""
        result = CliRunner().invoke(app, ["status", "--config", str(self.config), "--json", "--all"])
        assert result.exit_code == 0, result.output
        by_image = {entry["image"]: entry for entry in json.loads(result.stdout)}
        return {case: by_image[image] for case, image in self.images.items()}


def signing_for(signer: str, directory: Path, key: Path, kms: str, pki: TestSigstore,
                sigstore: FakeSigstoreServer) -> dict[str, Any]:
    if signer == "key":
        return {"key": str(key)}
    if signer == "kms":
        return {"key": kms}
    (directory / "trust_config.json").write_bytes(pki.trust_config_json(sigstore.url, sigstore.url))
    (directory / "trusted_root.json").write_bytes(pki.trusted_root_json(rekor_url=sigstore.url))
    (directory / "oidc-token").write_text(identity_token(subject=SUBJECT, issuer=ISSUER))
    return {"key": "keyless", "keyless": {"trust_config": "trust_config.json", "identity_token_file": "oidc-token"},
            "trusted_root": "trusted_root.json", "identities": [{"subject": SUBJECT, "issuer": ISSUER}]}


@pytest.fixture(scope="module")
def kms(kms_endpoint: str) -> str:
    """A KMS signing key; Kyverno reaches the same server (the `cluster` fixture gives it the endpoint)."""
    return kms_signing_key(kms_endpoint, "vulnattest-admission")


@pytest.fixture
def kms_env(kms_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms_endpoint)


@pytest.fixture
def inbox() -> Iterator[WebhookReceiver]:
    """On-call's webhook."""
    with WebhookReceiver() as running:
        yield running


@pytest.fixture(params=ROWS, ids=[f"{signer}-{layout}" for signer, layout in ROWS])
def attested(
    request: pytest.FixtureRequest, registry: LocalRegistry, config_writer: ConfigWriter, kms: str, kms_env: None,
    pki: TestSigstore, sigstore: FakeSigstoreServer, tmp_path: Path,
) -> Attested:
    signer, layout = request.param
    client = registry.client()
    repository = f"admission/{signer}-{layout}"
    images = {}
    for case in CASES:
        push_image(client, repository, case, alpine_image(DEMO_ALPINE_PACKAGES, marker=f"admission-{signer}-{layout}"
                                                                                       f"-{case}"))
        images[case] = f"{registry.host}/{repository}:{case}"
    signing = signing_for(signer, tmp_path, config_writer.key, kms, pki, sigstore)
    run_config = config_writer.write([images["fresh"], images["stale"]], name="run.yaml", signing=signing,
                                     attach=layout)
    config = config_writer.write(list(images.values()), name="fleet.yaml", signing=signing, attach=layout)

    Attested(signer, layout, images, config, {}).run()
    backdate(run_config, images["stale"], timedelta(hours=200))
    other = KeyFileSigner.from_file(generate_keypair(tmp_path / "other")[0])
    attest(registry, resolve(client, ImageRef.parse(images["other-key"])), other, timedelta(hours=1), layout)
    policy = CliRunner().invoke(app, ["policy", "kyverno", "--config", str(config)])
    assert policy.exit_code == 0, policy.output
    return Attested(signer, layout, images, config, yaml.safe_load(policy.stdout))


def admit_all(cluster: LocalCluster, attested: Attested, attempt: str) -> dict[str, Admission]:
    """Create a Pod per case (named after the row, the case and `attempt`); each admitted one is deleted again."""
    decisions = {}
    for case, image in attested.images.items():
        name = f"{attested.signer}-{attested.layout}-{case}-{attempt}"
        decisions[case] = cluster.create_pod(NAMESPACE, name, image)
        cluster.delete_pod(NAMESPACE, name)
    return decisions


def test_admission_does_what_status_said_for_every_signer_and_layout(attested: Attested, cluster: LocalCluster):
    cluster.apply_policy(attested.policy)

    said = attested.status()
    decided = admit_all(cluster, attested, "first")

    assert {case: d.admitted for case, d in decided.items()} == {
        "fresh": True, "stale": False, "unattested": False, "other-key": False}, decided
    assert {case: said[case]["verdict"] in ("fresh", "expiring") for case in CASES} == {
        case: d.admitted for case, d in decided.items()}, said
    assert [said[case]["verdict"] for case in CASES] == ["fresh", "stale", "missing", "invalid"]
    assert "the vulnerability scan is older than 168h0m0s" in decided["stale"].message
    # Kyverno pins an admitted Pod's image to the digest it verified, the one status checked
    assert decided["fresh"].image == f"{attested.images['fresh']}@{said['fresh']['digest']}"

    attested.run(attested.images["stale"])  # on-call's fix: re-attest the stale image
    again = cluster.create_pod(NAMESPACE, f"{attested.signer}-{attested.layout}-stale-again", attested.images["stale"])

    assert again.admitted, again.message
    assert attested.status()["stale"]["verdict"] == "fresh"


def test_the_early_warning_comes_while_pods_are_admitted_and_admission_refuses_from_the_deadline_it_named(
    config_writer: ConfigWriter, registry: LocalRegistry, cluster: LocalCluster, inbox: WebhookReceiver
):
    image = f"{registry.host}/admission/warned:1"
    push_image(registry.client(), "admission/warned", "1", alpine_image(DEMO_ALPINE_PACKAGES, marker="warned"))
    max_age, left = timedelta(hours=168), timedelta(seconds=40)  # warned 24 h ahead; stale `left` from now
    config = config_writer.write([image], freshness={"max_age": "168h", "warn_before": "24h"},
                                 alerts=[{"webhook": inbox.url, "name": "on-call"}])
    runner = CliRunner()
    assert runner.invoke(app, ["run", "--config", str(config)]).exit_code == 0
    cluster.apply_policy(yaml.safe_load(runner.invoke(app, ["policy", "kyverno", "--config", str(config)]).stdout))

    backdate(config, image, max_age - left)
    check = runner.invoke(app, ["check", "--config", str(config)])
    before = cluster.create_pod(NAMESPACE, "warned-before", image)
    [message] = inbox.take()
    [alert] = message["alerts"]

    assert check.exit_code == 1, check.output  # not fresh: expiring
    assert (alert["kind"], alert["verdict"], alert["image"]) == ("alert", "expiring", image), alert
    assert before.admitted, before.message
    deadline = datetime.fromisoformat(alert["deadline"])
    assert deadline - datetime.now(UTC) < left
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 2)
    after = cluster.create_pod(NAMESPACE, "warned-after", image)

    assert not after.admitted
    assert "the vulnerability scan is older than 168h0m0s" in after.message
    cluster.delete_pod(NAMESPACE, "warned-before")
