"""The scan-and-attest flow: for every image, scan (resolve, Trivy) → hash → store → verify → attest, as task runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, cast

from prefect import State, flow, get_run_logger
from prefect.events import emit_event
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows import ProgressArtifact, fleet_config, key_password, publish_markdown, run_name
from flows.chains import Chain, ChainRunner
from tasks.freshness import PrefectBlockChannel, alert_channels
from tasks.locks import PrefectAttachLocks, RegistrySlots, ensure_attach_limits
from tasks.stages import attest, hash_report, scan, store, verify
from vulnattest.alerts import WebhookChannel
from vulnattest.attestations import Invocation
from vulnattest.attestations.attach import LayoutAttacher
from vulnattest.attestations.cosign import AttachResult
from vulnattest.changes import (
    ChangesNotice,
    FindingsChange,
    changes_markdown,
    merged,
    owe,
    record_changes,
    undelivered,
)
from vulnattest.config import MAX_CONCURRENCY, FleetConfig
from vulnattest.errors import VulnattestError
from vulnattest.images import ImageRef
from vulnattest.metrics import MetricsError, push_outcomes
from vulnattest.outcomes import ImageOutcome, summary_markdown
from vulnattest.scanners.interface import ScanReport
from vulnattest.services import Services
from vulnattest.storage import ReportStore, VerifiedReport
from vulnattest.verification import LAYOUTS

ARTIFACT_KEY = "scan-and-attest-summary"
CHANGE_EVENT = "new-findings"  # vulnattest.image.new-findings: vulnerabilities new or newly fixable since the last scan


# the chains keep at most `concurrency` task runs in flight: the pool only needs room for the most a config allows
# (cast: Prefect types the parameter with an invariant future type that its own runners do not match)
_TASK_RUNNER = cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY))


@flow(name="scan-and-attest", log_prints=False, task_runner=_TASK_RUNNER, flow_run_name=run_name("scan"))
def scan_and_attest(config_path: str | None = None, images: list[str] | None = None) -> list[ImageOutcome] | State[Any]:
    """Scan every image of the fleet and attach a fresh signed vuln attestation; fail naming the images that failed.

    Each image goes through five task runs (scan, hash, store, verify, attest), `concurrency` images at a time;
    one image's failure stops only its own chain. Where a registry has a ``registry:<host>`` global concurrency
    limit, the run holds slots of it while it works (see scan-fleet-in-batches) and keeps within them.

    Args:
        config_path: the fleet configuration file, as the worker sees it (none: the built-in defaults, with
            `images` naming the images)
        images: only these images of the fleet (each as listed in the config, e.g. registry/app:1.2); empty: all
    """
    logger = get_run_logger()
    config = fleet_config(config_path, images)
    refs = config.image_refs()
    services = Services.for_attesting(config, key_password=key_password(config.signing))
    locks = None
    if config.attach_lock == "prefect":
        ensure_attach_limits()
        locks = PrefectAttachLocks()
        services.attacher = LayoutAttacher(LAYOUTS[config.attach], lock=locks)
    invocation = Invocation(event_id=str(flow_run.id or ""), uri=str(flow_run.ui_url or ""))
    workers = min(config.concurrency, len(refs))
    logger.info("scanning %d image(s), %d at a time", len(refs), workers)
    try:
        try:
            with RegistrySlots.hold(refs, workers) as slots:
                runner: ChainRunner[ImageRef, ImageOutcome] = ChainRunner(workers, lambda ref: ref.registry,
                                                                          slots.held)
                timeout = config.image_timeout.total_seconds()
                progress = ProgressArtifact(f"{ARTIFACT_KEY}-progress", len(refs))
                outcomes = runner.run(((ref, _attest_image(ref, services, invocation, timeout)) for ref in refs),
                                      on_result=lambda outcome: progress.finished(outcome.ok))
        except VulnattestError as e:  # no registry slots within the wait: every image says why
            logger.error("%s", e)
            outcomes = [ImageOutcome(image=str(ref), failed_stage="scan", error=str(e)) for ref in refs]
        changes = [o.change for o in outcomes if o.change is not None]
        publish_markdown(
            key=ARTIFACT_KEY, markdown=summary_markdown(outcomes) + changes_markdown(changes),
            description=f"{sum(o.ok for o in outcomes)} of {len(outcomes)} images attested",
        )
        _tell_changes(config, outcomes, services.store)
    finally:
        services.close()
        if locks is not None:
            locks.close()
    if not images:  # a batch or a subset would replace the whole fleet's figures
        try:
            push_outcomes(config.metrics, outcomes, datetime.now(UTC))
        except MetricsError as e:  # the attestations stand; Prometheus's dead man's switch will say the rest
            logger.error("%s", e)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        names = "; ".join(f"{o.image} ({o.failed_stage}: {o.error})" for o in failed)
        message = f"{len(failed)} of {len(outcomes)} image(s) not attested: {names}"
        logger.error("%s", message)
        # a Failed state that still carries every outcome, so callers can report the whole fleet
        return Failed(message=message, data=outcomes)
    return outcomes


class _Progress:
    """Where one image's chain is, how long each stage took, and what it produced, for its outcome."""

    def __init__(self, ref: ImageRef) -> None:
        self.ref = ref
        self.stage = "scan"
        self.seconds: dict[str, float] = {}
        self._started = time.monotonic()

    def at(self, stage: str, future: PrefectFuture[Any]) -> PrefectFuture[Any]:
        """Note that `stage` starts now (the previous one ended), and pass its future on."""
        self._end()
        self.stage = stage
        return future

    def _end(self) -> None:
        now = time.monotonic()
        self.seconds[self.stage] = self.seconds.get(self.stage, 0.0) + now - self._started
        self._started = now

    def failed(self, error: BaseException) -> ImageOutcome:
        """The outcome of an image whose chain stopped at the current stage."""
        self._end()
        return ImageOutcome(image=str(self.ref), failed_stage=self.stage, error=str(error) or type(error).__name__,
                            seconds=self.seconds)

    def attested(self, report: ScanReport, verified: VerifiedReport, attached: AttachResult,
                 change: FindingsChange | None) -> ImageOutcome:
        """The outcome of an image attested."""
        self._end()
        return ImageOutcome(
            image=str(self.ref), digest=report.image.digest, counts=report.counts, report_uri=verified.uri,
            report_sha256=verified.sha256, attestation_digest=attached.manifest_digest, replaced=attached.replaced,
            seconds=self.seconds, change=change,
        )


def _attest_image(ref: ImageRef, services: Services, invocation: Invocation, timeout: float) -> Chain[ImageOutcome]:
    """One image's chain of task runs. Each stage starts only once the one before it succeeded, so no attest task
    runs for a report that verify did not read back and match; the report is passed on `quote`d (Prefect need
    not walk it) with the task it came from as an explicit upstream."""
    progress = _Progress(ref)
    until = time.time() + timeout
    try:
        # return_state=False picks the typed overload that takes `quote`d arguments
        scanned = scan.submit(ref, quote(services), until, return_state=False)
        report: ScanReport = yield progress.at("scan", scanned)
        hashed = hash_report.submit(quote(report), return_state=False, wait_for=[scanned])
        yield progress.at("hash", hashed)
        stored = store.submit(quote(report), hashed, quote(services), until, return_state=False, wait_for=[scanned])
        yield progress.at("store", stored)
        verified_future = verify.submit(quote(report), stored, hashed, quote(services), until, return_state=False,
                                        wait_for=[scanned])
        verified: VerifiedReport = yield progress.at("verify", verified_future)
        attached_future = attest.submit(quote(report), verified_future, invocation, quote(services), until,
                                        return_state=False, wait_for=[scanned])
        attached: AttachResult = yield progress.at("attest", attached_future)
    except Exception as e:  # noqa: BLE001 - a failed stage is this image's outcome, never its neighbours'
        return progress.failed(e)
    return progress.attested(report, verified, attached, _compared(ref, report, services))


def _compared(ref: ImageRef, report: ScanReport, services: Services) -> FindingsChange | None:
    """What changed since the image's previous attested scan (which this one replaces as its baseline); a store
    that fails here costs the comparison, never the attestation."""
    try:
        return record_changes(services.store, ref, report, services.config.changes)
    except VulnattestError as e:
        get_run_logger().warning("could not compare %s with its previous scan: %s", ref, e)
        return None


def _tell_changes(config: FleetConfig, outcomes: list[ImageOutcome], store: ReportStore) -> None:
    """Tell the webhook and Prefect block channels, and Prefect events, which images have vulnerabilities new or
    newly fixable since their last scan. PagerDuty and Alertmanager carry incidents (verdicts), not this news. What
    a channel fails to receive is kept in the store and sent again with the next run's news."""
    logger = get_run_logger()
    news = tuple(o.change for o in outcomes if o.change is not None and o.change.news)
    for change in news:
        emit_event(f"vulnattest.image.{CHANGE_EVENT}",
                   resource={"prefect.resource.id": f"vulnattest.image.{change.image}"},
                   payload=change.to_json())
    for channel in alert_channels(config.alerts, config.freshness.remind_every):
        if not isinstance(channel, WebhookChannel | PrefectBlockChannel):
            continue
        try:
            owed = undelivered(store, channel.id)
        except VulnattestError as e:
            logger.warning("could not read what %s was not told yet: %s", channel.id, e)
            owed = ()
        batch = merged(owed, news)
        if not batch:
            continue
        try:
            channel.send(ChangesNotice(channel.id, batch))
            delivered = True
        except VulnattestError as e:  # the attestations stand; this news is in the artifact and the events
            logger.error("could not tell %s what changed since the last scans (kept for the next run): %s",
                         channel.id, e)
            delivered = False
        # the store notes what this run changed of what is owed: the old news delivered, or this run's not
        dropped, added = (owed, ()) if delivered else ((), news)
        if not (dropped or added):
            continue
        try:
            owe(store, channel.id, add=added, drop=dropped)
        except VulnattestError as e:
            logger.error("could not note in the store what %s is still owed: %s", channel.id, e)
    if news:
        logger.info("%d image(s) with vulnerabilities new or newly fixable since their last scan", len(news))
