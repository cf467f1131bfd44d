"""The vulnerability policy: severity threshold (fixed only or all), allow list with reason and expiry, deny list,
per-image overrides, and how it reads from the fleet config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vulnattest.config import AllowEntry, PolicyOverride, PolicySettings, parse_config
from vulnattest.errors import ConfigError, ScanError
from vulnattest.policy import ImagePolicy, evaluate, evaluate_report, policy_for, severity_rank
from vulnattest.scanners.interface import Finding

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
CRIT_FIXED = Finding("CVE-2099-0001", "CRITICAL", "busybox", "1.36.1-r15", "1.36.1-r16")
HIGH_FIXED = Finding("CVE-2099-0002", "HIGH", "libssl3", "3.1.4-r5", "3.1.4-r6")
HIGH_UNFIXED = Finding("CVE-2099-0009", "HIGH", "zlib", "1.3.1-r0")
MEDIUM_UNFIXED = Finding("CVE-2099-0003", "MEDIUM", "zlib", "1.3.1-r0")
LOW_FIXED = Finding("CVE-2099-0004", "LOW", "musl", "1.2.4", "1.2.5")
UNKNOWN_FIXED = Finding("CVE-2099-0005", "UNKNOWN", "zlib", "1.3.1-r0", "1.3.1-r1")
ALL = (CRIT_FIXED, HIGH_FIXED, HIGH_UNFIXED, MEDIUM_UNFIXED, LOW_FIXED, UNKNOWN_FIXED)


def allow(vuln_id: str, expires: datetime, reason: str = "not reachable in this image") -> AllowEntry:
    return AllowEntry(id=vuln_id, reason=reason, expires=expires)


def ids(result: Any) -> list[str]:
    return sorted(v.finding.vulnerability_id for v in result.violations)


def test_severity_ranks_worst_first_and_unknown_last():
    assert [severity_rank(s) for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN", "BOGUS")] == [0, 1, 2, 3, 4, 4]


@pytest.mark.parametrize(("severity", "fixed_only", "expected"), [
    ("CRITICAL", False, ["CVE-2099-0001"]),
    ("HIGH", False, ["CVE-2099-0001", "CVE-2099-0002", "CVE-2099-0009"]),
    ("HIGH", True, ["CVE-2099-0001", "CVE-2099-0002"]),
    ("MEDIUM", True, ["CVE-2099-0001", "CVE-2099-0002"]),
    ("LOW", True, ["CVE-2099-0001", "CVE-2099-0002", "CVE-2099-0004"]),
    ("UNKNOWN", False, sorted(f.vulnerability_id for f in ALL)),
])
def test_threshold_fails_findings_at_or_above_it(severity: str, fixed_only: bool, expected: list[str]):
    result = evaluate(ImagePolicy(severity=severity, fixed_only=fixed_only), ALL, NOW)
    assert ids(result) == expected
    assert result.ok is (not expected)


def test_no_threshold_and_no_deny_list_is_inactive_and_passes_everything():
    policy = ImagePolicy()
    assert not policy.active
    assert evaluate(policy, ALL, NOW).ok
    # an inactive policy does not even need a parseable report
    assert evaluate_report(policy, {"not": "trivy"}, NOW).ok


def test_violation_says_what_is_wrong_and_where_the_fix_is():
    (violation,) = evaluate(ImagePolicy(severity="CRITICAL"), ALL, NOW).violations
    assert violation.describe() == ("CVE-2099-0001 (CRITICAL) in busybox 1.36.1-r15, fixed in 1.36.1-r16: "
                                    "at or above CRITICAL")


def test_an_unexpired_allow_entry_accepts_the_finding():
    policy = ImagePolicy(severity="HIGH", allow=(allow("CVE-2099-0001", NOW + timedelta(days=60)),))
    result = evaluate(policy, ALL, NOW)
    assert ids(result) == ["CVE-2099-0002", "CVE-2099-0009"]
    assert result.allowed == (CRIT_FIXED,)
    assert result.expiring == ()


def test_an_expired_allow_entry_stops_applying_and_says_so():
    policy = ImagePolicy(severity="CRITICAL", allow=(allow("CVE-2099-0001", NOW - timedelta(seconds=1)),))
    (violation,) = evaluate(policy, ALL, NOW).violations
    assert violation.finding == CRIT_FIXED
    assert "allow entry expired 2030-06-01T11:59:59Z" in violation.why
    assert "'not reachable in this image'" in violation.why


def test_an_entry_expiring_at_exactly_now_no_longer_applies():
    policy = ImagePolicy(severity="CRITICAL", allow=(allow("CVE-2099-0001", NOW),))
    assert not evaluate(policy, ALL, NOW).ok


def test_allow_entries_relied_on_and_expiring_soon_are_flagged_ahead_of_time():
    soon, later = NOW + timedelta(days=2), NOW + timedelta(days=30)
    policy = ImagePolicy(
        severity="HIGH", allow_warning=timedelta(days=7),
        allow=(allow("CVE-2099-0001", soon), allow("CVE-2099-0002", later), allow("CVE-2099-0009", soon),
               allow("CVE-2099-7777", soon)),  # expiring, but this image has no such finding: not relied on
    )
    result = evaluate(policy, ALL, NOW)
    assert result.ok
    assert [e.entry.id for e in result.expiring] == ["CVE-2099-0001", "CVE-2099-0009"]
    assert result.next_expiry == soon
    assert result.expiring[0].describe() == ("allow entry CVE-2099-0001 ('not reachable in this image') expires "
                                             "2030-06-03T12:00:00Z; 1 finding(s) then fail the policy")


def test_an_allow_entry_for_a_finding_under_the_threshold_is_not_relied_on():
    policy = ImagePolicy(severity="CRITICAL", allow=(allow("CVE-2099-0002", NOW + timedelta(days=1)),))
    result = evaluate(policy, ALL, NOW)
    assert result.expiring == ()
    assert ids(result) == ["CVE-2099-0001"]


def test_the_latest_of_two_entries_for_one_id_applies():
    policy = ImagePolicy(severity="CRITICAL", allow=(allow("CVE-2099-0001", NOW + timedelta(days=90)),
                                                     allow("CVE-2099-0001", NOW - timedelta(days=1))))
    assert evaluate(policy, ALL, NOW).ok


def test_deny_list_fails_whatever_the_severity_fix_or_allow_list():
    policy = ImagePolicy(severity="CRITICAL", deny=frozenset({"CVE-2099-0004", "CVE-2099-0001"}),
                         allow=(allow("CVE-2099-0001", NOW + timedelta(days=60)),))
    result = evaluate(policy, ALL, NOW)
    assert ids(result) == ["CVE-2099-0001", "CVE-2099-0004"]
    why = {v.finding.vulnerability_id: v.why for v in result.violations}
    assert why["CVE-2099-0001"] == "on the deny list (the deny list beats the allow list)"
    assert why["CVE-2099-0004"] == "on the deny list"
    assert ImagePolicy(deny=frozenset({"X"})).active


def test_the_same_finding_reported_twice_is_one_violation():
    assert len(evaluate(ImagePolicy(severity="CRITICAL"), [CRIT_FIXED, CRIT_FIXED], NOW).violations) == 1


def test_merged_results_keep_each_finding_and_expiring_entry_once():
    policy = ImagePolicy(severity="HIGH", allow=(allow("CVE-2099-0002", NOW + timedelta(days=1)),))
    one, two = evaluate(policy, ALL, NOW), evaluate(policy, [CRIT_FIXED, HIGH_FIXED], NOW)
    merged = one.merged(two)
    assert ids(merged) == ["CVE-2099-0001", "CVE-2099-0009"]
    assert [(e.entry.id, len(e.findings)) for e in merged.expiring] == [("CVE-2099-0002", 1)]


def test_overrides_replace_the_threshold_and_extend_the_lists_in_order():
    settings = PolicySettings(
        severity="HIGH", fixed_only=True, deny=("CVE-1",), allow=(allow("CVE-A", NOW),),
        overrides=(
            PolicyOverride(images=("registry.example/team/*",), severity="CRITICAL", deny=("CVE-2",)),
            PolicyOverride(images=("registry.example/team/legacy:*",), fixed_only=False,
                           allow=(allow("CVE-B", NOW),)),
            PolicyOverride(images=("other.example/*",), severity="LOW"),
        ),
    )
    legacy = policy_for(settings, "registry.example/team/legacy:1.2")
    assert (legacy.severity, legacy.fixed_only) == ("CRITICAL", False)
    assert legacy.deny == {"CVE-1", "CVE-2"}
    assert [e.id for e in legacy.allow] == ["CVE-A", "CVE-B"]
    api = policy_for(settings, "registry.example/team/api:2")
    assert (api.severity, api.fixed_only, api.deny) == ("CRITICAL", True, {"CVE-1", "CVE-2"})
    elsewhere = policy_for(settings, "docker.io/library/alpine:3.19")
    assert (elsewhere.severity, elsewhere.fixed_only, elsewhere.deny) == ("HIGH", True, {"CVE-1"})


def test_override_patterns_match_the_normalised_reference_too():
    settings = PolicySettings(overrides=(PolicyOverride(images=("docker.io/library/alpine",), severity="LOW"),))
    assert policy_for(settings, "alpine").severity == "LOW"  # docker.io/library/alpine:latest, by name
    assert policy_for(settings, "alpine:3.19").severity == "LOW"
    assert policy_for(settings, "nginx").severity is None


def test_a_trivy_report_is_parsed_for_the_policy():
    report = {"SchemaVersion": 2, "Results": [{"Target": "x", "Vulnerabilities": [
        {"VulnerabilityID": "CVE-2099-0001", "PkgName": "busybox", "InstalledVersion": "1", "FixedVersion": "2",
         "Severity": "CRITICAL"},
    ]}]}
    assert ids(evaluate_report(ImagePolicy(severity="HIGH"), report, NOW)) == ["CVE-2099-0001"]
    with pytest.raises(ScanError, match="not a Trivy JSON report"):
        evaluate_report(ImagePolicy(severity="HIGH"), {"Results": "nope"}, NOW)


POLICY_YAML = """\
images: [registry.example/team/app:1]
policy:
  severity: HIGH
  fixed_only: true
  deny: [cve-2099-0003]
  allow_warning: 14d
  allow:
    - id: CVE-2099-0001
      reason: busybox applets are not used
      expires: 2030-07-01
  overrides:
    - images: ["registry.example/team/*"]
      severity: CRITICAL
"""


def test_policy_config_reads_dates_as_utc_midnight_and_ids_in_upper_case():
    policy = parse_config(POLICY_YAML).policy
    assert policy.deny == ("CVE-2099-0003",)
    assert policy.allow[0].expires == datetime(2030, 7, 1, tzinfo=UTC)
    assert policy.allow_warning == timedelta(days=14)
    assert policy_for(policy, "registry.example/team/app:1").severity == "CRITICAL"


def test_an_allow_entry_without_a_reason_is_refused_with_its_line():
    with pytest.raises(ConfigError) as caught:
        parse_config(POLICY_YAML.replace("      reason: busybox applets are not used\n", ""))
    assert "<config>:8: policy.allow.0.reason: Field required" in str(caught.value)


def test_an_allow_entry_without_an_expiry_is_refused():
    with pytest.raises(ConfigError) as caught:
        parse_config(POLICY_YAML.replace("      expires: 2030-07-01\n", ""))
    assert "policy.allow.0.expires: Field required" in str(caught.value)


def test_without_a_threshold_only_the_deny_list_applies():
    policy = policy_for(parse_config(POLICY_YAML.replace("  severity: HIGH\n", "")).policy, "other.example/x:1")
    assert (policy.severity, policy.fixed_only, policy.deny) == (None, True, {"CVE-2099-0003"})
    assert ids(evaluate(policy, ALL, NOW)) == ["CVE-2099-0003"]


def test_an_unknown_severity_is_refused_with_its_line():
    with pytest.raises(ConfigError) as caught:
        parse_config(POLICY_YAML.replace("severity: CRITICAL", "severity: SEVERE"))
    assert "<config>:13: policy.overrides.0.severity" in str(caught.value)
