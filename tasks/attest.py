"""The per-image steps of scan-and-attest, each a Prefect task: resolve, scan, store, verify, attest."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks.retry import retry_if_transient
from vulnattest.attestations import VULN_PREDICATE_TYPE, Invocation, sign_statement, vuln_statement
from vulnattest.attestations.cosign import AttachResult
from vulnattest.images import ImageRef
from vulnattest.registry import ResolvedImage, resolve
from vulnattest.scanners.interface import ScanReport
from vulnattest.services import Services
from vulnattest.storage import StoredObject, VerifiedReport, report_key, verify_stored

P = ParamSpec("P")
R = TypeVar("R")


def step(name: str, run_name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A pipeline step: retried with backoff and jitter on transient errors only, never cached (it has effects)."""
    return task(
        name=name, task_run_name=run_name, retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
        retry_jitter_factor=0.5, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE,
    )


@step("resolve-image", "resolve {image}")
def resolve_image(image: ImageRef, services: Services) -> ResolvedImage:
    """Pin the image to its manifest digest (and pick the platform manifest to scan)."""
    resolved = resolve(services.registries.for_image(image), image, services.config.platform)
    get_run_logger().info("%s is %s", image, resolved.digest)
    return resolved


@step("scan-image", "scan {image}")
def scan_image(image: ResolvedImage, services: Services) -> ScanReport:
    """Scan the image and hash the exact report bytes."""
    report = services.require_scanner().scan(image)
    get_run_logger().info(
        "scanned %s in %.1fs: %s; report sha256 %s", image, (report.finished - report.started).total_seconds(),
        report.counts, report.sha256,
    )
    return report


@step("store-report", "store {report}")
def store_report(report: ScanReport, services: Services) -> StoredObject:
    """Put the report in the store, recording the sha256 taken at scan time."""
    stored = services.store.put(report_key(report.image.image, report.finished), report.body, report.sha256)
    get_run_logger().info("stored the report of %s at %s", report.image, stored.uri)
    return stored


@step("verify-report", "verify {report}")
def verify_report(report: ScanReport, stored: StoredObject, services: Services) -> VerifiedReport:
    """Read the stored report back and check it still hashes to the scan's sha256 (a tamper check)."""
    verified = verify_stored(services.store, stored, report.sha256)
    get_run_logger().info("verified %s (sha256 %s)", verified.uri, verified.sha256)
    return verified


@step("attest-image", "attest {report}")
def attest_image(
    report: ScanReport, verified: VerifiedReport, invocation: Invocation, services: Services
) -> AttachResult:
    """Sign the vuln statement and attach it in cosign's layout, replacing older vuln attestations."""
    signer = services.require_signer()
    envelope = sign_statement(vuln_statement(report, verified, invocation), signer)
    client = services.registries.for_image(report.image.image)
    result = services.attacher.attach(client, report.image, envelope, VULN_PREDICATE_TYPE)
    get_run_logger().info(
        "attested %s with key %s: layer %s, replaced %d older vuln attestation(s), kept %d other(s)",
        report.image, signer.key_id, result.layer_digest, result.replaced, result.kept,
    )
    return result
