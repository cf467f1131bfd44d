"""The per-image work of scan-and-attest as a Prefect task: resolve → scan → hash → store → verify → attest for each
image of a batch, resumed at the stage that failed when Prefect retries a transient failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks.batching import Batch
from tasks.locks import RegistrySlots
from tasks.retry import retry_if_transient
from vulnattest.attestations import VULN_PREDICATE_TYPE, Invocation, sign_statement, vuln_statement
from vulnattest.attestations.cosign import AttachResult
from vulnattest.errors import TransientError, VulnattestError, is_transient
from vulnattest.images import ImageRef
from vulnattest.outcomes import ImageOutcome
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


class ImageRun:
    """One image on its way through the stages, kept across task retries: a retry resumes at the stage that failed,
    so a transient attach failure re-attaches and never rescans. The report is dropped once attested (or given up
    on), so a fleet's reports are never all in memory at once."""

    def __init__(self, ref: ImageRef) -> None:
        self.ref = ref
        self.stage = "resolve"
        self.seconds: dict[str, float] = {}
        self.error: BaseException | None = None
        self.resolved: ResolvedImage | None = None
        self.report: ScanReport | None = None
        self.counts: dict[str, int] = {}
        self.sha256: str | None = None
        self.stored: StoredObject | None = None
        self.verified: VerifiedReport | None = None
        self.attached: AttachResult | None = None

    def __str__(self) -> str:
        return str(self.ref)

    @property
    def pending(self) -> bool:
        """True until the image is attested or has failed for a reason a retry cannot fix."""
        return self.attached is None and (self.error is None or is_transient(self.error))

    def advance(self, services: Services, invocation: Invocation) -> AttachResult:
        """Run every stage not done yet, in order; record the failure (and keep what succeeded) when one raises.

        No stage after verify runs unless the stored report was read back and matched the scan's sha256.
        """
        self.error = None
        try:
            if self.resolved is None:
                client = services.registries.for_image(self.ref)
                self.resolved = self._timed("resolve", lambda: resolve(client, self.ref, services.config.platform))
            resolved = self.resolved
            if self.report is None:
                self.report = self._timed("scan", lambda: services.require_scanner().scan(resolved))
                self.counts = self.report.counts
            report = self.report
            if self.sha256 is None:
                self.sha256 = self._timed("hash", lambda: report.sha256)
            sha256 = self.sha256
            if self.stored is None:
                key = report_key(resolved.image, report.finished)
                self.stored = self._timed("store", lambda: services.store.put(key, report.body, sha256))
            stored = self.stored
            if self.verified is None:
                self.verified = self._timed("verify", lambda: verify_stored(services.store, stored, sha256))
            verified = self.verified
            self.attached = self._timed("attest", lambda: _attach(report, verified, invocation, services))
        except Exception as e:
            self.error = e
            if not is_transient(e):
                self.report = None
            raise
        self.report = None  # attested: the statement carried it, the store keeps it
        self.stage = "done"
        return self.attached

    def give_up(self, reason: BaseException) -> None:
        """Stop here: a retry will not come (retries exhausted, or the task run itself failed)."""
        if self.attached is None:
            self.error = self.error or reason
            self.report = None

    def outcome(self) -> ImageOutcome:
        """What happened to the image, for the summary, the CLI and the benchmarks."""
        image = str(self.ref)
        digest = self.resolved.digest if self.resolved else None
        if self.attached is None or self.verified is None:
            error = self.error
            text = (str(error) or type(error).__name__) if error is not None else "not run"
            return ImageOutcome(image=image, digest=digest, counts=self.counts, failed_stage=self.stage, error=text,
                                seconds=dict(self.seconds))
        return ImageOutcome(
            image=image, digest=digest, counts=self.counts, report_uri=self.verified.uri, report_sha256=self.sha256,
            attestation_digest=self.attached.manifest_digest, replaced=self.attached.replaced,
            seconds=dict(self.seconds),
        )

    def _timed(self, stage: str, call: Callable[[], R]) -> R:
        self.stage = stage
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


def _attach(report: ScanReport, verified: VerifiedReport, invocation: Invocation, services: Services) -> AttachResult:
    """Sign the vuln statement and attach it in cosign's layout, replacing older vuln attestations."""
    envelope = sign_statement(vuln_statement(report, verified, invocation), services.require_signer())
    client = services.registries.for_image(report.image.image)
    return services.attacher.attach(client, report.image, envelope, VULN_PREDICATE_TYPE)


class ImageBatch:
    """The images one task run takes through scan-and-attest (pulled from the fleet as it goes, see `Batch`).

    A plain class, not a dataclass: Prefect walks dataclass and list parameters of every task run looking for
    futures, and a batch holds whole scan reports.
    """

    def __init__(self, runs: Batch[ImageRun], slots: RegistrySlots) -> None:
        self.runs = runs
        self.slots = slots

    def __str__(self) -> str:
        return str(self.runs)

    def give_up(self, reason: BaseException) -> None:
        """Record `reason` on every image it holds that is not attested yet."""
        for run in self.runs.items:
            run.give_up(reason)


class BatchFailedError(VulnattestError):
    """Some images of a batch were not attested; the others were."""


class TransientBatchError(BatchFailedError, TransientError):
    """Some images of a batch failed in a way a retry may fix; a retry resumes only those."""


@step("attest-images", "attest {batch}")
def attest_images(batch: ImageBatch, invocation: Invocation, services: Services) -> int:
    """Take each image of `batch` through every stage it has not finished; return how many are attested.

    Fails when an image did not get through, transiently (so Prefect retries, resuming only those images) when any
    of the failures is worth retrying; the images carry their own outcome either way.
    """
    logger = get_run_logger()
    for run in batch.runs:
        if not run.pending:
            continue
        try:
            with batch.slots.gate(run.ref.registry):
                attached = run.advance(services, invocation)
        except Exception as e:  # noqa: BLE001 - one image's failure is its outcome, never its neighbours'
            retry = "; will retry" if is_transient(e) else ""
            logger.warning("%s failed at %s: %s%s", run, run.stage, e, retry)
            continue
        logger.info("attested %s: %s; report %s; layer %s; replaced %d older vuln attestation(s)", run.resolved,
                    " ".join(f"{severity[0]}{n}" for severity, n in run.counts.items()),
                    run.verified.uri if run.verified else "-", attached.layer_digest[:19], attached.replaced)
    held = batch.runs.items
    failed = [run for run in held if run.attached is None]
    if not failed:
        return len(held)
    transient = [run for run in failed if run.pending]
    names = "; ".join(f"{run} at {run.stage}" for run in failed[:3]) + ("; …" if len(failed) > 3 else "")
    message = f"{len(failed)} of {len(held)} image(s) not attested ({names})"
    if transient:
        raise TransientBatchError(f"{message}; {len(transient)} may pass on a retry")
    raise BatchFailedError(message)
