"""The generated Kyverno ClusterPolicy: valid against Kyverno's CRD, and asking exactly what the config asks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions
import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from vulnattest.attestations import VULN_PREDICATE_TYPE
from vulnattest.cli import app
from vulnattest.config import parse_config
from vulnattest.errors import ScanError, VulnattestError
from vulnattest.kyverno import cluster_policy, image_validating_policy
from vulnattest.policy import evaluate_report, policy_for
from vulnattest.signing import generate_keypair

NOW = datetime(2026, 11, 28, tzinfo=UTC)


@pytest.fixture
def config_text(tmp_path: Path) -> str:
    generate_keypair(tmp_path / "keys")
    return f"""
images:
  - 127.0.0.1:5000/team/app:1
  - 127.0.0.1:5000/team/api@sha256:{"a" * 64}
  - alpine:3.19
signing: {{key: {tmp_path}/keys/vulnattest.key}}
freshness: {{max_age: 72h}}
policy:
  severity: HIGH
  fixed_only: true
  deny: [CVE-2099-9999]
  allow:
    - {{id: CVE-2099-0002, reason: vendor says not reachable, expires: 2027-01-01}}
    - {{id: CVE-2099-0001, reason: expired long ago, expires: 2026-01-01}}
  overrides:
    - images: ["docker.io/library/alpine*"]
      severity: CRITICAL
"""


def _conditions(policy: dict[str, Any], image_glob: str) -> list[dict[str, Any]]:
    for verify in policy["spec"]["rules"][0]["verifyImages"]:
        if image_glob in verify["imageReferences"]:
            [attestation] = verify["attestations"]
            assert attestation["type"] == VULN_PREDICATE_TYPE
            return list(attestation["conditions"][0]["all"])
    raise AssertionError(f"{image_glob} not in the policy")


class _KyvernoFunctions(jmespath.functions.Functions):
    """The one of Kyverno's own JMESPath functions the findings conditions use."""

    @jmespath.functions.signature({"types": ["string"]})
    def _func_to_upper(self, value: str) -> str:
        return value.upper()


def _evaluate(key: str, predicate: dict[str, Any]) -> Any:
    # Kyverno evaluates `{{ … }}` with JMESPath plus its own functions
    expression = key.removeprefix("{{").removesuffix("}}").strip()
    return jmespath.search(expression, predicate, options=jmespath.Options(custom_functions=_KyvernoFunctions()))


def test_policy_is_valid_against_kyvernos_crd(crd_schema: dict[str, Any], config_text: str):
    policy = cluster_policy(parse_config(config_text), NOW)
    jsonschema.validate(policy, crd_schema)
    # …and the validator does check: a wrong type is refused
    broken = json.loads(json.dumps(policy))
    broken["spec"]["rules"][0]["verifyImages"][0]["required"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, crd_schema)


def test_the_image_validating_policy_is_valid_against_kyvernos_crd(ivp_crd_schema: dict[str, Any], config_text: str):
    config = parse_config(config_text).model_copy(update={"attach": "bundle"})
    generated = image_validating_policy(config, NOW)
    # the config's per-image overrides make one policy per vulnerability policy, in a List
    policies = generated["items"] if generated["kind"] == "List" else [generated]
    assert len(policies) > 1
    for policy in policies:
        jsonschema.validate(policy, ivp_crd_schema)
        assert policy["spec"]["validationActions"] == ["Deny"]
        assert policy["spec"]["attestations"] == [{"name": "vuln", "intoto": {"type": VULN_PREDICATE_TYPE}}]
    broken = json.loads(json.dumps(policies[0]))
    broken["spec"]["validationActions"] = "Deny"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ivp_crd_schema)


def test_policy_names_the_fleet_keys_predicate_and_max_age(config_text: str, tmp_path: Path):
    policy = cluster_policy(parse_config(config_text), NOW)
    assert policy["apiVersion"] == "kyverno.io/v1"
    assert {v["failureAction"] for v in policy["spec"]["rules"][0]["verifyImages"]} == {"Enforce"}
    assert policy["spec"]["webhookConfiguration"] == {"failurePolicy": "Fail", "timeoutSeconds": 30}
    assert not {"validationFailureAction", "failurePolicy", "webhookTimeoutSeconds"} & set(policy["spec"])  # deprecated
    references = [r for v in policy["spec"]["rules"][0]["verifyImages"] for r in v["imageReferences"]]
    assert set(references) == {
        "127.0.0.1:5000/team/app:*", "127.0.0.1:5000/team/app@*", "127.0.0.1:5000/team/api:*",
        "127.0.0.1:5000/team/api@*", "docker.io/library/alpine:*", "docker.io/library/alpine@*",
        "library/alpine:*", "library/alpine@*", "alpine:*", "alpine@*",
    }
    verify = policy["spec"]["rules"][0]["verifyImages"][0]
    [attestor_set] = verify["attestations"][0]["attestors"]
    [entry] = attestor_set["entries"]
    assert entry["keys"]["publicKeys"] == (tmp_path / "keys" / "vulnattest.pub").read_text()
    age = _conditions(policy, "127.0.0.1:5000/team/app:*")[0]
    assert age["key"] == "{{ time_since('', '{{ metadata.scanFinishedOn }}', '') }}"
    assert (age["operator"], age["value"]) == ("DurationLessThanOrEquals", "72h0m0s")


def _predicate(*vulns: dict[str, str]) -> dict[str, Any]:
    results = [{"Target": "os"}, {"Target": "x", "Vulnerabilities": list(vulns)}]
    return {"scanner": {"result": {"SchemaVersion": 2, "Results": results}}}


NOTHING_SCANNED = {"scanner": {"result": {"SchemaVersion": 2, "ArtifactName": "scratch"}}}  # Trivy omits Results


@pytest.mark.parametrize(
    ("vulns", "passes"),
    [
        ([], True),
        (None, True),  # a report without Results: nothing found
        ([{"VulnerabilityID": "CVE-1", "Severity": "MEDIUM", "FixedVersion": "2"}], True),
        ([{"VulnerabilityID": "CVE-1", "Severity": "HIGH", "FixedVersion": "2"}], False),
        ([{"VulnerabilityID": "CVE-1", "Severity": "CRITICAL"}], True),  # no fix: fixed_only
        ([{"VulnerabilityID": "CVE-2099-0002", "Severity": "HIGH", "FixedVersion": "2"}], True),  # allowed
        ([{"VulnerabilityID": "CVE-2099-0001", "Severity": "HIGH", "FixedVersion": "2"}], False),  # allowance expired
        ([{"VulnerabilityID": "CVE-2099-9999", "Severity": "LOW"}], False),  # denied
        ([{"VulnerabilityID": "GHSA-m425-mq94-257g", "Severity": "LOW"}], False),  # denied, as Trivy spells it
        ([{"VulnerabilityID": "GHSA-wxyz-2345-abcd", "Severity": "HIGH", "FixedVersion": "2"}], True),  # allowed
    ],
)
def test_severity_allow_and_deny_conditions_judge_reports_as_the_policy_does(
    config_text: str, vulns: list[dict[str, str]] | None, passes: bool
):
    allow_ghsa = "  allow:\n    - {id: GHSA-WXYZ-2345-ABCD, reason: r, expires: 2027-01-01}\n"
    config = parse_config(config_text.replace("deny: [CVE-2099-9999]", "deny: [CVE-2099-9999, ghsa-M425-mq94-257g]")
                          .replace("  allow:\n", allow_ghsa))
    conditions = _conditions(cluster_policy(config, NOW), "127.0.0.1:5000/team/app:*")[1:]
    assert len(conditions) == 2
    predicate = NOTHING_SCANNED if vulns is None else _predicate(*vulns)
    admitted = all(_evaluate(c["key"], predicate) == c["value"] for c in conditions)
    assert admitted is passes
    # admission and vulnattest's own check (what `check` and `status` say) agree
    own = evaluate_report(policy_for(config.policy, "127.0.0.1:5000/team/app:1"), predicate["scanner"]["result"], NOW)
    assert own.ok is passes


def test_per_image_overrides_get_their_own_entry(config_text: str):
    policy = cluster_policy(parse_config(config_text), NOW)
    assert len(policy["spec"]["rules"][0]["verifyImages"]) == 2
    alpine = _conditions(policy, "alpine:*")[1]
    assert _evaluate(alpine["key"], _predicate({"VulnerabilityID": "X", "Severity": "HIGH", "FixedVersion": "1"})) == 0
    assert _evaluate(alpine["key"], _predicate({"VulnerabilityID": "X", "Severity": "CRITICAL",
                                                "FixedVersion": "1"})) == 1


def test_a_predicate_without_a_trivy_report_fails_the_findings_conditions(config_text: str):
    conditions = _conditions(cluster_policy(parse_config(config_text), NOW), "127.0.0.1:5000/team/app:*")[1:]
    for predicate in ({"scanner": {"uri": "pkg:github/aquasecurity/trivy"}}, {"scanner": {"result": {"x": 1}}}):
        with pytest.raises(jmespath.exceptions.JMESPathTypeError):  # Kyverno: an error, so the Pod is refused
            _evaluate(conditions[0]["key"], predicate)
        with pytest.raises(ScanError, match="not a Trivy JSON report"):  # vulnattest's own check: invalid
            evaluate_report(policy_for(parse_config(config_text).policy, "127.0.0.1:5000/team/app:1"),
                            predicate["scanner"].get("result"), NOW)


def test_a_repository_split_between_policies_by_tag_is_refused(config_text: str):
    # admission matches repo:* and repo@*: a Pod naming :legacy by digest could not be held to the override
    split = config_text.replace('["docker.io/library/alpine*"]', '["127.0.0.1:5000/team/app:legacy"]').replace(
        "  - alpine:3.19\n", "  - alpine:3.19\n  - 127.0.0.1:5000/team/app:legacy\n")
    with pytest.raises(VulnattestError, match=r"127\.0\.0\.1:5000/team/app: its images fall under different "
                                              r"policies .*make the policy\.overrides entry match the whole"):
        cluster_policy(parse_config(split), NOW)


@pytest.mark.parametrize(("text", "says"), [
    ("images: [r.example/a:1]\nsigning: {key: keyless}\n", "trusts no public key and no keyless identity"),
    ("images: []\n", "lists no images"),
])
def test_a_policy_that_would_refuse_every_pod_or_guard_nothing_is_not_written(tmp_path: Path, text: str, says: str):
    generate_keypair(tmp_path / "keys")  # the default signing.key
    with pytest.raises(VulnattestError, match=says):
        cluster_policy(parse_config(text, base=tmp_path), NOW)


def test_no_policy_means_only_signature_and_age(tmp_path: Path):
    generate_keypair(tmp_path)
    config = parse_config(f"images: [r.example/a:1]\nsigning: {{key: {tmp_path}/vulnattest.key}}\n")
    [age] = _conditions(cluster_policy(config, NOW), "r.example/a:*")
    assert age["value"] == "168h0m0s"


def test_cli_writes_the_policy(config_text: str, tmp_path: Path):
    path = tmp_path / "fleet.yaml"
    path.write_text(config_text)
    result = CliRunner().invoke(app, ["policy", "kyverno", "--config", str(path), "--audit"])
    assert result.exit_code == 0, result.output
    policy = yaml.safe_load(result.stdout)
    assert policy["kind"] == "ClusterPolicy"
    assert {v["failureAction"] for v in policy["spec"]["rules"][0]["verifyImages"]} == {"Audit"}


def test_what_the_policy_asks_of_an_image_reads_back(config_text: str, tmp_path: Path):
    from vulnattest.errors import VulnattestError
    from vulnattest.images import ImageRef
    from vulnattest.kyverno import policy_requirements

    policy = cluster_policy(parse_config(config_text), NOW)
    required = policy_requirements(policy, ImageRef.parse("127.0.0.1:5000/team/app:2"), "policy.yaml")
    assert required.max_age == timedelta(hours=72)
    # Kyverno's own name for a Docker Hub image matches the generated patterns, by tag and by digest
    assert policy_requirements(policy, ImageRef.parse("alpine:3.20"), "p").max_age == timedelta(hours=72)
    assert policy_requirements(policy, ImageRef.parse(f"alpine@sha256:{'b' * 64}"), "p").max_age is not None
    stricter = json.loads(json.dumps(policy))
    stricter["spec"]["rules"][0]["verifyImages"][0]["attestations"][0]["conditions"][0]["all"][0]["value"] = "90m"
    assert {policy_requirements(stricter, ImageRef.parse(ref), "p").max_age
            for ref in ("127.0.0.1:5000/team/app:2", "alpine:3.20")} == {timedelta(minutes=90), timedelta(hours=72)}
    with pytest.raises(VulnattestError, match=r"policy\.yaml asks nothing of ghcr\.io/other/app:1"):
        policy_requirements(policy, ImageRef.parse("ghcr.io/other/app:1"), "policy.yaml")
