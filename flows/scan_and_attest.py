"""The scan-and-attest flow: for every image, resolve → scan → hash → store → verify → attest."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed

from tasks.attest import attest_image, resolve_image, scan_image, store_report, verify_report
from tasks.locks import PrefectAttachLocks, ensure_attach_limits
from vulnattest.attestations import Invocation
from vulnattest.attestations.cosign import CosignAttacher
from vulnattest.config import FleetConfig, load_config
from vulnattest.errors import VulnattestError
from vulnattest.images import ImageRef
from vulnattest.outcomes import ImageOutcome, summary_markdown
from vulnattest.services import Services

T = TypeVar("T")


def fleet_config(config_path: str | None, images: list[str] | None) -> FleetConfig:
    """Load the config file (or defaults) and, when `images` is given, scan only those."""
    config = load_config(Path(config_path)) if config_path else FleetConfig().resolved_against(Path.cwd())
    if images:
        config = FleetConfig.model_validate({**config.model_dump(), "images": images})
    if not config.images:
        raise VulnattestError("no images to scan: list them under `images:` in the config or pass --image")
    return config


@flow(name="scan-and-attest", log_prints=False)
def scan_and_attest(config_path: str | None = None, images: list[str] | None = None) -> list[ImageOutcome]:
    """Scan every image of the fleet and attach a fresh signed vuln attestation; fail naming the images that failed."""
    logger = get_run_logger()
    config = fleet_config(config_path, images)
    services = Services.for_attesting(config)
    locks = None
    if config.attach_lock == "prefect":
        ensure_attach_limits()
        locks = PrefectAttachLocks()
        services.attacher = CosignAttacher(lock=locks)
    invocation = Invocation(event_id=str(flow_run.id or ""), uri=str(flow_run.ui_url or ""))
    refs = config.image_refs()
    logger.info("scanning %d image(s), %d at a time", len(refs), config.concurrency)
    try:
        with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="image") as pool:
            # each worker runs in a copy of this flow run's context, so its task runs belong to this flow run
            futures = [pool.submit(contextvars.copy_context().run, _process, ref, services, invocation)
                       for ref in refs]
            outcomes = [f.result() for f in futures]
    finally:
        services.close()
        if locks is not None:
            locks.close()
    create_markdown_artifact(
        key="scan-and-attest-summary", markdown=summary_markdown(outcomes),
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


def _process(ref: ImageRef, services: Services, invocation: Invocation) -> ImageOutcome:
    """Run one image through every stage; never raises, so one image cannot stop the others."""
    seconds: dict[str, float] = {}
    stage = "resolve"

    def timed(name: str, call: Callable[[], T]) -> T:
        nonlocal stage
        stage = name
        started = time.perf_counter()
        try:
            return call()
        finally:
            seconds[name] = time.perf_counter() - started

    digest = None
    try:
        resolved = timed("resolve", lambda: resolve_image(ref, services))
        digest = resolved.digest
        report = timed("scan", lambda: scan_image(resolved, services))
        sha256 = timed("hash", lambda: report.sha256)
        stored = timed("store", lambda: store_report(report, services))
        verified = timed("verify", lambda: verify_report(report, stored, services))
        attached = timed("attest", lambda: attest_image(report, verified, invocation, services))
    except Exception as e:  # noqa: BLE001 - any failure is this image's outcome, never the fleet's
        return ImageOutcome(image=str(ref), digest=digest, failed_stage=stage, error=str(e) or type(e).__name__,
                            seconds=seconds)
    return ImageOutcome(
        image=str(ref), digest=resolved.digest, counts=report.counts, report_uri=verified.uri, report_sha256=sha256,
        attestation_digest=attached.manifest_digest, replaced=attached.replaced, seconds=seconds,
    )
