"""One fleet attested with a key file, an AWS KMS key and keyless; verify and the Kyverno policy accept exactly the
configured signer and refuse every other.

Everything is real except the public Sigstore instance: `vulnattest run` on Prefect's server, Trivy, a registry, KMS
from moto over HTTP, and sigstore-python against a loopback Fulcio and Rekor of a test PKI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import ConfigWriter, kms_signing_key
from tests.flows.test_scan_and_attest import _vuln_layers
from vulnattest.attestations import VULN_PREDICATE_TYPE
from vulnattest.cli import app
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, DEMO_DEBIAN_PACKAGES, alpine_image, debian_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.demo.testpki import FakeSigstoreServer, TestSigstore, identity_token
from vulnattest.images import ImageRef
from vulnattest.registry import resolve
from vulnattest.signing import generate_keypair

pytestmark = pytest.mark.usefixtures("prefect_server")

SUBJECT = "https://github.com/acme/platform/.github/workflows/rescan.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
SIGNERS = ("key", "kms", "keyless")


@pytest.fixture(scope="module")
def fleet(registry: LocalRegistry) -> list[str]:
    client = registry.client()
    push_image(client, "signers/alpine", "1", alpine_image(DEMO_ALPINE_PACKAGES, marker="signers"))
    push_image(client, "signers/debian", "1", debian_image(DEMO_DEBIAN_PACKAGES, marker="signers"))
    return [f"{registry.host}/signers/alpine:1", f"{registry.host}/signers/debian:1"]


@pytest.fixture(scope="module")
def kms_key(kms_endpoint: str) -> str:
    """A KMS signing key on the AWS-faithful server.

    Attestations with a whole Trivy report are over KMS's 4 KiB RAW limit, so they are signed as DIGEST messages: this
    needs a server that signs a digest as given (plain moto hashes it again, which the signer catches and refuses)."""
    return kms_signing_key(kms_endpoint, "vulnattest-fleet")


@pytest.fixture
def kms_alias(kms_key: str, kms_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The key, reached the way a user reaches a KMS emulator: boto3's endpoint variable."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms_endpoint)
    return kms_key


@pytest.fixture
def configs(
    config_writer: ConfigWriter, fleet: list[str], kms_alias: str, pki: TestSigstore, sigstore: FakeSigstoreServer,
    tmp_path: Path,
) -> dict[str, Path]:
    """A config per signer, plus keyless configs trusting another subject and another issuer."""
    (tmp_path / "trust_config.json").write_bytes(pki.trust_config_json(sigstore.url, sigstore.url))
    (tmp_path / "trusted_root.json").write_bytes(pki.trusted_root_json(rekor_url=sigstore.url))
    (tmp_path / "oidc-token").write_text(identity_token(subject=SUBJECT, issuer=ISSUER))

    def keyless(subject: str, issuer: str) -> dict[str, Any]:
        return {
            "key": "keyless",
            "keyless": {"trust_config": "trust_config.json", "identity_token_file": "oidc-token"},
            "trusted_root": "trusted_root.json",
            "identities": [{"subject": subject, "issuer": issuer}],
        }

    signings: dict[str, dict[str, Any]] = {
        "key": {"key": str(config_writer.key)},
        "kms": {"key": kms_alias},
        "keyless": keyless(SUBJECT, ISSUER),
        "keyless-other-subject": keyless(SUBJECT.replace("main", "dev"), ISSUER),
        "keyless-other-issuer": keyless(SUBJECT, "https://gitlab.example"),
    }
    return {name: config_writer.write(fleet, name=f"{name}.yaml", signing=signing)
            for name, signing in signings.items()}


@pytest.mark.parametrize("attach", ["legacy", "both"])
def test_one_fleet_three_signers_each_accepted_only_by_its_own_config_and_policy(
    attach: str, configs: dict[str, Path], fleet: list[str], registry: LocalRegistry, tmp_path: Path,
    crd_schema: dict[str, Any],
):
    runner = CliRunner()
    policies = {}
    for config in configs.values():
        config.write_text(config.read_text() + f"attach: {attach}\n")
    for name, config in configs.items():
        policy = tmp_path / f"{name}-policy.yaml"
        result = runner.invoke(app, ["policy", "kyverno", "--config", str(config), "--output", str(policy)])
        assert result.exit_code == 0, result.output
        jsonschema.validate(yaml.safe_load(policy.read_text()), crd_schema)
        policies[name] = policy

    for signer in SIGNERS:
        run = runner.invoke(app, ["run", "--config", str(configs[signer])])
        assert run.exit_code == 0, f"{signer}: {run.output}"
        assert "2 of 2 image(s) attested" in run.output
        for image in fleet:
            assert _vuln_layers(registry, image) == 1  # each signer's run replaced the previous one's
            if attach == "both":  # one vuln bundle per signer that attested (each replaced its own)
                assert _vuln_bundles(registry, image) == SIGNERS.index(signer) + 1

        for trusted in configs:
            for how in (["--config", str(configs[trusted])], ["--policy", str(policies[trusted]), "--insecure"]):
                verified = runner.invoke(app, ["verify", fleet[0], *how, "--json"])
                expected = (0, "fresh") if trusted == signer else (1, "invalid")
                got = (verified.exit_code, json.loads(verified.stdout)["verdict"])
                assert got == expected, f"signed by {signer}, {how} {trusted}: {verified.output}"
        assert runner.invoke(app, ["verify", fleet[1], "--policy", str(policies[signer]), "--insecure"]).exit_code == 0


def _vuln_bundles(registry: LocalRegistry, ref: str) -> int:
    from vulnattest.attestations.bundle import PREDICATE_TYPE_ANNOTATION, list_referrers

    client = registry.client()
    referrers, _ = list_referrers(client, resolve(client, ImageRef.parse(ref)))
    return sum(r.is_bundle and r.annotations.get(PREDICATE_TYPE_ANNOTATION) == VULN_PREDICATE_TYPE for r in referrers)


def test_refusals_say_which_signer_was_wanted(configs: dict[str, Path], fleet: list[str], tmp_path: Path):
    runner = CliRunner()
    assert runner.invoke(app, ["run", "--config", str(configs["keyless"])]).exit_code == 0
    policy = tmp_path / "key-policy.yaml"
    assert runner.invoke(app, ["policy", "kyverno", "-c", str(configs["key"]), "-o", str(policy)]).exit_code == 0

    by_key = runner.invoke(app, ["verify", fleet[0], "--policy", str(policy), "--insecure", "--json"])
    assert "does not verify with any trusted public key" in json.loads(by_key.stdout)["reason"]
    # the policy's scan age limit applies too: the keyless policy, made to demand a scan younger than a millisecond
    strict = yaml.safe_load(runner.invoke(app, ["policy", "kyverno", "-c", str(configs["keyless"])]).stdout)
    for verify in strict["spec"]["rules"][0]["verifyImages"]:
        verify["attestations"][0]["conditions"][0]["all"][0]["value"] = "1ms"
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(strict))
    stale = runner.invoke(app, ["verify", fleet[0], "--policy", str(tmp_path / "strict.yaml"), "--insecure", "--json"])
    assert (stale.exit_code, json.loads(stale.stdout)["verdict"]) == (1, "stale")
    other = runner.invoke(app, ["verify", fleet[0], "--config", str(configs["keyless-other-subject"]), "--json"])
    assert "not one of the accepted identities" in json.loads(other.stdout)["reason"]


def test_a_key_password_from_a_prefect_secret_block(config_writer: ConfigWriter, fleet: list[str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.scan_and_attest import scan_and_attest

    for name in ("VULNATTEST_KEY_PASSWORD", "COSIGN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    password = "31415.9265e-4"  # text that looks like JSON is still the password, not the number 3.14159265
    private, public = generate_keypair(tmp_path / "encrypted", password.encode())
    Secret(value=password).save("vulnattest-key-password", overwrite=True)
    config = config_writer.write(fleet[:1], name="secret.yaml",
                                 signing={"key": str(private), "password_secret": "vulnattest-key-password"})

    state = scan_and_attest(config_path=str(config), return_state=True)
    assert state.is_completed(), state.message
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    deadline = time.monotonic() + 30
    while True:  # the run's logs reach the server in batches
        with get_client(sync_client=True) as client:
            messages = [log.message for log in client.read_logs(log_filter)]
        if any("attested" in m for m in messages) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert any("attested" in m for m in messages), messages
    assert not [m for m in messages if password in m]
    runner = CliRunner()
    assert runner.invoke(app, ["verify", fleet[0], "--key", str(public), "--insecure"]).exit_code == 0

    missing = config_writer.write(fleet[:1], name="missing.yaml",
                                  signing={"key": str(private), "password_secret": "no-such-secret"})
    refused = runner.invoke(app, ["run", "--config", str(missing)])
    assert refused.exit_code != 0
    assert "no Prefect Secret block named 'no-such-secret'" in refused.output
