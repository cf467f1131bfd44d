"""A fleet past one machine: scan-fleet-in-batches on a real `prefect server`, its batches run as runs of the
scan-and-attest/batch deployment (made by `prefect deploy` from deployments/batches.yaml) by two `prefect worker`
processes on a process work pool, each batch holding slots of the registry's global concurrency limit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.server import LocalPrefectServer
from flows.fleet_batches import scan_fleet_in_batches
from tests.conftest import ConfigWriter, poll_events
from tests.flows.test_scan_and_attest import _fleet, _vuln_layers
from vulnattest.demo.registry import LocalRegistry

REPOSITORY = Path(__file__).resolve().parents[2]
POOL = "vulnattest"  # the pool deployments/batches.yaml names
WORKERS = ("worker-a", "worker-b")


def _prefect(*args: str, env: dict[str, str]) -> None:
    """Run a `prefect` command against the test server; fail with its output if it fails."""
    prefect = shutil.which("prefect")
    command = [prefect] if prefect else [sys.executable, "-m", "prefect"]
    done = subprocess.run([*command, *args], env=env, cwd=REPOSITORY, capture_output=True, text=True, timeout=180,
                          check=False)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPrefectServer]:
    with LocalPrefectServer() as running:
        yield running


@pytest.fixture(scope="module")
def workers(server: LocalPrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """The pool, both deployments of deployments/batches.yaml, and two workers taking one flow run at a time."""
    env = {**os.environ, **server.environment(), "VULNATTEST_HOME": str(REPOSITORY),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    _prefect("work-pool", "create", POOL, "--type", "process", env=env)
    _prefect("--no-prompt", "deploy", "--prefect-file", "deployments/batches.yaml", "--all", env=env)
    logs = tmp_path_factory.mktemp("workers")
    prefect = shutil.which("prefect")
    command = [prefect] if prefect else [sys.executable, "-m", "prefect"]
    processes = []
    for name in WORKERS:
        log = (logs / f"{name}.log").open("wb")
        processes.append(subprocess.Popen(
            [*command, "worker", "start", "--pool", POOL, "--name", name, "--limit", "1", "--type", "process"],
            env=env, cwd=REPOSITORY, stdout=log, stderr=subprocess.STDOUT))
    try:
        _wait_for_workers(server, processes)
        yield [logs / f"{name}.log" for name in WORKERS]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_workers(server: LocalPrefectServer, processes: list[subprocess.Popen[bytes]],
                      timeout: float = 90.0) -> None:
    """Wait until both workers have polled the pool, so neither can take every batch before the other starts."""
    deadline = time.monotonic() + timeout
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        while {w.name for w in client.read_workers_for_work_pool(POOL)} < set(WORKERS):
            assert all(p.poll() is None for p in processes), "a worker exited at start; see its log"
            assert time.monotonic() < deadline, "the workers did not poll the pool in time"
            time.sleep(0.5)


def _events(name: str, flow_run_ids: list[str], expected: int, timeout: float = 60.0) -> list[Any]:
    """Events called `name` related to any of the flow runs, polled until `expected` arrived or the deadline."""
    event_filter = EventFilter(event=EventNameFilter(name=[name]),
                               related=EventRelatedFilter(id=[f"prefect.flow-run.{i}" for i in flow_run_ids]))
    return poll_events(event_filter, expected, timeout, interval=0.5)


def _flow_run_of(event: Any) -> str:
    return next(r.id.removeprefix("prefect.flow-run.") for r in event.related if r.id.startswith("prefect.flow-run."))


def test_two_workers_attest_every_image_of_the_fleet_exactly_once(
    server: LocalPrefectServer, workers: list[Path], registry: LocalRegistry, config_writer: ConfigWriter
):
    refs = _fleet(registry, "batched", 8)  # one two-platform index, Alpine and Debian images
    config = config_writer.write(refs)

    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        state = scan_fleet_in_batches(config_path=str(config), batch_size=2, registry_slots=4, poll_seconds=1,
                                      timeout_seconds=600, return_state=True)
        logs = "\n".join(path.read_text()[-3000:] for path in workers)
        assert state.is_completed(), f"{state.message}\n{logs}"
        batches = state.result()
        runs = [b.flow_run_id for b in batches]
        submitted = _events("prefect.worker.submitted-flow-run", runs, expected=len(runs))
        acquired = _events("prefect.concurrency-limit.acquired", runs, expected=len(runs))
        released = _events("prefect.concurrency-limit.released", runs, expected=len(runs))

    # four batches of two, each a completed run of the batch deployment that attested both of its images
    assert sorted(b.images for b in batches) == [2, 2, 2, 2]
    assert {b.state for b in batches} == {"Completed"}
    assert {b.summary for b in batches} == {"2 of 2 images attested"}
    # every image attested exactly once: one vuln layer, and one stored report (one scan) for its digest
    assert [_vuln_layers(registry, ref) for ref in refs] == [1] * len(refs)
    reports = sorted((config.parent / "reports").rglob("*.trivy.json"))
    per_image = {str(report.parent.relative_to(config.parent / "reports")) for report in reports}
    assert len(reports) == len(per_image) == len(refs)
    # both workers took batches
    by_worker = {event.resource.name for event in submitted if _flow_run_of(event) in runs}
    assert by_worker == set(WORKERS), logs
    # each batch held slots of the registry's limit while it worked, and together they never held more than it has
    limit = f"registry:{registry.host}"
    assert sorted(_flow_run_of(e) for e in acquired if e.resource.name == limit) == sorted(runs)
    changes = sorted([(e.occurred, int(e.resource["slots-acquired"])) for e in acquired if e.resource.name == limit]
                     + [(e.occurred, -int(e.resource["slots-acquired"])) for e in released
                        if e.resource.name == limit])
    held = [sum(delta for _, delta in changes[:i + 1]) for i in range(len(changes))]
    assert max(held) <= 4 and held[-1] == 0
