"""The scan-and-attest flow: for every image, resolve → scan → hash → store → verify → attest."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed

from flows import fleet_config, key_password
from tasks.attest import ImageBatch, ImageRun, attest_images
from tasks.batching import BatchPlan, run_batches
from tasks.locks import PrefectAttachLocks, RegistrySlots, ensure_attach_limits
from vulnattest.attestations import Invocation
from vulnattest.attestations.cosign import CosignAttacher
from vulnattest.errors import VulnattestError
from vulnattest.outcomes import ImageOutcome, summary_markdown
from vulnattest.services import Services

ARTIFACT_KEY = "scan-and-attest-summary"


@flow(name="scan-and-attest", log_prints=False)
def scan_and_attest(
    config_path: str | None = None, images: list[str] | None = None, images_per_task: int | None = None
) -> list[ImageOutcome]:
    """Scan every image of the fleet and attach a fresh signed vuln attestation; fail naming the images that failed.

    Each task run takes up to `images_per_task` images (default 50) through every stage, pulling the next from
    the fleet as it finishes one; each image's stage timings and outcome are its own. Where a registry has a
    ``registry:<host>`` global concurrency limit, the run holds slots of it while it works (see scan-fleet-in-batches).
    """
    logger = get_run_logger()
    config = fleet_config(config_path, images)
    if images_per_task is not None and images_per_task < 1:
        raise VulnattestError(f"images_per_task must be at least 1, not {images_per_task}")
    services = Services.for_attesting(config, key_password=key_password(config.signing))
    locks = None
    if config.attach_lock == "prefect":
        ensure_attach_limits()
        locks = PrefectAttachLocks()
        services.attacher = CosignAttacher(lock=locks)
    invocation = Invocation(event_id=str(flow_run.id or ""), uri=str(flow_run.ui_url or ""))
    runs = [ImageRun(ref) for ref in config.image_refs()]
    workers = min(config.concurrency, len(runs))
    plan = BatchPlan(runs, images_per_task)
    logger.info("scanning %d image(s), %d at a time, up to %d per task run", len(runs), workers, plan.size)
    try:
        with RegistrySlots.hold([run.ref for run in runs], workers) as slots:
            run_batches(plan, workers, lambda batch: _attest(ImageBatch(batch, slots), invocation, services), "image")
    except VulnattestError as e:  # no registry slots within the wait: every image not attested says why
        logger.error("%s", e)
        for run in runs:
            run.give_up(e)
    finally:
        services.close()
        if locks is not None:
            locks.close()
    outcomes = [run.outcome() for run in runs]
    create_markdown_artifact(
        key=ARTIFACT_KEY, markdown=summary_markdown(outcomes),
        description=f"{sum(o.ok for o in outcomes)} of {len(outcomes)} images attested",
    )
    failed = [o for o in outcomes if not o.ok]
    if failed:
        names = "; ".join(f"{o.image} ({o.failed_stage}: {o.error})" for o in failed)
        message = f"{len(failed)} of {len(outcomes)} image(s) not attested: {names}"
        logger.error("%s", message)
        # a Failed state that still carries every outcome, so callers can report the whole fleet
        return Failed(message=message, data=outcomes)  # type: ignore[return-value]
    return outcomes


def _attest(batch: ImageBatch, invocation: Invocation, services: Services) -> None:
    """Run one batch's task; never raises, so one batch cannot stop the others (its images carry the outcome)."""
    try:
        attest_images(batch, invocation, services)
    except Exception as e:  # noqa: BLE001 - whatever stopped the task run is each unfinished image's outcome
        batch.give_up(e)
