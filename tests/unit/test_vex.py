"""OpenVEX: the document models and their errors, which statements apply to which image and package, and how a
suppression shows in the policy's result and in the generated Kyverno policy."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vulnattest.config import parse_config
from vulnattest.errors import ConfigError, VulnattestError
from vulnattest.images import ImageRef
from vulnattest.kyverno import cluster_policy, image_validating_policy
from vulnattest.policy import evaluate, policy_for
from vulnattest.scanners.interface import Finding
from vulnattest.signing import generate_keypair
from vulnattest.signing.interface import PublicKeyVerifier, load_public_key
from vulnattest.vex import (
    VexError,
    load_vex,
    load_vex_documents,
    parse_vex,
    product_matches,
    purl_matches,
    suppressions_for,
)

NOW = datetime(2030, 6, 1, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
IMAGE = ImageRef.parse(f"registry.example/team/app:1@{DIGEST}")
BUSYBOX = Finding("CVE-2099-0001", "CRITICAL", "busybox", "1.36.1-r15", "1.36.1-r16",
                  purl="pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=3.19.1")
ZLIB = Finding("CVE-2099-0003", "HIGH", "zlib", "1.3.1-r0", purl="pkg:apk/alpine/zlib@1.3.1-r0?arch=x86_64")


def statement(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"vulnerability": {"name": "CVE-2099-0001"}, "products": [{"@id": "pkg:oci/app"}],
                            "status": "not_affected", "justification": "vulnerable_code_not_present"}
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


def document(*statements: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/1", "author": "Team App",
            "timestamp": "2030-01-01T00:00:00Z", "version": 1, "statements": list(statements), **fields}


def _verifier() -> PublicKeyVerifier:
    """A verifier trusting a new key nobody signs with."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKeyVerifier([load_public_key(pem, "test")])


def parsed(*statements: dict[str, Any]) -> Any:
    return parse_vex(json.dumps(document(*statements)), "app.vex.json")


def test_a_valid_document_reads_with_every_field():
    doc = parsed(statement(vulnerability={"name": "CVE-2099-0001", "aliases": ["GHSA-aaaa-bbbb-cccc"]},
                           products=[{"@id": f"pkg:oci/app@{DIGEST}",
                                      "subcomponents": [{"@id": "pkg:apk/alpine/busybox"}]}],
                           impact_statement="busybox's httpd is not in the image", action_statement=None))
    [s] = doc.statements
    assert (doc.author, doc.source, s.status.value, s.justification) == (
        "Team App", "app.vex.json", "not_affected", "vulnerable_code_not_present")
    assert s.products[0].subcomponents[0].id == "pkg:apk/alpine/busybox"
    assert s.reason() == "not_affected: vulnerable_code_not_present (busybox's httpd is not in the image)"


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "app.vex.json: not JSON"),
    ("[1, 2]", "app.vex.json: not an OpenVEX document"),
    (json.dumps(document(statement(), **{"@context": "https://cyclonedx.org/vex"})),
     "@context: Value error, 'https://cyclonedx.org/vex' is not an OpenVEX context"),
    (json.dumps(document(statement(vulnerability=None))), "statements[0].vulnerability: Field required"),
    (json.dumps(document(statement(), statement(justification=None))),
     "statements[1]: a not_affected statement needs a justification or an impact_statement"),
    (json.dumps(document(statement(status="maybe"))), "statements[0].status: Input should be 'not_affected'"),
    (json.dumps(document(statement(justification="trust me"))), "statements[0].justification: Input should be"),
    (json.dumps(document(statement(products=[]))),
     "statements[0].products: Value error, a statement names at least one product"),
    (json.dumps(document(statement(), timestamp="2030-01-01T00:00:00")), "timestamp: Input should have timezone"),
])
def test_bad_documents_name_the_file_the_statement_and_the_field(text: str, message: str):
    with pytest.raises(VexError) as raised:
        parse_vex(text, "app.vex.json")
    assert str(raised.value).startswith("app.vex.json: ")
    assert message.removeprefix("app.vex.json: ").replace("Value error, ", "") in str(raised.value)


def test_a_missing_file_and_a_clear_text_url_are_refused(tmp_path: Path):
    with pytest.raises(VexError, match=r"cannot read VEX file .*missing.json: No such file"):
        load_vex(tmp_path / "missing.json")
    with pytest.raises(VexError, match="https:// only"):
        load_vex("http://vex.example.com/app.json")
    with pytest.raises(ConfigError, match=r"policy\.vex\.0: the VEX document on vex\.example\.com is fetched over "
                                          r"plain http://"):
        parse_config("policy: {vex: ['http://vex.example.com/app.json']}")
    with pytest.raises(ConfigError, match=r"policy\.overrides\.0\.vex\.0: unsupported VEX location"):
        parse_config("policy: {overrides: [{images: ['*'], vex: ['ftp://vex.example.com/a.json']}]}")


def test_config_paths_resolve_against_the_config_file(tmp_path: Path):
    config = parse_config("policy: {vex: [vex/app.json, 'https://vex.example.com/a.json'], overrides: "
                          "[{images: ['*'], vex: [vex/b.json]}]}", base=tmp_path)
    assert config.policy.vex_locations() == (str(tmp_path / "vex/app.json"), "https://vex.example.com/a.json",
                                             str(tmp_path / "vex/b.json"))


@pytest.mark.parametrize(("product", "matches"), [
    ("pkg:oci/app", True),  # any digest, any repository ending in /app: Trivy's reading
    (f"pkg:oci/app@{DIGEST}", True),
    (f"pkg:oci/app@{DIGEST.replace(':', '%3A')}", True),
    (f"pkg:oci/app@{OTHER}", False),
    (f"pkg:oci/app@{DIGEST}?repository_url=registry.example%2Fteam%2Fapp", True),
    (f"pkg:oci/app@{DIGEST}?repository_url=registry.example/other/app", False),
    ("pkg:oci/app?arch=arm64", False),  # a qualifier the judge cannot check matches nothing
    ("pkg:oci/api", False),
    ("pkg:docker/team/app", False),
    ("registry.example/team/app", True),
    ("registry.example/team/app:1", True),
    ("registry.example/team/app:2", False),
    (f"registry.example/team/app@{DIGEST}", True),
    (f"registry.example/team/app@{OTHER}", False),
    ("registry.example/other/app", False),
])
def test_products_name_the_image_by_oci_purl_or_reference(product: str, matches: bool):
    assert product_matches(product, IMAGE) is matches


def test_subcomponents_match_package_purls_where_given():
    assert purl_matches("pkg:apk/alpine/busybox", BUSYBOX.purl or "")
    assert purl_matches("pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64", BUSYBOX.purl or "")
    assert not purl_matches("pkg:apk/alpine/busybox@1.36.1-r16", BUSYBOX.purl or "")
    assert not purl_matches("pkg:deb/debian/busybox", BUSYBOX.purl or "")
    [narrowed] = suppressions_for([parsed(statement(
        vulnerability={"name": "CVE-2099-0001"}, products=[{"@id": "pkg:oci/app", "subcomponents": [
            {"@id": "pkg:apk/alpine/busybox"}]}]))], IMAGE)
    assert narrowed.covers(BUSYBOX)
    assert not narrowed.covers(Finding("CVE-2099-0001", "CRITICAL", "busybox-extras", "1", purl="pkg:apk/alpine/x"))
    assert not narrowed.covers(Finding("CVE-2099-0001", "CRITICAL", "busybox", "1"))  # no purl: not suppressed


def test_a_statement_narrowed_to_packages_is_left_to_the_scan(tmp_path: Path):
    vex = tmp_path / "app.vex.json"
    vex.write_text(json.dumps(document(statement(products=[
        {"@id": "pkg:oci/app", "subcomponents": [{"@id": "pkg:apk/alpine/busybox"}]}]))))
    config = parse_config(f"policy: {{severity: HIGH, vex: ['{vex}']}}")
    # admission's conditions see ids, not packages: the judge agrees with them, and Trivy applies it at the scan
    policy = policy_for(config.policy, IMAGE, {str(vex): load_vex(vex)})
    assert policy.vex == ()
    assert not evaluate(policy, [BUSYBOX], NOW).ok


def test_the_latest_statement_on_a_vulnerability_decides():
    first = statement(timestamp="2030-01-01T00:00:00Z")
    later = statement(status="affected", justification=None, action_statement="upgrade busybox",
                      timestamp="2030-02-01T00:00:00Z")
    assert suppressions_for([parsed(first, later)], IMAGE) == ()
    assert len(suppressions_for([parsed(later, statement(timestamp="2030-03-01T00:00:00Z"))], IMAGE)) == 1
    assert suppressions_for([parsed(statement(status="under_investigation", justification=None))], IMAGE) == ()
    [fixed] = suppressions_for([parsed(statement(status="fixed", justification=None))], IMAGE)
    assert fixed.reason == "fixed"
    # a later word under another name of the same vulnerability, or about every package, ends the earlier one too
    by_alias = statement(vulnerability={"name": "GHSA-xxxx-yyyy-zzzz", "aliases": ["CVE-2099-0001"]},
                         status="affected", justification=None, timestamp="2030-02-01T00:00:00Z")
    assert suppressions_for([parsed(first, by_alias)], IMAGE) == ()
    narrowed = statement(products=[{"@id": "pkg:oci/app", "subcomponents": [{"@id": "pkg:apk/alpine/busybox"}]}],
                         timestamp="2030-01-01T00:00:00Z")
    assert suppressions_for([parsed(narrowed, later)], IMAGE) == ()
    # a later word about some packages leaves the earlier one for the others
    [kept] = suppressions_for([parsed(first, dict(later, products=narrowed["products"]))], IMAGE)
    assert kept.packages == ()


def test_a_statement_suppresses_like_an_allow_entry_with_its_reason_and_loses_to_the_deny_list(tmp_path: Path):
    vex = tmp_path / "app.vex.json"
    vex.write_text(json.dumps(document(statement(
        vulnerability={"name": "CVE-2099-0001", "aliases": ["cve-2099-0003"]},
        impact_statement="the httpd applet is not built"))))
    config = parse_config(f"policy: {{severity: HIGH, vex: ['{vex}']}}")
    documents = {str(vex): load_vex(vex)}
    policy = policy_for(config.policy, IMAGE, documents)
    result = evaluate(policy, [BUSYBOX, ZLIB], NOW)
    assert result.ok
    assert [s.describe() for s in result.suppressed] == [
        f"CVE-2099-0001 in busybox: not_affected: vulnerable_code_not_present (the httpd applet is not built) "
        f"(VEX {vex})",
        f"CVE-2099-0003 in zlib: not_affected: vulnerable_code_not_present (the httpd applet is not built) "
        f"(VEX {vex})",
    ]
    assert policy.describe() == "HIGH and above; 1 suppressed by VEX"
    denied = parse_config(f"policy: {{severity: HIGH, deny: [CVE-2099-0001], vex: ['{vex}']}}")
    assert [v.why for v in evaluate(policy_for(denied.policy, IMAGE, documents), [BUSYBOX], NOW).violations] == [
        "on the deny list"]
    # another image, another repository: the statement does not name it
    other = policy_for(config.policy, "registry.example/team/api:1", documents)
    assert not evaluate(other, [BUSYBOX], NOW).ok


def test_override_documents_hold_only_for_the_images_they_match(tmp_path: Path):
    vex = tmp_path / "app.vex.json"
    vex.write_text(json.dumps(document(statement())))
    config = parse_config(f"policy: {{severity: HIGH, overrides: [{{images: ['registry.example/team/*'], "
                          f"vex: ['{vex}']}}]}}")
    documents = {str(vex): load_vex(vex)}
    assert evaluate(policy_for(config.policy, "registry.example/team/app:1", documents), [BUSYBOX], NOW).ok
    assert not evaluate(policy_for(config.policy, "registry.example/shop/app:1", documents), [BUSYBOX], NOW).ok


def _kyverno_config(tmp_path: Path, product: str) -> Any:
    generate_keypair(tmp_path / "keys")
    vex = tmp_path / "app.vex.json"
    vex.write_text(json.dumps(document(statement(products=[{"@id": product}]))))
    return parse_config(f"""
images: [registry.example/team/app:1, registry.example/team/api:1]
signing: {{key: {tmp_path}/keys/vulnattest.key}}
attach: both
policy: {{severity: HIGH, vex: ['{vex}']}}
""")


def test_the_kyverno_policy_leaves_suppressed_ids_out_for_the_images_they_name(tmp_path: Path):
    config = _kyverno_config(tmp_path, "pkg:oci/app?repository_url=registry.example/team/app")
    entries = cluster_policy(config, NOW)["spec"]["rules"][0]["verifyImages"]
    by_image = {e["imageReferences"][0]: json.dumps(e["attestations"][0]["conditions"]) for e in entries
                if e["type"] == "Cosign"}
    assert "'CVE-2099-0001'" in by_image["registry.example/team/app:*"]
    assert "CVE-2099-0001" not in by_image["registry.example/team/api:*"]
    ivps = {json.dumps(p["spec"]["matchImageReferences"]): json.dumps(p["spec"]["validations"])
            for p in image_validating_policy(config, NOW)["items"]}
    [app] = [v for k, v in ivps.items() if "team/app" in k]
    [api] = [v for k, v in ivps.items() if "team/api" in k]
    assert "CVE-2099-0001" in app
    assert "CVE-2099-0001" not in api


def test_a_statement_pinned_to_a_digest_is_left_to_the_scan_for_images_listed_by_tag(tmp_path: Path):
    config = _kyverno_config(tmp_path, f"pkg:oci/app@{DIGEST}")
    conditions = json.dumps(cluster_policy(config, NOW)["spec"]["rules"][0]["verifyImages"])
    assert "CVE-2099-0001" not in conditions


def test_a_statement_pinned_to_a_digest_never_reaches_admission_even_for_the_image_listed_by_it(tmp_path: Path):
    # admission holds the whole repository to one policy: the id allowed there would be allowed in every build
    config = _kyverno_config(tmp_path, f"pkg:oci/app@{DIGEST}")
    config = config.with_images([f"registry.example/team/app@{DIGEST}", "registry.example/team/api:1"])
    conditions = json.dumps(cluster_policy(config, NOW)["spec"]["rules"][0]["verifyImages"])
    assert "CVE-2099-0001" not in conditions
    documents = load_vex_documents(config.policy.vex_locations())
    assert policy_for(config.policy, IMAGE, documents).vex == ()  # the judge agrees: the scan applies it


def test_a_bad_document_stops_policy_generation_with_its_error(tmp_path: Path):
    config = _kyverno_config(tmp_path, "pkg:oci/app")
    (tmp_path / "app.vex.json").write_text(json.dumps(document(statement(vulnerability=None))))
    with pytest.raises(VulnattestError, match=r"(?s)app\.vex\.json: .*statements\[0\]\.vulnerability: Field required"):
        cluster_policy(config, NOW)


def test_check_freshness_suppresses_with_the_justification_in_the_verdict_and_the_alert(tmp_path: Path):
    from tests.unit.test_freshness import good, policy_checker
    from vulnattest.alerts import Alert, AlertKind
    from vulnattest.freshness import Verdict, fleet_markdown

    vex = tmp_path / "app.vex.json"
    vex.write_text(json.dumps(document(statement(impact_statement="the httpd applet is not built"))))
    image, digest = "registry.example/team/app:1", DIGEST
    keys = _verifier()
    checker = replace(policy_checker(keys, severity="HIGH", vex=(str(vex),)), vex=((str(vex), load_vex(vex)),))
    suppressed = ("VEX suppresses 1 finding(s): CVE-2099-0001 in busybox: not_affected: vulnerable_code_not_present "
                  f"(the httpd applet is not built) (VEX {vex})")
    fresh = checker.judge(image, digest, [good(timedelta(hours=1))], NOW)
    assert fresh.verdict is Verdict.FRESH
    assert fresh.reason.endswith("; " + suppressed)
    # a verdict that alerts carries it too: here a medium finding the statement does not cover fails the policy
    medium = replace(policy_checker(keys, severity="MEDIUM", vex=(str(vex),)), vex=checker.vex)
    failing = medium.judge(image, digest, [good(timedelta(hours=1))], NOW)
    assert failing.verdict is Verdict.POLICY
    assert failing.reason.startswith("1 finding(s) violate the policy: CVE-2099-0003 (MEDIUM) in zlib")
    assert f"What broke: {failing.reason}" in Alert(AlertKind.ALERT, failing, None, NOW).text()
    assert suppressed in Alert(AlertKind.ALERT, failing, None, NOW).text()
    assert suppressed in fleet_markdown([failing])  # the run's fleet table
    # the deny list beats the statement
    denied = replace(policy_checker(keys, severity="HIGH", deny=("CVE-2099-0001",), vex=(str(vex),)), vex=checker.vex)
    assert denied.judge(image, digest, [good(timedelta(hours=1))], NOW).verdict is Verdict.POLICY


def test_a_check_judges_without_a_vex_document_it_cannot_read_and_says_so(tmp_path: Path):
    from vulnattest.freshness import FreshnessChecker

    keys = _verifier()
    readable = tmp_path / "app.vex.json"
    readable.write_text(json.dumps(document(statement())))
    config = parse_config(f"images: [registry.example/team/app:1]\n"
                          f"policy: {{severity: HIGH, vex: ['{readable}', '{tmp_path}/gone.vex.json']}}")
    checker = FreshnessChecker.from_config(config, keys, None)
    assert [location for location, _ in checker.vex] == [str(readable)]
    [problem] = checker.vex_problems
    assert f"cannot read VEX file {tmp_path}/gone.vex.json" in problem and problem.endswith("(left out this run)")


def test_a_vex_url_is_shown_without_what_could_hold_a_token():
    with pytest.raises(VexError) as refused:
        load_vex("http://robot:s3cr3t@vex.example/app.vex.json?X-Amz-Signature=abc123")
    assert str(refused.value).startswith("http://vex.example/app.vex.json: VEX is fetched over https:// only")
    assert "s3cr3t" not in str(refused.value) and "abc123" not in str(refused.value)
