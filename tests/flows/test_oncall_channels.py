"""On-call tools that know an incident by the image: the real Alertmanager (Debian's prometheus-alertmanager) and
PagerDuty's Events API v2 (its exact wire format, at a loopback receiver). An image's alert opens one incident, a
reminder or a worse verdict stays in it, and the image's return to fresh closes it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.flows.test_check_freshness import run, write_config
from tests.integration.test_freshness import Attester, WebhookReceiver, push
from tests.prometheus import PrometheusDaemon, running
from vulnattest.demo.registry import LocalRegistry
from vulnattest.freshness import Verdict

pytestmark = pytest.mark.usefixtures("prefect_server")


class LocalAlertmanager(PrometheusDaemon):
    """Debian's Alertmanager on a loopback port, routing every alert to a receiver that sends nothing."""

    name = "alertmanager"
    program = "prometheus-alertmanager"

    def arguments(self) -> list[str]:
        config = self.directory / "alertmanager.yml"
        config.write_text("route: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n")
        return [f"--config.file={config}", f"--storage.path={self.directory / 'data'}", "--cluster.listen-address="]

    def alerts(self, image: str) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds for `image` and has not seen resolved."""
        answer = httpx.get(f"{self.url}/api/v2/alerts", params={"filter": f'image="{image}"'}, timeout=10)
        answer.raise_for_status()
        return list(answer.json())


@pytest.fixture(scope="module")
def alertmanager() -> Iterator[LocalAlertmanager]:
    yield from running(LocalAlertmanager)


@pytest.fixture
def pagerduty() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def test_alertmanager_holds_one_alert_per_image_until_it_is_fresh_again(
    registry: LocalRegistry, attester: Attester, keypair: tuple[Path, Path], alertmanager: LocalAlertmanager,
    tmp_path: Path,
):
    ref, image = push(registry, "oncall-am")
    config = write_config(tmp_path, registry, keypair, [ref],
                          alerts=[{"alertmanager": alertmanager.url, "name": "am"}])

    _, verdicts = run(config)  # never attested: missing
    [missing] = alertmanager.alerts(ref)
    attester.attach(image, timedelta(hours=200))
    _, later = run(config)  # attested, but stale: the same alert, its annotations updated
    [stale] = alertmanager.alerts(ref)
    attester.attach(image, timedelta(minutes=5))
    _, fresh = run(config)

    assert verdicts[ref].verdict is Verdict.MISSING and later[ref].verdict is Verdict.STALE
    assert missing["labels"] == {"alertname": "VulnattestImageNotFresh", "image": ref}
    assert missing["status"]["state"] == "active"
    assert (missing["annotations"]["verdict"], missing["annotations"]["severity"]) == ("missing", "critical")
    assert stale["fingerprint"] == missing["fingerprint"]
    assert stale["annotations"]["verdict"] == "stale"
    assert "vulnattest run --config" in stale["annotations"]["run"]
    assert fresh[ref].verdict is Verdict.FRESH
    assert alertmanager.alerts(ref) == []  # resolved: Alertmanager no longer holds it


def test_pagerduty_gets_a_trigger_then_a_resolve_under_the_images_dedup_key(
    registry: LocalRegistry, attester: Attester, keypair: tuple[Path, Path], pagerduty: WebhookReceiver,
    tmp_path: Path,
):
    ref, image = push(registry, "oncall-pd")
    routing_key = "R0UT1NGK3Y0000000000000000000000"
    config = write_config(tmp_path, registry, keypair, [ref], alerts=[
        {"pagerduty": routing_key, "pagerduty_url": f"{pagerduty.url.rsplit('/hooks', 1)[0]}/v2/enqueue"}])

    run(config)
    [trigger] = pagerduty.take()
    attester.attach(image, timedelta(minutes=5))
    run(config)
    [resolve] = pagerduty.take()

    assert pagerduty.paths == ["/v2/enqueue", "/v2/enqueue"]
    assert trigger["routing_key"] == resolve["routing_key"] == routing_key
    assert trigger["dedup_key"] == resolve["dedup_key"] == f"vulnattest:{ref}"
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert set(resolve) == {"routing_key", "dedup_key", "event_action"}
    payload = trigger["payload"]
    assert {"summary", "source", "severity"} <= set(payload)  # what Events v2 requires
    assert payload["severity"] in {"critical", "error", "warning", "info"}
    assert (payload["source"], payload["severity"], payload["class"]) == (ref, "critical", "missing")
    assert len(payload["summary"]) <= 1024
    assert "vulnattest run --config" in payload["custom_details"]["text"]
