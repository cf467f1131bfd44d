"""The check-freshness flow on Prefect's real server, a real registry and a loopback webhook: one alert per change
across runs, resolves, digests, Prefect notification blocks, events, the fleet artifact, failing channels and
registries, and `vulnattest check`."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from typer.testing import CliRunner

import flows.check_freshness as check_flow
from flows.check_freshness import ARTIFACT_KEY, TABLE_ARTIFACT_KEY, check_freshness
from tests.conftest import poll_events
from tests.integration.test_freshness import MAX_AGE, Attester, WebhookReceiver, flat, push, summary
from vulnattest.alerts import STATE_KEY, AlertState
from vulnattest.cli import app
from vulnattest.demo.registry import LocalRegistry
from vulnattest.freshness import ImageVerdict, Verdict
from vulnattest.storage.local import LocalReportStore

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def write_config(tmp_path: Path, registry: LocalRegistry, keypair: tuple[Path, Path], images: list[str],
                 alerts: list[dict[str, Any]], **extra: Any) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({
        "images": images, "registries": {registry.host: {"insecure": True}},
        "store": {"url": (tmp_path / "reports").as_uri()}, "signing": {"key": str(keypair[0])},
        "alerts": alerts, "concurrency": 4, **extra,
    }))
    return path


def run(config: Path, **params: Any) -> tuple[Any, dict[str, ImageVerdict]]:
    state = check_freshness(config_path=str(config), return_state=True, **params)
    verdicts = state.result(raise_on_failure=False)
    assert isinstance(verdicts, list), verdicts
    return state, {v.image: v for v in verdicts}


def artifact_of(state: Any, key: str = ARTIFACT_KEY) -> str:
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            key=ArtifactFilterKey(any_=[key])))
    return str(artifact.data)


def events_of(flow_run_id: UUID, expected: int, timeout: float = 30.0) -> list[Any]:
    """The vulnattest events related to a flow run, polled until `expected` arrived or the deadline passed."""
    event_filter = EventFilter(event=EventNameFilter(prefix=["vulnattest.image."]),
                               related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]))
    return poll_events(event_filter, expected, timeout, interval=0.2)


def test_one_alert_per_change_across_runs_then_resolved_with_events_and_artifact(
    registry: LocalRegistry, attester: Attester, keypair: tuple[Path, Path], receiver: WebhookReceiver,
    tmp_path: Path,
):
    fresh_ref, fresh = push(registry, "flow-fresh")
    stale_ref, stale = push(registry, "flow-stale")
    missing_ref, missing = push(registry, "flow-missing")
    attester.attach(fresh, timedelta(hours=1))
    attester.attach(stale, MAX_AGE + timedelta(hours=2))
    config = write_config(tmp_path, registry, keypair, [fresh_ref, stale_ref, missing_ref],
                          alerts=[{"webhook": receiver.url}])

    state, verdicts = run(config)

    assert state.is_completed(), state.message
    assert {ref: v.verdict for ref, v in verdicts.items()} == {
        fresh_ref: Verdict.FRESH, stale_ref: Verdict.STALE, missing_ref: Verdict.MISSING}
    first = receiver.take()
    assert sorted(summary(first)) == [("alert", [("alert", "flow-missing:1")]), ("alert", [("alert", "flow-stale:1")])]
    stale_alert = next(m for m in first if m["alerts"][0]["image"] == stale_ref)
    assert stale_alert["alerts"][0]["action"] == f"vulnattest run --config {config} --image {stale_ref}"
    markdown = artifact_of(state)
    assert "**3 image(s): 1 stale, 1 missing, 1 fresh**" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| **")]
    assert [row.split("`")[1] for row in rows] == [stale_ref, missing_ref]  # not-fresh only, worst first
    with get_client(sync_client=True) as client:
        (table,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            key=ArtifactFilterKey(any_=[TABLE_ARTIFACT_KEY])))
    fleet = json.loads(str(table.data))  # the whole fleet, worst first, in a table
    assert [(row["image"], row["verdict"]) for row in fleet] == [
        (stale_ref, "stale"), (missing_ref, "missing"), (fresh_ref, "fresh")]
    assert fleet[2]["findings C H M L U"] != "-" and fleet[2]["deadline"].startswith("20")
    events = events_of(state.state_details.flow_run_id, expected=3)
    assert sorted((e.event, e.resource.id) for e in events) == sorted([
        ("vulnattest.image.fresh", f"vulnattest.image.{fresh_ref}"),
        ("vulnattest.image.stale", f"vulnattest.image.{stale_ref}"),
        ("vulnattest.image.missing", f"vulnattest.image.{missing_ref}"),
    ])
    stale_event = next(e for e in events if e.event == "vulnattest.image.stale")
    assert stale_event.payload["digest"] == stale.digest and stale_event.payload["previous"] is None

    unchanged, _ = run(config)
    assert unchanged.is_completed()
    assert receiver.take() == []  # nothing changed, no reminder due

    attester.attach(stale, timedelta(minutes=1))
    attester.attach(missing, timedelta(minutes=1))
    state, verdicts = run(config)
    assert all(v.ok for v in verdicts.values())
    assert sorted(summary(receiver.take())) == [
        ("resolved", [("resolved", "flow-missing:1")]), ("resolved", [("resolved", "flow-stale:1")])]
    resolved_events = events_of(state.state_details.flow_run_id, expected=2)
    assert sorted(e.event for e in resolved_events) == ["vulnattest.image.fresh"] * 2
    # events leave in order, so the unchanged run's would have arrived before these: it emitted none
    assert events_of(unchanged.state_details.flow_run_id, expected=0) == []
    assert "## Every image is fresh" in artifact_of(state)
    stored = AlertState.from_json(LocalReportStore(tmp_path / "reports").get(STATE_KEY) or b"", "store")
    assert {image: s.verdict for image, s in stored.images.items()} == dict.fromkeys(verdicts, Verdict.FRESH)


def test_many_images_going_stale_at_once_send_one_digest(
    registry: LocalRegistry, attester: Attester, keypair: tuple[Path, Path], receiver: WebhookReceiver,
    tmp_path: Path,
):
    refs = []
    for i in range(8):
        ref, image = push(registry, f"flow-digest-{i}")
        attester.attach(image, MAX_AGE + timedelta(hours=1))
        refs.append(ref)
    config = write_config(tmp_path, registry, keypair, refs, alerts=[{"webhook": receiver.url}],
                          freshness={"digest_threshold": 5})

    state, verdicts = run(config)

    assert state.is_completed()
    assert {v.verdict for v in verdicts.values()} == {Verdict.STALE}
    (digest,) = receiver.take()
    assert (digest["kind"], digest["count"], digest["counts"]) == ("digest", 8, {"stale": 8})
    assert sorted(a["image"] for a in digest["alerts"]) == sorted(refs)
    run(config)
    assert receiver.take() == []


def test_a_prefect_notification_block_receives_the_alert(
    registry: LocalRegistry, attester: Attester, keypair: tuple[Path, Path], receiver: WebhookReceiver,
    tmp_path: Path,
):
    CustomWebhookNotificationBlock(
        name="oncall", url=receiver.url, json_data={"subject": "{{subject}}", "text": "{{body}}"},
    ).save("vulnattest-oncall", overwrite=True)
    ref, _ = push(registry, "flow-block")
    config = write_config(tmp_path, registry, keypair, [ref],
                          alerts=[{"prefect_block": "vulnattest-oncall"},
                                  {"prefect_block": "custom-webhook/vulnattest-oncall", "name": "by-slug"}])

    state, _ = run(config)

    assert state.is_completed(), state.message
    received = receiver.take()
    assert len(received) == 2  # one per channel, each loaded its own way
    for notification in received:
        assert notification["subject"] == f"[vulnattest] missing: {ref}"
        assert notification["text"].startswith(f"MISSING {ref}\nWhat broke: no vuln attestation is attached")
        assert f"Run: vulnattest run --config {config} --image {ref}" in notification["text"]


def test_an_unknown_block_is_reported_and_the_verdicts_kept(
    registry: LocalRegistry, keypair: tuple[Path, Path], tmp_path: Path
):
    ref, _ = push(registry, "flow-noblock")
    config = write_config(tmp_path, registry, keypair, [ref], alerts=[{"prefect_block": "no-such-block"}])
    state, verdicts = run(config)
    assert state.is_failed()
    assert "alert to prefect-block:no-such-block not delivered: prefect-block:no-such-block: 0 notification " \
           "blocks are named 'no-such-block'" in state.message
    assert verdicts[ref].verdict is Verdict.MISSING


def test_a_failing_channel_is_reported_without_its_secret_and_told_again_next_run(
    registry: LocalRegistry, keypair: tuple[Path, Path], receiver: WebhookReceiver, tmp_path: Path
):
    ref, _ = push(registry, "flow-failing")
    config = write_config(tmp_path, registry, keypair, [ref], alerts=[{"webhook": receiver.url}])
    receiver.answers = [400]

    state, verdicts = run(config)

    assert state.is_failed()
    assert verdicts[ref].verdict is Verdict.MISSING  # the verdict survives the channel
    assert "refused the alert (400)" in state.message and "s3cr3t" not in state.message
    assert "## Problems with this run" in artifact_of(state)
    assert receiver.take() == [] and len(receiver.paths) == 1  # a 400 is not retried

    state, _ = run(config)
    assert state.is_completed()
    assert summary(receiver.take()) == [("alert", [("alert", "flow-failing:1")])]
    run(config)
    assert receiver.take() == []


def test_a_transient_channel_failure_is_retried_within_the_run(
    registry: LocalRegistry, keypair: tuple[Path, Path], receiver: WebhookReceiver, tmp_path: Path
):
    ref, _ = push(registry, "flow-retry")
    config = write_config(tmp_path, registry, keypair, [ref], alerts=[{"webhook": receiver.url}])
    receiver.answers = [503]

    state, _ = run(config)

    assert state.is_completed(), state.message
    assert summary(receiver.take()) == [("alert", [("alert", "flow-retry:1")])]
    assert len(receiver.paths) == 2


class HangUp:
    """A TCP listener that accepts and closes at once (a broken registry), counting connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_a_registry_failing_after_retries_makes_its_images_unreachable(
    registry: LocalRegistry, attester: Attester, keypair: tuple[Path, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    # the real task and retry condition, without the production backoff between attempts
    monkeypatch.setattr(check_flow, "probe_registry", check_flow.probe_registry.with_options(retry_delay_seconds=0))
    broken = HangUp()
    try:
        ok_ref, ok = push(registry, "flow-reachable")
        attester.attach(ok, timedelta(hours=1))
        down = [f"{broken.host}/team/a:1", f"{broken.host}/team/b:1"]
        config = write_config(tmp_path, registry, keypair, [ok_ref, *down], alerts=[],
                              registries={registry.host: {"insecure": True}, broken.host: {"insecure": True}})
        state, verdicts = run(config)
    finally:
        broken.close()
    assert state.is_completed()
    assert broken.connections == 4  # one probe, retried three times; no request per image
    assert [verdicts[ref].verdict for ref in down] == [Verdict.UNREACHABLE] * 2
    assert f"{broken.host}: cannot reach http://{broken.host}/v2/" in verdicts[down[0]].reason
    assert verdicts[ok_ref].verdict is Verdict.FRESH


def test_check_command_exits_0_only_when_every_image_is_fresh(
    registry: LocalRegistry, attester: Attester, keypair: tuple[Path, Path], tmp_path: Path
):
    ref, image = push(registry, "flow-cli")
    config = write_config(tmp_path, registry, keypair, [ref], alerts=[])

    missing = CliRunner().invoke(app, ["check", "--config", str(config)])
    assert missing.exit_code == 1, missing.output
    assert "missing" in missing.output and "1 image(s): 1 missing" in flat(missing.output)

    attester.attach(image, timedelta(minutes=5))
    fresh = CliRunner().invoke(app, ["check", "--config", str(config)])
    assert fresh.exit_code == 0, fresh.output
    assert "1 image(s): 1 fresh" in flat(fresh.output)
    as_json = CliRunner().invoke(app, ["check", "--config", str(config), "--json"])
    assert as_json.exit_code == 0, as_json.output
    [verdict] = json.loads(as_json.stdout)
    assert (verdict["image"], verdict["verdict"]) == (ref, "fresh")


def test_checking_some_images_keeps_the_alert_state_of_the_others(
    registry: LocalRegistry, keypair: tuple[Path, Path], receiver: WebhookReceiver, tmp_path: Path
):
    one, _ = push(registry, "flow-subset-1")
    two, _ = push(registry, "flow-subset-2")
    config = write_config(tmp_path, registry, keypair, [one, two], alerts=[{"webhook": receiver.url}])
    run(config)
    assert len(receiver.take()) == 2
    _, verdicts = run(config, images=[one])
    assert list(verdicts) == [one]
    stored = AlertState.from_json(LocalReportStore(tmp_path / "reports").get(STATE_KEY) or b"", "store")
    assert set(stored.images) == {one, two}
    run(config)
    assert receiver.take() == []  # nobody is told twice
