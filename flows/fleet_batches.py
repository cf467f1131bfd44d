"""A fleet past one machine: the scan-fleet-in-batches flow splits the fleet into batches and runs each as a run of the
scan-and-attest deployment on a work pool, so every worker of the pool (process workers here, Kubernetes jobs in
production) takes batches; per-registry global concurrency limits keep the workers from overloading one registry."""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect import State, flow, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_DEFAULT_LIMIT
from prefect.states import Cancelling, Failed

from flows import fleet_config, publish_markdown, run_name
from flows.scan_and_attest import ARTIFACT_KEY as BATCH_ARTIFACT_KEY
from tasks.locks import ensure_registry_limits, registry_limit
from vulnattest.errors import VulnattestError
from vulnattest.images import ImageRef
from vulnattest.text import md_cell

BATCH_DEPLOYMENT = "scan-and-attest/batch"
ARTIFACT_KEY = "scan-fleet-in-batches"
CRASH_RESUBMISSIONS = 1
"""A batch whose run crashed (its worker or pod died) is run once more; attesting replaces, so a rerun is safe."""


@dataclass
class Batch:
    """Some images of one registry, and the flow runs that took them (the last one counts)."""

    index: int
    host: str
    images: list[str]
    slots: int
    attempts: list[FlowRun] = field(default_factory=list)
    summary: str | None = None

    @property
    def run(self) -> FlowRun | None:
        """The latest flow run of this batch."""
        return self.attempts[-1] if self.attempts else None

    @property
    def state_name(self) -> str:
        """The latest run's state (``Not submitted`` before any)."""
        run = self.run
        if run is None or run.state is None:
            return "Not submitted"
        return run.state.name or run.state.type.value

    @property
    def done(self) -> bool:
        """True when the latest run reached a final state that will not be resubmitted."""
        state = self.run.state if self.run is not None else None
        if state is None or not state.is_final():
            return False
        return not (state.is_crashed() and len(self.attempts) <= CRASH_RESUBMISSIONS)

    @property
    def completed(self) -> bool:
        """True when every image of the batch was attested."""
        state = self.run.state if self.run is not None else None
        return state is not None and state.is_completed()


@dataclass(frozen=True)
class BatchResult:
    """What one batch came to, as the parent run reports it."""

    index: int
    registry: str
    images: int
    flow_run_id: str | None
    flow_run_name: str | None
    state: str
    message: str | None
    summary: str | None
    attempts: int


def plan_batches(refs: Iterable[ImageRef], batch_size: int, concurrency: int) -> list[Batch]:
    """Split the fleet into batches of at most `batch_size`, each holding images of one registry (so a batch takes
    slots of one registry limit), in the fleet's order."""
    by_host: dict[str, list[str]] = {}
    for ref in refs:
        by_host.setdefault(ref.registry, []).append(str(ref))
    batches: list[Batch] = []
    for host, images in by_host.items():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            batches.append(Batch(len(batches), host, chunk, slots=min(concurrency, len(chunk))))
    return batches


@flow(name="scan-fleet-in-batches", log_prints=False, flow_run_name=run_name("fleet"))
def scan_fleet_in_batches(
    config_path: str | None = None,
    images: list[str] | None = None,
    batch_size: int = 50,
    registry_slots: int = 16,
    deployment: str = BATCH_DEPLOYMENT,
    timeout_seconds: int = 6 * 3600,
    poll_seconds: float = 10.0,
) -> list[BatchResult] | State[Any]:
    """Scan and attest the fleet as runs of the `deployment` of scan-and-attest, `batch_size` images each, on its
    work pool's workers; fail naming the batches that did not attest every image.

    Each registry gets a ``registry:<host>`` global concurrency limit of `registry_slots` when it has none (an
    existing limit is kept): every scan-and-attest run holds slots of it while it works (one per image in flight),
    and this flow keeps no more batches in flight per registry than its limit admits, so batches wait here rather
    than on a worker. Workers must read `config_path` at the same path.

    Args:
        config_path: the fleet configuration file, at the same path on every worker (none: the built-in
            defaults, with `images` naming the images)
        images: only these images of the fleet (each as listed in the config); empty: all
        batch_size: images per batch run of scan-and-attest
        registry_slots: images in flight per registry across all workers, for a registry with no limit yet
        deployment: the scan-and-attest deployment that runs each batch (flow/deployment)
        timeout_seconds: give up waiting for the batches after this long (they are cancelled)
        poll_seconds: how often to read the batch runs' states
    """
    logger = get_run_logger()
    if batch_size < 1 or registry_slots < 1:
        raise VulnattestError(f"batch_size and registry_slots must be at least 1 (got {batch_size}, {registry_slots})")
    config = fleet_config(config_path, images)
    batches = plan_batches(config.image_refs(), batch_size, config.concurrency)
    hosts = sorted({batch.host for batch in batches})
    limits = ensure_registry_limits(hosts, registry_slots)
    in_flight_cap = _in_flight_caps(batches, limits)
    logger.info("%d image(s) in %d batch(es) of up to %d on %s; at most %s in flight", len(config.images),
                len(batches), batch_size, deployment,
                ", ".join(f"{in_flight_cap[h]} for {registry_limit(h)} ({limits[h]} slots)" for h in hosts))

    _run_all(batches, in_flight_cap, config_path, deployment, time.monotonic() + timeout_seconds, poll_seconds)

    results = [_result(batch) for batch in batches]
    failed = [r for r in results if r.state != "Completed"]
    publish_markdown(key=ARTIFACT_KEY, markdown=_markdown(results, deployment),
                             description=f"{len(results) - len(failed)} of {len(results)} batches completed")
    if failed:
        message = f"{len(failed)} of {len(results)} batch(es) did not attest every image: " + "; ".join(
            f"batch {r.index + 1} {r.flow_run_name or ''} {r.state}: {r.message or r.summary or ''}".strip()
            for r in failed)
        logger.error("%s", message)
        return Failed(message=message, data=results)
    return results


def _in_flight_caps(batches: list[Batch], limits: dict[str, int]) -> dict[str, int]:
    """How many batches of each registry may run at once: as many as its limit has slots for (at least one; any
    number when the registry's limit is inactive)."""
    caps = {}
    for host, limit in limits.items():
        slots = max(batch.slots for batch in batches if batch.host == host)
        caps[host] = max(1, limit // slots) if limit else len(batches)
    return caps


def _run_all(batches: list[Batch], in_flight_cap: dict[str, int], config_path: str | None, deployment: str,
             deadline: float, poll_seconds: float) -> None:
    """Submit batches as their registry's cap allows, poll every run in flight with one request, resubmit a crashed
    batch once, and cancel what is still running at the deadline."""
    logger = get_run_logger()
    waiting = deque(batches)
    running: dict[UUID, Batch] = {}
    with get_client(sync_client=True) as client:
        while waiting or running:
            for batch in list(waiting):
                if sum(b.host == batch.host for b in running.values()) < in_flight_cap[batch.host]:
                    waiting.remove(batch)
                    running[_submit(batch, config_path, deployment, len(batches)).id] = batch
            if time.monotonic() > deadline:
                _cancel(client, list(running))
                return
            if not running:
                continue
            time.sleep(poll_seconds)
            for run in read_flow_runs(client, list(running)):
                batch = running[run.id]
                batch.attempts[-1] = run
                if run.state is None or not run.state.is_final():
                    continue
                del running[run.id]
                if not batch.done:  # crashed: its worker or pod died; attesting again is safe
                    logger.warning("batch %d run %s crashed (%s); submitting it again", batch.index + 1, run.name,
                                   run.state.message)
                    waiting.appendleft(batch)
                    continue
                batch.summary = _summary(client, run.id)
                log = logger.info if batch.completed else logger.error
                log("batch %d/%d (%s) %s: %s", batch.index + 1, len(batches), run.name, batch.state_name,
                    batch.summary or run.state.message)


def read_flow_runs(client: SyncPrefectClient, ids: list[UUID]) -> list[FlowRun]:
    """The flow runs of `ids`, however many: the API returns at most PREFECT_API_DEFAULT_LIMIT (200) at once."""
    page = PREFECT_API_DEFAULT_LIMIT.value()
    chunks = (ids[start:start + page] for start in range(0, len(ids), page))
    return [run for chunk in chunks
            for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=page)]


def _submit(batch: Batch, config_path: str | None, deployment: str, total: int) -> FlowRun:
    """Create the batch's flow run of `deployment` and return at once; the idempotency key makes a retry of this
    parent run find the run it already created instead of creating a second one."""
    digest = hashlib.sha256("\n".join(batch.images).encode()).hexdigest()[:16]
    key = f"{flow_run.id}:{batch.index}:{len(batch.attempts)}:{digest}"
    run = run_deployment(
        name=deployment, parameters={"config_path": config_path, "images": batch.images}, timeout=0,
        flow_run_name=f"{flow_run.name or 'fleet'}-batch-{batch.index + 1}-of-{total}", idempotency_key=key,
        tags=["vulnattest", "batch"],
    )
    if not isinstance(run, FlowRun):  # called outside an event loop it runs synchronously; this tells the type checker
        raise TypeError(f"run_deployment returned {type(run).__name__}, not a flow run")
    batch.attempts.append(run)
    get_run_logger().info("batch %d/%d: %d image(s) of %s as %s", batch.index + 1, total, len(batch.images),
                          batch.host, run.name)
    return run


def _cancel(client: SyncPrefectClient, runs: list[UUID]) -> None:
    """Ask the workers to stop runs the deadline overtook, so no batch outlives its parent into the next run."""
    logger = get_run_logger()
    for run_id in runs:
        logger.error("deadline passed: cancelling flow run %s", run_id)
        client.set_flow_run_state(run_id, Cancelling(message="the scan-fleet-in-batches deadline passed"))


def _summary(client: SyncPrefectClient, run_id: UUID) -> str | None:
    """The child run's own one-line summary (its artifact's description), e.g. ``49 of 50 images attested``."""
    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=[BATCH_ARTIFACT_KEY])))
    return artifacts[0].description if artifacts else None


def _result(batch: Batch) -> BatchResult:
    run = batch.run
    state = batch.state_name if batch.done or run is None else f"Timed out ({batch.state_name})"
    return BatchResult(
        index=batch.index, registry=batch.host, images=len(batch.images),
        flow_run_id=str(run.id) if run else None, flow_run_name=run.name if run else None, state=state,
        message=run.state.message if run is not None and run.state is not None else None, summary=batch.summary,
        attempts=len(batch.attempts),
    )


def _markdown(results: list[BatchResult], deployment: str) -> str:
    done = sum(r.state == "Completed" for r in results)
    lines = [f"# {ARTIFACT_KEY}", "", f"**{done} of {len(results)} batches completed** on `{deployment}`", "",
             "| batch | registry | images | flow run | state | summary |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.index + 1} | `{r.registry}` | {r.images} | `{r.flow_run_name or '-'}` | {md_cell(r.state)} | "
              f"{md_cell(r.summary or r.message or '-')} |" for r in sorted(results, key=_failed_first)]
    return "\n".join(lines) + "\n"


def _failed_first(result: BatchResult) -> tuple[bool, int]:
    return (result.state == "Completed", result.index)
