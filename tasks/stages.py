"""scan-and-attest's stages as Prefect tasks, one task run per image and stage: scan (resolve the tag, then Trivy),
hash, store, verify (read back, compare) and attest (sign, attach, read back).

Each stage is retried on its own, so a retry resumes at the stage that failed (a store outage never rescans). The
clients retry each request first (`vulnattest.retrying`); a task retry is for what outlasts that: an outage longer
than a request's budget, a scan that failed while the registry was failing under it. No retry starts past the
image's deadline. Big values (the report) are passed `quote`d, so Prefect does not walk them for futures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger

from tasks.retry import step
from vulnattest.attestations import VULN_PREDICATE_TYPE, Invocation, sign_statement, vuln_statement
from vulnattest.attestations.cosign import AttachResult
from vulnattest.errors import VulnattestError
from vulnattest.images import ImageRef
from vulnattest.registry import resolve
from vulnattest.retrying import deadline
from vulnattest.scanners.interface import ScanReport
from vulnattest.services import Services
from vulnattest.storage import StoredObject, VerifiedReport, report_key, verify_stored


class CpuTally:
    """CPU seconds the stage tasks spent in vulnattest's own work (the calling thread's, so not the Prefect engine
    around it, nor the scanner's own process): benchmarks read it to tell vulnattest's cost from Prefect's."""

    def __init__(self) -> None:
        self.by_stage: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def seconds(self) -> float:
        """All stages together."""
        with self._lock:
            return sum(self.by_stage.values())

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Add this thread's CPU time within the block to `stage`'s."""
        started = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - started
            with self._lock:
                self.by_stage[stage] = self.by_stage.get(stage, 0.0) + spent


OWN_CPU = CpuTally()


class DeadlineError(VulnattestError):
    """The image used up its time (`image_timeout`): no further try is made."""


def _within(deadline_at: float, stage: str, image: object) -> None:
    if time.time() > deadline_at:
        raise DeadlineError(f"{image}: no time left for {stage} within image_timeout; the next run tries again "
                            "(raise image_timeout if images this large need longer)")


@step("scan", "scan {ref}", retries=2, backoff=10)
def scan(ref: ImageRef, services: Services, deadline_at: float) -> ScanReport:
    """Pin `ref` to its digest (and platform manifest), then scan it."""
    _within(deadline_at, "scan", ref)
    with deadline(deadline_at), OWN_CPU.measure("scan"):
        resolved = resolve(services.registries.for_image(ref), ref, services.config.platform)
        report = services.require_scanner().scan(resolved)
    get_run_logger().info("scanned %s in %.1f s: %s", resolved, (report.finished - report.started).total_seconds(),
                          " ".join(f"{severity[0]}{n}" for severity, n in report.counts.items()))
    return report


@step("hash", "hash {report}", retries=0)
def hash_report(report: ScanReport) -> str:
    """The hex sha256 of the exact report bytes: what the stored copy must read back as."""
    with OWN_CPU.measure("hash"):
        return report.sha256


@step("store", "store {report}", retries=2, backoff=10)
def store(report: ScanReport, sha256: str, services: Services, deadline_at: float) -> StoredObject:
    """Put the report in the report store, under a key made of its image and finish time."""
    _within(deadline_at, "store", report)
    with deadline(deadline_at), OWN_CPU.measure("store"):
        stored = services.store.put(report_key(report.image.image, report.finished), report.body, sha256)
    get_run_logger().info("stored the report of %s at %s", report, stored.uri)
    return stored


@step("verify", "verify {report}", retries=2, backoff=10)
def verify(report: ScanReport, stored: StoredObject, sha256: str, services: Services,
           deadline_at: float) -> VerifiedReport:
    """Read `report`'s stored copy back and check it hashes to `sha256`; a mismatch (tampering) is final."""
    _within(deadline_at, "verify", report)
    with deadline(deadline_at), OWN_CPU.measure("verify"):
        verified = verify_stored(services.store, stored, sha256)
    get_run_logger().info("read back %s: sha256 %s matches the scan", verified.uri, sha256[:16])
    return verified


@step("attest", "attest {report}", retries=2, backoff=10)
def attest(report: ScanReport, verified: VerifiedReport, invocation: Invocation, services: Services,
           deadline_at: float) -> AttachResult:
    """Sign the vuln statement naming the verified report and attach it, replacing older vuln attestations."""
    _within(deadline_at, "attest", report)
    with deadline(deadline_at), OWN_CPU.measure("attest"):
        envelope = sign_statement(vuln_statement(report, verified, invocation), services.require_signer())
        client = services.registries.for_image(report.image.image)
        attached = services.attacher.attach(client, report.image, envelope, VULN_PREDICATE_TYPE)
    get_run_logger().info("attested %s: layer %s, replaced %d older vuln attestation(s)", report.image,
                          attached.layer_digest[:19], attached.replaced)
    return attached
