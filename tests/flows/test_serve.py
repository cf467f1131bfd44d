"""`vulnattest serve` against a real `prefect server`: deployments, schedules, and runs triggered as the UI does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.serve import CHECK_CRON, SCAN_CRON
from deployments.server import LocalPrefectServer
from tests.conftest import ConfigWriter
from tests.flows.conftest import pointed_at
from tests.flows.test_scan_and_attest import _fleet, _vuln_layers
from vulnattest.demo.registry import LocalRegistry, free_port


@pytest.fixture(scope="module")
def prefect_ui_server() -> Iterator[LocalPrefectServer]:
    with LocalPrefectServer() as server:
        yield server


async def _run_deployment(client: PrefectClient, name: str, parameters: dict[str, object]) -> FlowRun:
    deployment = await client.read_deployment_by_name(name)
    # what the UI's "Run" button (custom run form) sends
    return await client.create_flow_run_from_deployment(deployment.id, parameters=parameters)


def test_serve_registers_both_deployments_and_runs_them_from_the_form(
    prefect_ui_server: LocalPrefectServer, registry: LocalRegistry, config_writer: ConfigWriter, tmp_path: Path
):
    import asyncio

    refs = _fleet(registry, "served", 3)
    config = config_writer.write(refs)
    env = {**os.environ, **prefect_ui_server.environment(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = (tmp_path / "serve.log").open("wb")
    served = subprocess.Popen([sys.executable, "-m", "vulnattest", "serve", "--config", str(config)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        async def scenario() -> tuple[FlowRun, FlowRun, list[object]]:
            async with get_client() as client:
                async def deployments() -> list[object]:
                    found = [await _try_read(client, n) for n in ("scan-and-attest/fleet", "check-freshness/fleet")]
                    return found if all(found) else []

                listed = await _poll(deployments, "both deployments")
                scan = await _run_deployment(client, "scan-and-attest/fleet",
                                             {"config_path": str(config), "images": refs[:2]})
                scan = await _poll(lambda: _final(client, scan.id), "the scan-and-attest run")
                check = await _run_deployment(client, "check-freshness/fleet", {"config_path": str(config)})
                check = await _poll(lambda: _final(client, check.id), "the check-freshness run")
                return scan, check, listed

        with pointed_at(prefect_ui_server):
            scan_run, check_run, listed = asyncio.run(scenario())
    finally:
        served.terminate()
        served.wait(timeout=30)
    output = (tmp_path / "serve.log").read_text()
    assert scan_run.state is not None and scan_run.state.is_completed(), output[-3000:]
    crons = sorted(s.schedule.cron for d in listed for s in d.schedules)  # type: ignore[attr-defined]
    assert crons == sorted([SCAN_CRON, CHECK_CRON])
    assert all(s.schedule.timezone == "UTC" for d in listed for s in d.schedules)  # type: ignore[attr-defined]
    assert [_vuln_layers(registry, r) for r in refs] == [1, 1, 0]  # only the images the form asked for
    # the third image has no attestation yet: the freshness run reports it, and says so in its artifact
    assert check_run.state is not None and check_run.state.is_completed(), output[-3000:]

    async def artifact() -> str:
        async with get_client() as client:
            found = await client.read_artifacts()
            return next(str(a.data) for a in found if a.key == "check-freshness" and a.flow_run_id == check_run.id)

    with pointed_at(prefect_ui_server):
        table = asyncio.run(artifact())
    assert "missing" in table
    assert refs[2] in table


async def _try_read(client: PrefectClient, name: str) -> object | None:
    from prefect.exceptions import ObjectNotFound

    try:
        return await client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


async def _final(client: PrefectClient, flow_run_id: object) -> FlowRun | None:
    run = await client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
    return run if run.state is not None and run.state.is_final() else None


async def _poll(probe, what: str, timeout: float = 180.0):  # type: ignore[no-untyped-def]
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_serve_without_an_api_url_starts_a_server_whose_scheduler_runs_the_deployments(
    config_writer: ConfigWriter, registry: LocalRegistry, tmp_path: Path
):
    # Prefect's embedded server runs no scheduler: served there, nothing would ever run
    import asyncio

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    config = config_writer.write([f"{registry.host}/served/none:1"])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "home")}
    with (tmp_path / "serve.log").open("wb") as log:
        served = subprocess.Popen([sys.executable, "-m", "vulnattest", "serve", "--config", str(config), "--port",
                                   str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    local = f"http://127.0.0.1:{port}/api"
    try:
        async def scheduled() -> list[FlowRun]:
            async with get_client() as client:
                return await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))))

        async def both_scheduled() -> list[FlowRun]:
            try:
                runs = await scheduled()
            except Exception:  # noqa: BLE001 - the server is not up yet
                return []
            names = {run.deployment_id for run in runs}
            return runs if len(names) == 2 else []

        with temporary_settings(updates={PREFECT_API_URL: local}):
            runs = asyncio.run(_poll(both_scheduled, "scheduled runs of both deployments"))
    finally:
        served.terminate()
        served.wait(timeout=60)
    assert runs, (tmp_path / "serve.log").read_text()[-3000:]
    assert (tmp_path / "home" / "prefect.db").exists()  # the server's database lives in PREFECT_HOME
    with pytest.raises(ConnectionRefusedError):  # stopped with it: nothing is left listening
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert _processes_naming(str(config)) == []  # and the runner it started was stopped, not orphaned


def _processes_naming(text: str) -> list[str]:
    """Command lines of the running processes that mention `text`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        if text in command:
            found.append(command)
    return found
