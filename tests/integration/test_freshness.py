"""Freshness against a real registry: attestations of controlled ages and every way one can be wrong, judged as
Kyverno admits; `vulnattest status`; and alerts to a loopback webhook with the state kept in S3."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner

from vulnattest.alerts import AlertState, WebhookChannel, load_state, plan_alerts, save_state
from vulnattest.attestations import VULN_PREDICATE_TYPE, Envelope, Invocation, sign_statement, vuln_statement
from vulnattest.attestations.cosign import CosignAttacher
from vulnattest.cli import app
from vulnattest.config import PolicySettings, load_config
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, free_port, push_image
from vulnattest.freshness import (
    FreshnessChecker,
    FreshnessRules,
    ImageVerdict,
    OnCallCommands,
    Verdict,
    check_fleet,
    probe_registry,
)
from vulnattest.images import ImageRef
from vulnattest.registry import Registries, RegistryClient, ResolvedImage, resolve
from vulnattest.scanners.interface import ScannerInfo, ScanReport
from vulnattest.scanners.trivy import TrivyScanner
from vulnattest.signing.interface import PublicKeyVerifier, Signer
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair
from vulnattest.storage import ObjectKey, StoredObject, VerifiedReport
from vulnattest.storage.s3 import S3ReportStore
from vulnattest.verification import OLD_VULN_PREDICATE_TYPE

MAX_AGE, WARN = timedelta(hours=168), timedelta(hours=30)
TRIVY = ScannerInfo("pkg:github/aquasecurity/trivy@v0.76.0", "0.76.0", "oci://mirror.gcr.io/aquasec/trivy-db:2", "2")
# A report in Trivy's JSON shape: one critical finding with a fix, one medium without
REPORT = json.dumps({"SchemaVersion": 2, "ArtifactName": "demo", "Results": [{
    "Target": "demo (alpine 3.19.1)", "Class": "os-pkgs", "Type": "alpine", "Vulnerabilities": [
        {"VulnerabilityID": "CVE-2099-0001", "PkgName": "busybox", "InstalledVersion": "1.36.1-r15",
         "FixedVersion": "1.36.1-r16", "Severity": "CRITICAL"},
        {"VulnerabilityID": "CVE-2099-0003", "PkgName": "zlib", "InstalledVersion": "1.3.1-r1", "Severity": "MEDIUM"},
    ]}]}).encode()


@dataclasses.dataclass
class Attester:
    """Signs vuln statements with chosen scan times and attaches them in cosign's layout."""

    client: RegistryClient
    signer: Signer
    attacher: CosignAttacher = dataclasses.field(default_factory=CosignAttacher)
    report: bytes = REPORT

    def statement(self, image: ResolvedImage, finished: datetime, predicate_type: str = VULN_PREDICATE_TYPE) -> bytes:
        scan = ScanReport(image=image, body=self.report, started=finished - timedelta(seconds=30), finished=finished,
                          scanner=TRIVY, findings=())
        stored = VerifiedReport(StoredObject(ObjectKey("reports/x.json"), "s3://reports/x.json", scan.sha256))
        statement = json.loads(vuln_statement(scan, stored, Invocation()))
        statement["predicateType"] = predicate_type
        return json.dumps(statement).encode()

    def attach(self, image: ResolvedImage, age: timedelta, *, replace: bool = True, signer: Signer | None = None,
               subject: ResolvedImage | None = None, predicate_type: str = VULN_PREDICATE_TYPE,
               now: datetime | None = None) -> Envelope:
        finished = (now or datetime.now(UTC)) - age
        envelope = sign_statement(self.statement(subject or image, finished, predicate_type), signer or self.signer)
        self.attacher.attach(self.client, image, envelope, predicate_type, replace=replace)
        return envelope

    def attach_envelope(self, image: ResolvedImage, envelope: Envelope) -> None:
        self.attacher.attach(self.client, image, envelope, VULN_PREDICATE_TYPE, replace=False)


def push(registry: LocalRegistry, name: str) -> tuple[str, ResolvedImage]:
    """Push a distinct small Alpine image as `<host>/freshness/<name>:1`."""
    client = registry.client()
    push_image(client, f"freshness/{name}", "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=f"freshness-{name}"))
    ref = f"{registry.host}/freshness/{name}:1"
    return ref, resolve(client, ImageRef.parse(ref))


@pytest.fixture(scope="module")
def signer(keypair: tuple[Path, Path]) -> KeyFileSigner:
    return KeyFileSigner.from_file(keypair[0])


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> KeyFileSigner:
    """A key nobody trusts."""
    return KeyFileSigner.from_file(generate_keypair(tmp_path_factory.mktemp("stranger"))[0])


@pytest.fixture(scope="module")
def attester(registry: LocalRegistry, signer: KeyFileSigner) -> Attester:
    return Attester(registry.client(), signer)


@pytest.fixture(scope="module")
def checker(keypair: tuple[Path, Path]) -> FreshnessChecker:
    return FreshnessChecker(FreshnessRules(MAX_AGE, WARN), PublicKeyVerifier.from_pem_files([keypair[1]]),
                            commands=OnCallCommands("fleet.yaml"))


def judge(checker: FreshnessChecker, registry: LocalRegistry, ref: str, now: datetime | None = None) -> ImageVerdict:
    return checker.check(registry.client(), ImageRef.parse(ref), now)


def test_ages_map_to_fresh_expiring_and_stale(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker
):
    ages = {"fresh": timedelta(hours=2), "expiring": MAX_AGE - WARN + timedelta(hours=1),
            "stale": MAX_AGE + timedelta(hours=1)}
    for name, age in ages.items():
        ref, image = push(registry, f"age-{name}")
        attester.attach(image, age)
        verdict = judge(checker, registry, ref)
        assert verdict.verdict.value == name, verdict.reason
        assert verdict.digest == image.digest
        assert verdict.age is not None and abs(verdict.age - age) < timedelta(minutes=1)
        assert verdict.deadline is not None and abs(verdict.deadline - (verdict.checked_at - age + MAX_AGE)) < \
            timedelta(minutes=1)
        assert verdict.last_scan is not None and verdict.last_scan.counts == {
            "CRITICAL": 1, "HIGH": 0, "MEDIUM": 1, "LOW": 0, "UNKNOWN": 0}
        assert verdict.last_scan.report_uri == "s3://reports/x.json"


def test_no_attestation_is_missing(registry: LocalRegistry, checker: FreshnessChecker):
    ref, _ = push(registry, "none")
    verdict = judge(checker, registry, ref)
    assert verdict.verdict is Verdict.MISSING
    assert verdict.action == f"vulnattest run --config fleet.yaml --image {ref}"


def test_a_tampered_envelope_is_invalid(registry: LocalRegistry, attester: Attester, checker: FreshnessChecker):
    ref, image = push(registry, "tampered")
    # a stale scan, re-dated to look fresh after signing: the signature no longer covers the payload
    signed = sign_statement(attester.statement(image, datetime.now(UTC) - MAX_AGE * 2), attester.signer)
    statement = json.loads(signed.payload)
    statement["predicate"]["metadata"]["scanFinishedOn"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    attester.attach_envelope(image, dataclasses.replace(signed, payload=json.dumps(statement).encode()))
    verdict = judge(checker, registry, ref)
    assert verdict.verdict is Verdict.INVALID
    assert "signature does not verify with any trusted public key" in verdict.reason
    assert "[signature]" in verdict.reason and "signing.public_keys" in verdict.reason


def test_an_unknown_key_is_invalid(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker, stranger: KeyFileSigner
):
    ref, image = push(registry, "stranger")
    attester.attach(image, timedelta(hours=1), signer=stranger)
    verdict = judge(checker, registry, ref)
    assert verdict.verdict is Verdict.INVALID
    assert "[signature]" in verdict.reason


def test_an_unknown_key_beside_a_fresh_trusted_one_is_admitted_and_noted(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker, stranger: KeyFileSigner
):
    ref, image = push(registry, "rotated")
    attester.attach(image, MAX_AGE * 2, signer=stranger)  # e.g. signed with a retired key
    attester.attach(image, timedelta(hours=1), replace=False)
    verdict = judge(checker, registry, ref)
    assert verdict.verdict is Verdict.FRESH, verdict.reason
    assert verdict.attestations == 2
    (note,) = verdict.notes
    assert note.startswith("admission ignores attestation sha256:") and "trusted public key" in note


def test_a_subject_of_another_image_is_invalid(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker
):
    ref, image = push(registry, "subject")
    _, other = push(registry, "subject-other")
    attester.attach(image, timedelta(hours=1), subject=other)
    verdict = judge(checker, registry, ref)
    assert verdict.verdict is Verdict.INVALID
    assert f"statement subject is not {image.digest} (an attestation of another image) [subject]" in verdict.reason


def test_the_old_scheme_less_predicate_type_is_invalid(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker
):
    ref, image = push(registry, "schemeless")
    attester.attach(image, timedelta(hours=1), predicate_type=OLD_VULN_PREDICATE_TYPE)
    verdict = judge(checker, registry, ref)
    assert verdict.verdict is Verdict.INVALID
    assert "predicate type 'cosign.sigstore.dev/attestation/vuln/v1' is not" in verdict.reason
    assert "[predicate-type]" in verdict.reason


def test_a_stale_sibling_beside_a_fresh_one_is_stale_and_re_attesting_fixes_it(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker
):
    ref, image = push(registry, "sibling")
    attester.attach(image, MAX_AGE + timedelta(hours=12))
    attester.attach(image, timedelta(hours=1), replace=False)
    verdict = judge(checker, registry, ref)
    assert verdict.verdict is Verdict.STALE
    assert verdict.attestations == 2
    assert "1 stale vuln attestation(s)" in verdict.reason and "beside a fresh one" in verdict.reason
    attester.attach(image, timedelta(minutes=1))  # what `vulnattest run` does: --replace semantics
    assert judge(checker, registry, ref).verdict is Verdict.FRESH


def test_a_scan_time_in_the_future_is_invalid_but_clock_skew_is_tolerated(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker
):
    ref, image = push(registry, "future")
    attester.attach(image, -timedelta(minutes=2))
    assert judge(checker, registry, ref).verdict is Verdict.FRESH
    attester.attach(image, -timedelta(hours=2))
    verdict = judge(checker, registry, ref)
    assert verdict.verdict is Verdict.INVALID
    assert "is in the future (Kyverno would count it as zero hours old; vulnattest refuses it" in verdict.reason
    assert verdict.reason.endswith("[scan-time]")


def test_a_closed_port_is_unreachable(checker: FreshnessChecker):
    host = f"127.0.0.1:{free_port()}"
    registries = Registries(insecure_hosts=frozenset({host}))
    try:
        verdicts = check_fleet(checker, registries, [ImageRef.parse(f"{host}/a/b:1"), ImageRef.parse(f"{host}/c:2")])
    finally:
        registries.close()
    assert [v.verdict for v in verdicts] == [Verdict.UNREACHABLE, Verdict.UNREACHABLE]
    assert f"{host}: cannot reach http://{host}/v2/ (ConnectError)" in verdicts[0].reason
    assert verdicts[0].action == (f"check that {host} is up and reachable from here, then "
                                  f"`vulnattest status --config fleet.yaml --image {host}/a/b:1`")


def test_a_crash_checking_one_image_leaves_the_rest_of_the_fleet_judged(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker, monkeypatch: pytest.MonkeyPatch
):
    good, image = push(registry, "crash-good")
    attester.attach(image, timedelta(hours=1))
    bad, _ = push(registry, "crash-bad")
    check = FreshnessChecker.check

    def crash_on_bad(self: FreshnessChecker, client: RegistryClient, ref: ImageRef, now: datetime) -> ImageVerdict:
        if str(ref) == bad:
            raise KeyError("digest")  # what a bug, or a registry answer nothing expected, raises
        return check(self, client, ref, now)

    monkeypatch.setattr(FreshnessChecker, "check", crash_on_bad)
    registries = Registries(insecure_hosts=frozenset({registry.host}))
    try:
        verdicts = check_fleet(checker, registries, [ImageRef.parse(bad), ImageRef.parse(good)])
    finally:
        registries.close()
    assert [v.verdict for v in verdicts] == [Verdict.UNREACHABLE, Verdict.FRESH]
    assert verdicts[0].reason == "KeyError: 'digest'"
    assert "this is a vulnattest bug: report it" in verdicts[0].action


def test_a_missing_tag_is_unreachable_with_a_hint(registry: LocalRegistry, checker: FreshnessChecker):
    probe_registry(registry.client())  # the registry itself answers
    ref = f"{registry.host}/freshness/never-pushed:1"
    verdict = judge(checker, registry, ref)
    assert verdict.verdict is Verdict.UNREACHABLE
    assert "not found" in verdict.reason
    assert verdict.action.startswith(f"check `{ref}` in fleet.yaml (is it pushed")


def test_policy_on_a_real_trivy_report(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker, trivy_cache: Path
):
    ref, image = push(registry, "policy-real")
    scanner = TrivyScanner(cache_dir=trivy_cache, offline=True, server="standalone",
                           insecure_registries=frozenset({registry.host}))
    real = Attester(attester.client, attester.signer, report=scanner.scan(image).body)
    real.attach(image, timedelta(hours=1))
    strict = dataclasses.replace(checker, policy=PolicySettings(severity="CRITICAL", fixed_only=True))
    verdict = judge(strict, registry, ref)
    assert verdict.verdict is Verdict.POLICY
    assert "CVE-2099-0001 (CRITICAL) in busybox 1.36.1-r15, fixed in 1.36.1-r16" in verdict.reason
    denied = dataclasses.replace(checker, policy=PolicySettings(deny=("CVE-2099-0003",)))
    assert "CVE-2099-0003 (MEDIUM) in zlib" in judge(denied, registry, ref).reason
    def allowing_until(expires: datetime) -> FreshnessChecker:
        entry = {"id": "CVE-2099-0001", "reason": "busybox applets unused", "expires": expires}
        return dataclasses.replace(checker, policy=PolicySettings(severity="CRITICAL", allow=(entry,)))

    assert judge(allowing_until(datetime.now(UTC) + timedelta(days=30)), registry, ref).verdict is Verdict.FRESH
    soon = judge(allowing_until(datetime.now(UTC) + timedelta(days=2)), registry, ref)
    assert soon.verdict is Verdict.EXPIRING
    assert soon.reason.startswith("allow entry CVE-2099-0001 ('busybox applets unused') expires ")
    assert judge(allowing_until(datetime.now(UTC) - timedelta(days=1)), registry, ref).verdict is Verdict.POLICY


def flat(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


def fleet_config(tmp_path: Path, registry: LocalRegistry, keypair: tuple[Path, Path], images: list[str],
                 **extra: Any) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({
        "images": images, "registries": {registry.host: {"insecure": True}},
        "store": {"url": (tmp_path / "reports").as_uri()}, "signing": {"key": str(keypair[0])}, **extra,
    }))
    return path


def test_status_json_reports_every_verdict(
    registry: LocalRegistry, attester: Attester, stranger: KeyFileSigner, keypair: tuple[Path, Path], tmp_path: Path
):
    fleet: dict[str, Verdict] = {}

    def image(name: str, expected: Verdict) -> ResolvedImage:
        ref, resolved = push(registry, f"status-{name}")
        fleet[ref] = expected
        return resolved

    attester.attach(image("fresh", Verdict.FRESH), timedelta(hours=1))
    attester.attach(image("expiring", Verdict.EXPIRING), MAX_AGE - timedelta(hours=3))
    attester.attach(image("stale", Verdict.STALE), MAX_AGE + timedelta(hours=3))
    sibling = image("sibling", Verdict.STALE)
    attester.attach(sibling, MAX_AGE * 2)
    attester.attach(sibling, timedelta(hours=1), replace=False)
    image("missing", Verdict.MISSING)
    attester.attach(image("stranger", Verdict.INVALID), timedelta(hours=1), signer=stranger)
    attester.attach(image("policy", Verdict.POLICY), timedelta(hours=1))
    down = f"127.0.0.1:{free_port()}/gone/app:1"
    fleet[down] = Verdict.UNREACHABLE
    config = fleet_config(tmp_path, registry, keypair, list(fleet), policy={
        "overrides": [{"images": [f"{registry.host}/freshness/status-policy:*"], "severity": "HIGH"}]})

    result = CliRunner().invoke(app, ["status", "--config", str(config), "--json"])

    assert result.exit_code == 0, result.output
    reported = json.loads(result.stdout)
    assert {item["image"]: item["verdict"] for item in reported} == {ref: v.value for ref, v in fleet.items()}
    by_image = {item["image"]: item for item in reported}
    for item in reported:
        assert {"image", "digest", "verdict", "age_seconds", "deadline", "reason", "action"} <= item.keys()
    fresh = by_image[f"{registry.host}/freshness/status-fresh:1"]
    assert 3500 < fresh["age_seconds"] < 3700
    assert datetime.fromisoformat(fresh["deadline"]) - datetime.now(UTC) > MAX_AGE - timedelta(hours=2)
    assert by_image[down]["digest"] is None and by_image[down]["deadline"] is None
    assert by_image[f"{registry.host}/freshness/status-missing:1"]["action"] == (
        f"vulnattest run --config {config} --image {registry.host}/freshness/status-missing:1")

    table = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert table.exit_code == 0
    counts = "8 image(s): 2 stale, 1 invalid, 1 missing, 1 policy, 1 unreachable, 1 expiring, 1 fresh"
    assert counts in flat(table.output)

    only = CliRunner().invoke(app, ["status", "--config", str(config), "--json", "--image", down])
    assert [item["verdict"] for item in json.loads(only.stdout)] == ["unreachable"]


def test_status_refuses_a_bad_config_with_its_line(tmp_path: Path):
    config = tmp_path / "fleet.yaml"
    config.write_text("images: [a/b:1]\nfreshness:\n  max_age: 12h\n")
    result = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert result.exit_code == 2
    assert "fleet.yaml:2: freshness: warn_before (30h0m0s) must be shorter than max_age" in flat(result.output)


# -- alerts to a loopback webhook, state in S3 -------------------------------------------------------------------


class WebhookReceiver:
    """An HTTP server on loopback that records every JSON POST; `answers` queues status codes to reply with."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.keys: list[str | None] = []  # the Idempotency-Key of every POST, answered or not
        self.answers: list[int] = []
        self.delay = 0.0  # seconds to take before answering (the work is done: received is appended first)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    if status < 300:
                        receiver.received.append(body)
                    receiver.paths.append(self.path)
                    receiver.keys.append(self.headers.get("Idempotency-Key"))
                time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/s3cr3t"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def take(self) -> list[dict[str, Any]]:
        """What arrived since the last call."""
        with self._lock:
            taken, self.received = self.received, []
            return taken


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def summary(messages: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(m["kind"], [(a["kind"], a["image"].rsplit("/", 1)[1]) for a in m["alerts"]]) for m in messages]


def test_alerts_once_per_change_remind_after_the_interval_and_resolve_with_state_in_s3(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker, receiver: WebhookReceiver,
    s3_endpoint: str,
):
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="alert-state")
    store = S3ReportStore.from_url("s3://alert-state/fleet-a", endpoint_url=s3_endpoint)
    channel = WebhookChannel(SecretStr(receiver.url))
    good_ref, good = push(registry, "alerts-good")
    bad_ref, bad = push(registry, "alerts-bad")
    attester.attach(good, timedelta(hours=1))
    attester.attach(bad, MAX_AGE + timedelta(hours=1))
    start = datetime.now(UTC)

    def run_at(now: datetime) -> list[dict[str, Any]]:
        """One check-and-alert pass as of `now`, with the state read from and written back to S3."""
        base = load_state(store)
        verdicts = [checker.check(registry.client(), ImageRef.parse(ref), now) for ref in (good_ref, bad_ref)]
        plan = plan_alerts(base, verdicts, [channel.id], now, remind_every=timedelta(hours=24), digest_threshold=5,
                           commands=checker.commands)
        for message in plan.messages:
            channel.send(message)
        save_state(store, plan.state_after(plan.messages, now), base)
        return receiver.take()

    first = run_at(start)
    assert summary(first) == [("alert", [("alert", "alerts-bad:1")])]
    (alert,) = first[0]["alerts"]
    assert alert["verdict"] == "stale" and alert["action"] == f"vulnattest run --config fleet.yaml --image {bad_ref}"
    assert "What broke: scanned 169h" in first[0]["text"] and "Deadline: " in first[0]["text"]

    assert run_at(start + timedelta(hours=1)) == []
    assert run_at(start + timedelta(hours=23)) == []
    assert summary(run_at(start + timedelta(hours=24, minutes=1))) == [("reminder", [("reminder", "alerts-bad:1")])]
    assert run_at(start + timedelta(hours=25)) == []

    attester.attach(bad, timedelta(0), now=start + timedelta(hours=25))
    resolved = run_at(start + timedelta(hours=26))
    assert summary(resolved) == [("resolved", [("resolved", "alerts-bad:1")])]
    assert resolved[0]["alerts"][0]["previous"] == "stale"
    assert run_at(start + timedelta(hours=27)) == []
    assert set(AlertState.from_json(store.get(ObjectKey("state/alerts.json")) or b"", "s3").images) == {
        good_ref, bad_ref}


def test_many_images_going_stale_together_send_one_digest(
    registry: LocalRegistry, attester: Attester, checker: FreshnessChecker, receiver: WebhookReceiver,
    tmp_path: Path,
):
    images = [push(registry, f"digest-{i}") for i in range(7)]
    now = datetime.now(UTC)
    for _, image in images:
        attester.attach(image, timedelta(hours=100), now=now)
    channel = WebhookChannel(SecretStr(receiver.url), name="oncall")
    refs = [ImageRef.parse(ref) for ref, _ in images]
    registries = Registries(insecure_hosts=frozenset({registry.host}))
    state = AlertState()
    try:
        for hours in (0, 100):  # all fresh, then all stale at once: 100h + 100h > max_age
            verdicts = check_fleet(checker, registries, refs, now=now + timedelta(hours=hours))
            plan = plan_alerts(state, verdicts, [channel.id], now + timedelta(hours=hours), digest_threshold=5,
                               remind_every=timedelta(hours=24))
            for message in plan.messages:
                channel.send(message)
            state = plan.state_after(plan.messages, now + timedelta(hours=hours))
    finally:
        registries.close()
    (digest,) = receiver.take()
    assert (digest["kind"], digest["count"], digest["counts"]) == ("digest", 7, {"stale": 7})
    assert sorted(a["image"] for a in digest["alerts"]) == sorted(str(r) for r in refs)
    assert digest["subject"] == "[vulnattest] 7 image(s) changed: 7 stale"
    assert receiver.paths == ["/hooks/T000/s3cr3t"]


def test_the_rules_judged_here_are_the_ones_a_fleet_config_gives(
    registry: LocalRegistry, keypair: tuple[Path, Path], tmp_path: Path
):
    # this module judges with MAX_AGE and WARN; a status or flow run judges with what its config file says
    path = fleet_config(tmp_path, registry, keypair, [f"{registry.host}/x:1"],
                        alerts=[{"webhook": "http://127.0.0.1:9/hook"}])
    config = load_config(path)
    assert (config.freshness.max_age, config.freshness.effective_warn_before()) == (MAX_AGE, WARN)
    assert [str(r) for r in config.image_refs()] == [f"{registry.host}/x:1"]
