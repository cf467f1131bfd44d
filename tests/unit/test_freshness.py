"""Verdicts judged as Kyverno admits: every selected attestation must pass; dropped ones do not count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vulnattest.config import AllowEntry, FreshnessSettings, PolicySettings, parse_config
from vulnattest.errors import ConfigError, NotFoundError, RegistryAuthError, RegistryError, TransientRegistryError
from vulnattest.freshness import (
    FreshnessChecker,
    FreshnessRules,
    ImageVerdict,
    OnCallCommands,
    Verdict,
    counts_text,
    fleet_markdown,
    verdict_counts,
    worst_first,
)
from vulnattest.images import ImageRef
from vulnattest.signing.interface import PublicKeyVerifier, load_public_key
from vulnattest.verification import AttestationCheck, Check

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
IMAGE = "registry.example/team/app:1"
DIGEST = "sha256:" + "a" * 64
MAX_AGE, WARN = timedelta(hours=168), timedelta(hours=30)
TRIVY_RESULT = {"SchemaVersion": 2, "Results": [{"Target": "alpine 3.19", "Vulnerabilities": [
    {"VulnerabilityID": "CVE-2099-0001", "PkgName": "busybox", "InstalledVersion": "1.36.1-r15",
     "FixedVersion": "1.36.1-r16", "Severity": "CRITICAL"},
    {"VulnerabilityID": "CVE-2099-0003", "PkgName": "zlib", "InstalledVersion": "1.3.1-r0", "Severity": "MEDIUM"},
]}]}


@pytest.fixture(scope="module")
def verifier() -> PublicKeyVerifier:
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKeyVerifier([load_public_key(pem, "test")])


@pytest.fixture
def checker(verifier: PublicKeyVerifier) -> FreshnessChecker:
    return FreshnessChecker(FreshnessRules(MAX_AGE, WARN), verifier, commands=OnCallCommands("/etc/fleet.yaml"))


def predicate(finished: datetime, result: Any = TRIVY_RESULT) -> dict[str, Any]:
    return {
        "invocation": {"parameters": {"report": {"uri": "s3://reports/x.json", "sha256": "00"}}},
        "scanner": {"uri": "pkg:github/aquasecurity/trivy@v0.76.0", "version": "0.76.0", "result": result},
        "metadata": {"scanStartedOn": "x", "scanFinishedOn": finished.strftime("%Y-%m-%dT%H:%M:%SZ")},
    }


def good(age: timedelta, layer: str = "sha256:" + "1" * 64, result: Any = TRIVY_RESULT) -> AttestationCheck:
    finished = NOW - age
    return AttestationCheck(layer, ok=True, scan_finished=finished, key_id="k", predicate=predicate(finished, result))


def bad(failed: Check, reason: str, layer: str = "sha256:" + "2" * 64) -> AttestationCheck:
    return AttestationCheck(layer, ok=False, reason=reason, failed=failed)


def test_a_recent_scan_is_fresh_with_its_deadline_and_last_scan(checker: FreshnessChecker):
    verdict = checker.judge(IMAGE, DIGEST, [good(timedelta(hours=3))], NOW)
    assert verdict.verdict is Verdict.FRESH and verdict.ok
    assert verdict.age == timedelta(hours=3)
    assert verdict.deadline == NOW - timedelta(hours=3) + MAX_AGE
    assert verdict.reason == ("scanned 3h0m0s ago; warnings start 2030-06-07T03:00:00Z, admission refuses it from "
                              "2030-06-08T09:00:00Z")
    assert verdict.action == "-"
    assert verdict.last_scan is not None
    assert verdict.last_scan.describe() == ("scan finished 2030-06-01T09:00:00Z by trivy 0.76.0: C1 H0 M1 L0 U0; "
                                            "report s3://reports/x.json")


@pytest.mark.parametrize(("age", "expected"), [
    (MAX_AGE - WARN - timedelta(seconds=1), Verdict.FRESH),
    (MAX_AGE - WARN, Verdict.EXPIRING),
    (MAX_AGE, Verdict.EXPIRING),  # Kyverno's condition is time_since <= max_age: still admitted
    (MAX_AGE + timedelta(seconds=1), Verdict.STALE),
])
def test_age_boundaries(checker: FreshnessChecker, age: timedelta, expected: Verdict):
    assert checker.judge(IMAGE, DIGEST, [good(age)], NOW).verdict is expected


def test_expiring_names_the_deadline_and_the_command(checker: FreshnessChecker):
    verdict = checker.judge(IMAGE, DIGEST, [good(MAX_AGE - timedelta(hours=2))], NOW)
    assert verdict.verdict is Verdict.EXPIRING
    assert verdict.reason == "scanned 166h0m0s ago; admission refuses it from 2030-06-01T14:00:00Z, in 2h0m0s"
    assert verdict.action == "vulnattest run --config /etc/fleet.yaml --image registry.example/team/app:1"
    assert verdict.deadline_text() == "2030-06-01T14:00:00Z (in 2h0m0s)"


def test_stale_says_since_when_admission_refuses(checker: FreshnessChecker):
    verdict = checker.judge(IMAGE, DIGEST, [good(MAX_AGE + timedelta(hours=5))], NOW)
    assert verdict.verdict is Verdict.STALE
    assert verdict.reason == ("scanned 173h0m0s ago, over max_age 168h0m0s; admission refuses it since "
                              "2030-06-01T07:00:00Z")
    assert verdict.deadline_text() == "2030-06-01T07:00:00Z (5h0m0s ago)"
    assert verdict.action.startswith("vulnattest run --config /etc/fleet.yaml --image ")


def test_a_stale_sibling_beside_a_fresh_one_is_stale_for_its_own_reason(checker: FreshnessChecker):
    checks = [good(timedelta(hours=1), "sha256:" + "f" * 64), good(MAX_AGE * 2, "sha256:" + "0" * 64)]
    verdict = checker.judge(IMAGE, DIGEST, checks, NOW)
    assert verdict.verdict is Verdict.STALE
    assert "1 stale vuln attestation(s) (oldest scanned 336h0m0s ago) sit beside a fresh one" in verdict.reason
    assert "Kyverno makes every one pass" in verdict.reason
    assert verdict.age == MAX_AGE * 2  # the oldest governs
    assert verdict.last_scan is not None and verdict.last_scan.finished == NOW - timedelta(hours=1)  # the newest


def test_two_fresh_siblings_are_fresh_and_the_oldest_sets_the_deadline(checker: FreshnessChecker):
    verdict = checker.judge(IMAGE, DIGEST, [good(timedelta(hours=1)), good(timedelta(hours=10))], NOW)
    assert verdict.verdict is Verdict.FRESH
    assert verdict.deadline == NOW - timedelta(hours=10) + MAX_AGE


def test_no_attestation_is_missing(checker: FreshnessChecker):
    verdict = checker.judge(IMAGE, DIGEST, [], NOW)
    assert verdict.verdict is Verdict.MISSING
    assert verdict.reason == "no vuln attestation is attached to sha256:aaaaaaaaaaaa; admission refuses it"
    assert verdict.deadline is None and verdict.age is None
    assert verdict.action.startswith("vulnattest run ")


@pytest.mark.parametrize(("failed", "reason"), [
    (Check.SIGNATURE, "signature does not verify with any trusted public key"),
    (Check.SUBJECT, "statement subject is not sha256:… (an attestation of another image)"),
    (Check.PREDICATE_TYPE, "predicate type 'cosign.sigstore.dev/attestation/vuln/v1' is not …"),
    (Check.ENVELOPE, "not a DSSE envelope"),
])
def test_only_attestations_admission_drops_is_invalid_naming_the_check(
    checker: FreshnessChecker, failed: Check, reason: str
):
    verdict = checker.judge(IMAGE, DIGEST, [bad(failed, reason)], NOW)
    assert verdict.verdict is Verdict.INVALID
    assert verdict.reason.startswith(f"no vuln attestation admission accepts: {reason} [{failed.value}]")
    assert ("signing.public_keys" in verdict.reason) is (failed is Check.SIGNATURE)


def test_a_dropped_attestation_beside_a_fresh_one_does_not_block_but_is_noted(checker: FreshnessChecker):
    checks = [good(timedelta(hours=1)), bad(Check.SIGNATURE, "signature does not verify (unknown key)")]
    verdict = checker.judge(IMAGE, DIGEST, checks, NOW)
    assert verdict.verdict is Verdict.FRESH
    assert verdict.notes == ("admission ignores attestation sha256:222222222222: signature does not verify "
                             "(unknown key)",)
    assert verdict.attestations == 2


@pytest.mark.parametrize(("failed", "reason"), [
    (Check.SCAN_TIME, "metadata.scanFinishedOn 2031-01-01T00:00:00+00:00 is in the future"),
    (Check.PREDICATE, "statement has no predicate object"),
])
def test_a_selected_attestation_failing_the_conditions_blocks_even_beside_a_fresh_one(
    checker: FreshnessChecker, failed: Check, reason: str
):
    verdict = checker.judge(IMAGE, DIGEST, [good(timedelta(hours=1)), bad(failed, reason)], NOW)
    assert verdict.verdict is Verdict.INVALID
    assert verdict.reason == (f"1 vuln attestation(s) admission selects fail its conditions, which every one must "
                              f"pass: {reason} [{failed.value}]")


def policy_checker(verifier: PublicKeyVerifier, **policy: Any) -> FreshnessChecker:
    return FreshnessChecker(FreshnessRules(MAX_AGE, WARN), verifier, PolicySettings(**policy),
                            OnCallCommands("fleet.yaml"))


def test_a_policy_violation_names_the_findings_and_both_ways_out(verifier: PublicKeyVerifier):
    verdict = policy_checker(verifier, severity="HIGH").judge(IMAGE, DIGEST, [good(timedelta(hours=1))], NOW)
    assert verdict.verdict is Verdict.POLICY
    assert verdict.reason == ("1 finding(s) violate the policy: CVE-2099-0001 (CRITICAL) in busybox 1.36.1-r15, "
                              "fixed in 1.36.1-r16: at or above HIGH")
    assert "rebuild registry.example/team/app:1" in verdict.action and "policy.allow in fleet.yaml" in verdict.action
    assert verdict.deadline is not None  # the attestation's deadline still stands


def test_stale_beats_policy(verifier: PublicKeyVerifier):
    verdict = policy_checker(verifier, severity="HIGH").judge(IMAGE, DIGEST, [good(MAX_AGE * 2)], NOW)
    assert verdict.verdict is Verdict.STALE


def test_policy_applies_to_every_selected_attestation(verifier: PublicKeyVerifier):
    clean = {"SchemaVersion": 2, "Results": []}
    checks = [good(timedelta(hours=1), result=clean), good(timedelta(hours=2))]
    assert policy_checker(verifier, severity="CRITICAL").judge(IMAGE, DIGEST, checks, NOW).verdict is Verdict.POLICY


def test_a_report_that_is_not_trivy_fails_an_active_policy(verifier: PublicKeyVerifier):
    checks = [good(timedelta(hours=1), result={"Results": 7})]
    verdict = policy_checker(verifier, severity="HIGH").judge(IMAGE, DIGEST, checks, NOW)
    assert verdict.verdict is Verdict.POLICY
    assert verdict.reason.startswith("cannot check the policy: scanner.result of attestation sha256:111111111111")
    assert policy_checker(verifier).judge(IMAGE, DIGEST, checks, NOW).verdict is Verdict.FRESH


def test_an_allow_entry_about_to_expire_makes_the_image_expiring(verifier: PublicKeyVerifier):
    entry = AllowEntry(id="CVE-2099-0001", reason="applet unused", expires=NOW + timedelta(days=3))
    verdict = policy_checker(verifier, severity="HIGH", allow=(entry,)).judge(
        IMAGE, DIGEST, [good(timedelta(hours=1))], NOW)
    assert verdict.verdict is Verdict.EXPIRING
    assert verdict.reason == ("allow entry CVE-2099-0001 ('applet unused') expires 2030-06-04T12:00:00Z; "
                              "1 finding(s) then fail the policy")
    assert verdict.action.startswith("renew or drop the allow entry CVE-2099-0001 in fleet.yaml")
    far = AllowEntry(id="CVE-2099-0001", reason="applet unused", expires=NOW + timedelta(days=30))
    assert policy_checker(verifier, severity="HIGH", allow=(far,)).judge(
        IMAGE, DIGEST, [good(timedelta(hours=1))], NOW).verdict is Verdict.FRESH


def test_unreachable_tells_what_to_check(checker: FreshnessChecker):
    down = checker.unreachable(ImageRef.parse(IMAGE), TransientRegistryError("cannot reach"), NOW)
    assert down.verdict is Verdict.UNREACHABLE
    assert down.reason == "cannot reach"
    assert down.action == ("check that registry.example is up and reachable from here, then "
                           "`vulnattest status --config /etc/fleet.yaml --image registry.example/team/app:1`")
    denied = checker.unreachable(ImageRef.parse(IMAGE), RegistryAuthError("x: 403", registry="registry.example"), NOW)
    assert denied.action.startswith("run `docker login registry.example`")
    # the hint is the error type's: a message that only mentions a login is no login failure
    worded = checker.unreachable(ImageRef.parse(IMAGE), RegistryError("x: access denied, wants a login"), NOW)
    assert worded.action.startswith("check that registry.example is up and reachable from here")
    gone = checker.unreachable(ImageRef.parse(IMAGE), NotFoundError("x: not found"), NOW, hint="push it")
    assert gone.action.startswith("push it, then `vulnattest status")


def test_commands_quote_what_a_shell_would_split():
    commands = OnCallCommands("/srv/my fleet.yaml")
    assert commands.run("r.example/a:1") == "vulnattest run --config '/srv/my fleet.yaml' --image r.example/a:1"
    assert commands.fleet_status() == "vulnattest status --config '/srv/my fleet.yaml'"


def verdict_of(kind: Verdict, image: str, deadline_hours: float | None = None) -> ImageVerdict:
    deadline = NOW + timedelta(hours=deadline_hours) if deadline_hours is not None else None
    return ImageVerdict(image=image, verdict=kind, reason=f"{kind.value} | because", action="do it",
                        checked_at=NOW, digest=DIGEST, deadline=deadline,
                        scan_finished=deadline - MAX_AGE if deadline else None)


FLEET = [
    verdict_of(Verdict.FRESH, "f"), verdict_of(Verdict.EXPIRING, "e-late", 20),
    verdict_of(Verdict.EXPIRING, "e-soon", 2), verdict_of(Verdict.UNREACHABLE, "u"),
    verdict_of(Verdict.STALE, "s", -3), verdict_of(Verdict.MISSING, "m"),
    verdict_of(Verdict.POLICY, "p", 50), verdict_of(Verdict.INVALID, "i"),
]


def test_worst_first_then_earliest_deadline():
    assert [v.image for v in worst_first(FLEET)] == ["s", "i", "m", "p", "u", "e-soon", "e-late", "f"]


def test_counts_list_every_verdict_worst_first():
    assert list(verdict_counts(FLEET).items())[:3] == [(Verdict.STALE, 1), (Verdict.INVALID, 1), (Verdict.MISSING, 1)]
    assert counts_text(FLEET) == ("8 image(s): 1 stale, 1 invalid, 1 missing, 1 policy, 1 unreachable, 2 expiring, "
                                  "1 fresh")
    assert counts_text([]) == "0 image(s)"


def test_fleet_markdown_counts_then_every_image_not_fresh_worst_first():
    markdown = fleet_markdown(FLEET, problems=["webhook down"])
    assert markdown.startswith("# check-freshness\n\n**8 image(s): 1 stale,")
    assert "| expiring | 2 |" in markdown
    assert "## Problems with this run\n\n- webhook down" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| **")]
    assert [row.split("`")[1] for row in rows] == ["s", "i", "m", "p", "u", "e-soon", "e-late"]
    assert "stale \\| because" in rows[0]  # table cells escape pipes
    assert "2030-06-01T09:00:00Z (3h0m0s ago)" in rows[0]
    assert fleet_markdown([FLEET[0]]).endswith("## Every image is fresh\n\n")


def test_json_has_what_status_promises():
    data = verdict_of(Verdict.STALE, "s", -3).to_json()
    assert {"image", "digest", "verdict", "age_seconds", "deadline", "reason", "action"} <= data.keys()
    assert (data["verdict"], data["age_seconds"], data["deadline"]) == ("stale", 171 * 3600, "2030-06-01T09:00:00Z")


def test_warn_before_defaults_to_one_scan_interval_plus_the_cache_plus_a_margin():
    assert FreshnessSettings().effective_warn_before() == timedelta(hours=30)
    settings = FreshnessSettings(scan_interval=timedelta(hours=6), admission_cache=timedelta(minutes=30),
                                 margin=timedelta(hours=1))
    assert settings.effective_warn_before() == timedelta(hours=7, minutes=30)
    assert FreshnessRules.from_settings(settings).warn_before == timedelta(hours=7, minutes=30)
    assert FreshnessSettings(warn_before=timedelta(hours=2)).effective_warn_before() == timedelta(hours=2)


def test_a_warning_window_as_long_as_max_age_is_refused_with_its_line():
    with pytest.raises(ConfigError) as caught:
        parse_config("images: [a/b]\nfreshness:\n  max_age: 24h\n")
    assert "<config>:2: freshness: warn_before (30h0m0s) must be shorter than max_age (24h0m0s)" in str(caught.value)


def test_freshness_and_alert_keys_read_from_the_config():
    config = parse_config("freshness: {max_age: 72h, scan_interval: 12h, remind_every: 4h, digest_threshold: 3}\n"
                          "alerts:\n  - webhook: https://hooks.example/T0/B0/secret\n  - prefect_block: slack/oncall\n")
    assert config.freshness.effective_warn_before() == timedelta(hours=18)
    assert (config.freshness.remind_every, config.freshness.digest_threshold) == (timedelta(hours=4), 3)
    assert [a.prefect_block for a in config.alerts] == [None, "slack/oncall"]
    assert "secret" not in repr(config.alerts)


@pytest.mark.parametrize(("entry", "message"), [
    ("{name: x}", "alerts.0: give exactly one of `webhook: URL`, `prefect_block: NAME`, `pagerduty: ROUTING_KEY` or "
                  "`alertmanager: URL`"),
    ("{webhook: 'https://h/x', prefect_block: b}", "alerts.0: give exactly one of"),
    ("{webhook: 'file:///etc/passwd'}", "alerts.0: webhook must be an http:// or https:// URL"),
])
def test_alert_channel_errors_name_the_entry(entry: str, message: str):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"alerts:\n  - {entry}\n")
    assert f"<config>:2: {message}" in str(caught.value)


def test_a_warning_window_that_fires_before_every_scheduled_scan_is_refused():
    with pytest.raises(ConfigError) as caught:
        parse_config("freshness: {max_age: 48h, warn_before: 30h, scan_interval: 24h}\n")
    assert ("max_age - warn_before (18h0m0s) is shorter than scan_interval (24h0m0s), so healthy images turn "
            "expiring before each scheduled scan") in str(caught.value)
    hourly = parse_config("freshness: {max_age: 24h, scan_interval: 1h, margin: 1h}\n").freshness
    assert hourly.effective_warn_before() == timedelta(hours=3)


def test_a_scan_slightly_ahead_of_this_clock_is_zero_seconds_old(checker: FreshnessChecker):
    verdict = checker.judge(IMAGE, DIGEST, [good(-timedelta(minutes=2))], NOW)
    assert verdict.verdict is Verdict.FRESH
    assert verdict.age == timedelta(0) and verdict.to_json()["age_seconds"] == 0
    assert verdict.reason.startswith("scanned 0s ago;")
