"""The Prefect Automations of deployments/automations/ on a real `prefect server start` (its triggers and actions
services): the rescan of an expiring or missing image, the dead man's switches, and `vulnattest serve --automations`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.events.schemas.automations import AutomationCore
from prefect.states import Completed

from deployments.fleet_automations import ALERT_BLOCKS, AUTOMATIONS_DIR, apply_automations, read_automations
from deployments.serve import fleet_deployments
from deployments.server import LocalPrefectServer
from flows.local import drain_prefect_workers
from tasks.freshness import EVENT_PREFIX, emit_change_event
from tests.flows.conftest import pointed_at
from tests.integration.test_freshness import WebhookReceiver
from vulnattest.alerts import VerdictChange
from vulnattest.config import load_config
from vulnattest.errors import ConfigError, VulnattestError
from vulnattest.freshness import ImageVerdict, Verdict

RESCAN = AUTOMATIONS_DIR / "rescan.yaml"
DEAD_MANS_SWITCH = AUTOMATIONS_DIR / "dead-mans-switch.yaml"
BLOCK = "custom-webhook/oncall"
T = TypeVar("T")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPrefectServer]:
    """`prefect server start`: unlike Prefect's test harness, it runs the triggers and actions services."""
    with LocalPrefectServer() as running:
        yield running


@pytest.fixture
def inbox() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def fleet(server: LocalPrefectServer, inbox: WebhookReceiver, tmp_path: Path) -> Iterator[Path]:
    """A fleet config whose alerts go through a custom-webhook notification block posting to `inbox`, with both
    deployments registered (nothing serves them: their runs stay scheduled). No automation outlives the test."""
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump({
        "images": ["registry.example/app:1"], "store": {"url": (tmp_path / "reports").as_uri()},
        "alerts": [{"prefect_block": BLOCK}],
    }))
    with pointed_at(server):
        CustomWebhookNotificationBlock(
            name="oncall", url=inbox.url, json_data={"subject": "{{subject}}", "body": "{{body}}"},
        ).save("oncall", overwrite=True)
        for deployment in fleet_deployments(str(config)):
            deployment.apply()
    yield config
    with pointed_at(server), get_client(sync_client=True) as client:
        for automation in client.read_automations():
            client.delete_automation(automation.id)


def _poll(probe: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _runs_started_by_automations(deployment: str) -> list[FlowRun]:
    """The runs of `deployment` that no schedule made."""
    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(deployment).id
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    return [run for run in runs if not run.auto_scheduled]


def _verdict_event(image: str, verdict: Verdict, previous: Verdict) -> None:
    """What check-freshness emits when `image`'s verdict changes."""
    now = datetime.now(UTC)
    emit_change_event(VerdictChange(ImageVerdict(image=image, verdict=verdict, reason="test", action="test",
                                                 checked_at=now), previous))


def test_an_expiring_or_missing_image_is_rescanned_alone_with_the_deployments_config(
    server: LocalPrefectServer, fleet: Path
):
    started = time.monotonic()
    with pointed_at(server):
        [(name, replaced)] = apply_automations(load_config(fleet), [RESCAN])
        assert not replaced
        _verdict_event("registry.example/app:1", Verdict.EXPIRING, Verdict.FRESH)
        _verdict_event("registry.example/fresh:1", Verdict.FRESH, Verdict.EXPIRING)
        _verdict_event("registry.example/new:2", Verdict.MISSING, Verdict.MISSING)
        drain_prefect_workers(timeout=30)
        runs = _poll(lambda: (lambda found: found if len(found) >= 2 else None)(
            _runs_started_by_automations("scan-and-attest/fleet")), "two rescans")
        time.sleep(3)  # a run for the fresh image, were it made, would be made by now
        runs = _runs_started_by_automations("scan-and-attest/fleet")
    print(f"rescans made in {time.monotonic() - started:.1f} s")
    assert sorted(run.parameters["images"] for run in runs) == [["registry.example/app:1"], ["registry.example/new:2"]]
    assert {run.parameters["config_path"] for run in runs} == {str(fleet)}  # the deployment's own
    assert name == "vulnattest: rescan an expiring or missing image"


def test_a_dead_mans_switch_notifies_on_call_unless_runs_complete(
    server: LocalPrefectServer, fleet: Path, inbox: WebhookReceiver, tmp_path: Path
):
    # the shipped switches with a 12 s window (10 s is the least Prefect allows a proactive trigger)
    switches = read_automations(DEAD_MANS_SWITCH)
    for switch in switches:
        switch["trigger"]["within"] = 12
    shortened = tmp_path / "dead-mans-switch.yaml"
    shortened.write_text(yaml.safe_dump({"automations": switches}))
    started = time.monotonic()
    with pointed_at(server):
        apply_automations(load_config(fleet), [shortened])
        # check-freshness completes a run every 3 s for over two windows; scan-and-attest never does
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("check-freshness/fleet")
            while time.monotonic() - started < 32:
                run = client.create_flow_run_from_deployment(deployment.id)
                client.set_flow_run_state(run.id, Completed(), force=True)
                time.sleep(3)
    received = inbox.take()
    print(f"{len(received)} notification(s) in {time.monotonic() - started:.1f} s")
    subjects = [message["subject"] for message in received]
    assert subjects, "the scan-and-attest switch never fired"
    assert set(subjects) == {"vulnattest: scan-and-attest/fleet has not completed a run for 0:00:12"}
    assert "prefect deployment run scan-and-attest/fleet" in received[0]["body"]
    # and once check-freshness stops completing, its own switch fires
    silent = _poll(lambda: [m for m in inbox.take() if "check-freshness/fleet" in m["subject"]], "the check-freshness "
                   "switch", timeout=120)
    print(f"check-freshness switch fired {time.monotonic() - started:.1f} s after the switches were made")
    assert "prefect deployment run check-freshness/fleet" in silent[0]["body"]


def test_serve_with_automations_replaces_them_by_name(
    server: LocalPrefectServer, fleet: Path, tmp_path: Path
):
    shipped = [a["name"] for path in (RESCAN, DEAD_MANS_SWITCH) for a in read_automations(path)]
    env = {**os.environ, **server.environment()}

    def serve_once(log_name: str, expected: str) -> str:
        log = tmp_path / log_name
        with log.open("wb") as out:
            served = subprocess.Popen([sys.executable, "-m", "vulnattest", "serve", "--config", str(fleet),
                                       "--automations"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _poll(lambda: log.read_text().count(f"{expected} automation") >= len(shipped) or served.poll() is not None,
                  f"serve to {expected} the automations", timeout=120)
        finally:
            served.terminate()
            served.wait(timeout=60)
        return log.read_text()

    first = serve_once("first.log", "created")
    with pointed_at(server), get_client(sync_client=True) as client:
        # a copy made by hand (another `prefect automation create`) is dropped too
        [made] = client.read_automations_by_name(shipped[0])
        client.create_automation(AutomationCore.model_validate(made.model_dump(exclude={"id"})))
    second = serve_once("second.log", "replaced")
    with pointed_at(server), get_client(sync_client=True) as client:
        names = [a.name for a in client.read_automations()]
        [rescan] = client.read_automations_by_name(shipped[0])
        scan_id = client.read_deployment_by_name("scan-and-attest/fleet").id
        [switch] = client.read_automations_by_name(shipped[1])
        block_id = client.read_block_document_by_name("oncall", "custom-webhook").id
    assert sorted(names) == sorted(shipped), (first[-2000:], second[-2000:])
    assert rescan.actions[0].deployment_id == scan_id  # type: ignore[union-attr]
    assert switch.actions[0].block_document_id == block_id  # type: ignore[union-attr]


def test_the_automations_command_replaces_them_for_deployments_already_there(server: LocalPrefectServer, fleet: Path):
    shipped = sorted(a["name"] for path in (RESCAN, DEAD_MANS_SWITCH) for a in read_automations(path))
    env = {**os.environ, **server.environment()}
    command = [sys.executable, "-m", "vulnattest", "automations", "--config", str(fleet)]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    assert sorted(re.findall(r"created automation '([^']+)'", first.stdout)) == shipped
    assert sorted(re.findall(r"replaced automation '([^']+)'", second.stdout)) == shipped
    with pointed_at(server), get_client(sync_client=True) as client:
        assert sorted(a.name for a in client.read_automations()) == shipped
    unset = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    refused = subprocess.run(command, env=unset, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "PREFECT_API_URL is unset" in refused.stderr


@pytest.mark.parametrize("path", [RESCAN, DEAD_MANS_SWITCH], ids=lambda p: p.name)
def test_prefect_automation_create_takes_each_file_with_its_ids_filled_in(
    server: LocalPrefectServer, fleet: Path, tmp_path: Path, path: Path
):
    # as the files' header says: each name that stands for an id replaced by the id Prefect shows
    with pointed_at(server), get_client(sync_client=True) as client:
        ids = {"deployment_id: scan-and-attest/fleet": client.read_deployment_by_name("scan-and-attest/fleet").id,
               f'block_document_id: "{ALERT_BLOCKS}"': client.read_block_document_by_name("oncall",
                                                                                          "custom-webhook").id}
    text = path.read_text()
    for placeholder, found in ids.items():
        text = text.replace(placeholder, f"{placeholder.partition(':')[0]}: {found}")
    filled = tmp_path / path.name
    filled.write_text(text)
    names = [a["name"] for a in read_automations(path)]
    created = subprocess.run(["prefect", "automation", "create", "--from-file", str(filled)],
                             env={**os.environ, **server.environment()}, capture_output=True, text=True, check=False)
    assert created.returncode == 0, created.stdout + created.stderr
    with pointed_at(server), get_client(sync_client=True) as client:
        made = [client.read_automations_by_name(name) for name in names]
    assert [len(found) for found in made] == [1] * len(names)
    actions: list[Any] = [action for found in made for action in found[0].actions]
    assert {getattr(a, "deployment_id", None) or a.block_document_id for a in actions} <= set(ids.values())


def test_the_shipped_files_name_the_served_deployments():
    served = {f"{d.flow_name}/{d.name}" for d in fleet_deployments("/etc/fleet.yaml")}
    switches = read_automations(DEAD_MANS_SWITCH)
    watched = set()
    for switch in switches:
        related = {spec["prefect.resource.role"]: spec["prefect.resource.name"]
                   for spec in switch["trigger"]["match_related"]}
        watched.add(f"{related['flow']}/{related['deployment']}")
        assert switch["actions"][0]["block_document_id"] == ALERT_BLOCKS
    [rescan] = read_automations(RESCAN)
    assert watched == served
    assert rescan["actions"][0]["deployment_id"] in served
    assert rescan["trigger"]["expect"] == [f"{EVENT_PREFIX}.{v.value}" for v in (Verdict.EXPIRING, Verdict.MISSING)]


def test_automations_that_cannot_notify_anyone_are_refused_before_any_is_written(
    server: LocalPrefectServer, fleet: Path, tmp_path: Path
):
    no_block = tmp_path / "no-block.yaml"
    no_block.write_text(yaml.safe_dump({"images": ["registry.example/app:1"],
                                        "alerts": [{"webhook": "https://hooks.example/T0"}]}))
    unknown = tmp_path / "unknown-block.yaml"
    unknown.write_text(yaml.safe_dump({"images": ["registry.example/app:1"],
                                       "alerts": [{"prefect_block": "custom-webhook/nobody"}]}))
    with pointed_at(server):
        with pytest.raises(ConfigError, match=r"`alerts:` names none; add a channel `prefect_block: "):
            apply_automations(load_config(no_block))
        with pytest.raises(VulnattestError, match=r"no block custom-webhook/nobody on the Prefect server"):
            apply_automations(load_config(unknown))
        with get_client(sync_client=True) as client:
            assert client.read_automations() == []


def test_a_prefect_api_that_does_not_answer_is_named_with_what_to_do(tmp_path: Path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"images": ["registry.example/app:1"],
                                     "alerts": [{"prefect_block": "custom-webhook/oncall"}]}))
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # nothing listens on the discard port
    refused = subprocess.run([sys.executable, "-m", "vulnattest", "automations", "--config", str(fleet)], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    said = " ".join(refused.stderr.split())
    assert "the Prefect API at http://127.0.0.1:9/api failed while writing the automations (ConnectError" in said
