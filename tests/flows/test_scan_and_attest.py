"""The scan-and-attest flow on Prefect's real server, a real registry, real Trivy and real stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
from typer.testing import CliRunner

from flows.scan_and_attest import scan_and_attest
from tests.conftest import ConfigWriter
from vulnattest.attestations import VULN_PREDICATE_TYPE
from vulnattest.attestations.cosign import attestation_tag, read_attestations
from vulnattest.cli import app
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, DEMO_DEBIAN_PACKAGES, alpine_image, debian_image
from vulnattest.demo.registry import LocalRegistry, push_image, push_index
from vulnattest.images import ImageRef
from vulnattest.outcomes import ImageOutcome
from vulnattest.registry import resolve
from vulnattest.signing import PublicKeyVerifier
from vulnattest.storage import ObjectKey, StoredObject
from vulnattest.storage.local import LocalReportStore
from vulnattest.verification import check_attestations

pytestmark = pytest.mark.usefixtures("prefect_server")


def _fleet(registry: LocalRegistry, name: str, count: int) -> list[str]:
    """Push `count` distinct images: Alpine and Debian, one of them a two-platform index."""
    client = registry.client()
    refs = []
    for i in range(count):
        repository = f"{name}/app-{i}"
        if i == 0:
            push_index(client, repository, "v1", {
                "linux/amd64": alpine_image(DEMO_ALPINE_PACKAGES, marker=f"{name}-{i}"),
                "linux/arm64": alpine_image(DEMO_ALPINE_PACKAGES, marker=f"{name}-{i}", architecture="arm64"),
            })
        else:
            build = alpine_image if i % 2 else debian_image
            packages = DEMO_ALPINE_PACKAGES if i % 2 else DEMO_DEBIAN_PACKAGES
            push_image(client, repository, "v1", build(packages, marker=f"{name}-{i}"))
        refs.append(f"{registry.host}/{repository}:v1")
    return refs


def _vuln_layers(registry: LocalRegistry, ref: str) -> int:
    client = registry.client()
    image = resolve(client, ImageRef.parse(ref))
    return sum(a.predicate_type == VULN_PREDICATE_TYPE for a in read_attestations(client, image))


def _run(config: Path) -> tuple[Any, list[ImageOutcome]]:
    state = scan_and_attest(config_path=str(config), return_state=True)
    outcomes = state.result(raise_on_failure=False)
    assert isinstance(outcomes, list)
    return state, outcomes


def test_twenty_images_one_missing_tag(
    registry: LocalRegistry, config_writer: ConfigWriter, keypair: tuple[Path, Path]
):
    refs = _fleet(registry, "fleet20", 19)
    missing = f"{registry.host}/fleet20/app-404:v1"
    config = config_writer.write([*refs[:10], missing, *refs[10:]])

    state, outcomes = _run(config)

    assert state.is_failed()
    assert missing in state.message
    by_image = {o.image: o for o in outcomes}
    assert len(by_image) == 20
    assert by_image[missing].failed_stage == "scan"
    assert "not found" in (by_image[missing].error or "")
    attested = [o for o in outcomes if o.ok]
    assert sorted(o.image for o in attested) == sorted(refs)
    verifier = PublicKeyVerifier.from_pem_files([keypair[1]])
    client = registry.client()
    for outcome in attested:
        assert outcome.report_uri and outcome.report_uri.startswith((config.parent / "reports").as_uri())
        assert sum(outcome.counts.values()) > 0
        image = resolve(client, ImageRef.parse(outcome.image))
        [check] = check_attestations(client, image, verifier)
        assert check.ok, check.reason
        assert check.predicate is not None
        assert check.predicate["invocation"]["parameters"]["report"] == {
            "uri": outcome.report_uri, "sha256": outcome.report_sha256,
        }
        assert set(outcome.seconds) == {"scan", "hash", "store", "verify", "attest"}

    with get_client(sync_client=True) as api:
        artifact = api.read_latest_artifacts()
        summary = next(a for a in artifact if a.key == "scan-and-attest-summary")
        assert "**19 of 20 images attested**, 1 failed" in str(summary.data)
        assert missing in str(summary.data)
        [progress] = api.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            type=ArtifactFilterType(any_=["progress"])))
        assert (progress.data, progress.description) == (100.0, "20 of 20 image(s) done, 1 failed")

    # idempotent: a second run replaces, so each image carries exactly one vuln attestation
    _run(config_writer.write(refs[:5]))
    assert [_vuln_layers(registry, r) for r in refs[:5]] == [1] * 5


class TamperingStore(LocalReportStore):
    """A real local store, plus someone who edits each report right after it is written."""

    def put(self, key: ObjectKey, body: bytes, sha256: str) -> StoredObject:
        stored = super().put(key, body, sha256)
        (self.root / key.path).write_bytes(body.replace(b"CVE-2099-0001", b"CVE-0000-0000"))
        return stored


def test_a_report_altered_between_store_and_verify_is_never_attested(
    registry: LocalRegistry, config_writer: ConfigWriter, monkeypatch: pytest.MonkeyPatch
):
    [ref] = _fleet(registry, "tamper", 2)[1:]  # the Alpine one, whose report names CVE-2099-0001
    config = config_writer.write([ref])
    import vulnattest.services as services_module

    monkeypatch.setattr(services_module, "open_store", lambda url, **_: TamperingStore(Path(url[len("file://"):])))

    state, [outcome] = _run(config)

    assert state.is_failed()
    assert outcome.failed_stage == "verify"
    assert "does not match its scan" in (outcome.error or "")
    client = registry.client()
    image = ImageRef.parse(ref)
    digest = resolve(client, image).digest
    assert client.find_manifest(image.repository, attestation_tag(digest)) is None


def test_reports_go_to_s3(registry: LocalRegistry, config_writer: ConfigWriter, s3_endpoint: str):
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="fleet-reports")
    refs = _fleet(registry, "s3fleet", 2)
    config = config_writer.write(
        refs, store={"url": "s3://fleet-reports/prod", "endpoint_url": s3_endpoint, "region": "us-east-1"}
    )
    state, outcomes = _run(config)
    assert state.is_completed()
    for outcome in outcomes:
        assert outcome.report_uri is not None
        assert outcome.report_uri.startswith("s3://fleet-reports/prod/reports/")
        key = outcome.report_uri.removeprefix("s3://fleet-reports/")
        body = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").get_object(
            Bucket="fleet-reports", Key=key)["Body"].read()
        assert json.loads(body)["SchemaVersion"] == 2


def test_cli_run_and_verify(registry: LocalRegistry, config_writer: ConfigWriter, keypair: tuple[Path, Path]):
    refs = _fleet(registry, "cli", 2)
    runner = CliRunner()
    ok = runner.invoke(app, ["run", "--config", str(config_writer.write(refs))])
    assert ok.exit_code == 0, ok.output
    assert "2 of 2 image(s) attested" in ok.output
    bad = runner.invoke(app, ["run", "--config", str(config_writer.write([*refs, f"{registry.host}/cli/none:1"]))])
    assert bad.exit_code == 1
    assert "2 of 3 image(s) attested" in bad.output

    verify = ["verify", refs[0], "--key", str(keypair[1]), "--insecure"]
    fresh = runner.invoke(app, [*verify, "--json"])
    assert fresh.exit_code == 0, fresh.output
    assert json.loads(fresh.stdout)["ok"] is True
    # a loopback registry is found to speak plain HTTP without --insecure, as docker and cosign find it
    plain = runner.invoke(app, ["verify", refs[0], "--key", str(keypair[1])])
    assert plain.exit_code == 0, plain.output
    stale = runner.invoke(app, [*verify, "--max-age", "0s"])
    assert stale.exit_code == 1
    assert "stale: scanned" in stale.output
    nothing = runner.invoke(app, ["verify", f"{registry.host}/fleet20/none:1", "--key", str(keypair[1]), "--insecure"])
    assert nothing.exit_code == 2
    assert "not found" in nothing.output
