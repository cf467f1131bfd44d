"""Prometheus metrics: check-freshness and scan-and-attest push them to the real Pushgateway (Debian's
prometheus-pushgateway), in the shape the shipped alerting rules read; promtool checks and unit-tests those rules."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.scan_and_attest import scan_and_attest
from tests.conftest import ConfigWriter, DemoImages, missing
from tests.flows.test_check_freshness import run, write_config
from tests.integration.test_freshness import Attester, push
from tests.prometheus import PrometheusDaemon, running
from vulnattest.demo.registry import LocalRegistry

ROOT = Path(__file__).resolve().parents[2]


class LocalPushgateway(PrometheusDaemon):
    """Debian's Pushgateway on a loopback port, keeping what it is pushed in memory."""

    name = "pushgateway"
    program = "prometheus-pushgateway"

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """The samples of metric `name` the Pushgateway exposes, by their labels."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == name}


@pytest.fixture(scope="module")
def pushgateway() -> Iterator[LocalPushgateway]:
    yield from running(LocalPushgateway)


@pytest.mark.usefixtures("prefect_server")
def test_a_check_pushes_each_images_verdict_and_deadline(
    registry: LocalRegistry, attester: Attester, keypair: tuple[Path, Path], pushgateway: LocalPushgateway,
    tmp_path: Path,
):
    fresh_ref, fresh = push(registry, "metrics-fresh")
    missing_ref, _ = push(registry, "metrics-missing")
    attester.attach(fresh, timedelta(hours=2))
    config = write_config(tmp_path, registry, keypair, [fresh_ref, missing_ref], alerts=[],
                          metrics={"pushgateway": pushgateway.url})

    state, verdicts = run(config)

    assert state.is_completed(), state.message
    group = (("flow", "check-freshness"), ("instance", ""), ("job", "vulnattest"))
    assert pushgateway.samples("vulnattest_image_verdict") == {
        tuple(sorted((*group, ("image", fresh_ref), ("verdict", "fresh")))): 1.0,
        tuple(sorted((*group, ("image", missing_ref), ("verdict", "missing")))): 1.0,
    }
    deadline = verdicts[fresh_ref].deadline
    assert deadline is not None
    assert pushgateway.samples("vulnattest_attestation_deadline_timestamp_seconds") == {
        tuple(sorted((*group, ("image", fresh_ref)))): deadline.timestamp()}
    [completed] = pushgateway.samples("vulnattest_check_completed_timestamp_seconds").values()
    assert abs(completed - time.time()) < 300


@pytest.mark.usefixtures("prefect_server")
def test_a_scan_pushes_what_it_did_and_a_silent_pushgateway_fails_the_check_naming_it(
    config_writer: ConfigWriter, demo_images: DemoImages, registry: LocalRegistry, keypair: tuple[Path, Path],
    pushgateway: LocalPushgateway, silent_endpoint: str, tmp_path: Path,
):
    config = config_writer.write([demo_images.alpine, demo_images.debian], metrics={"pushgateway": pushgateway.url})

    assert scan_and_attest(config_path=str(config), return_state=True).is_completed()
    group = (("flow", "scan-and-attest"), ("instance", ""), ("job", "vulnattest"))
    assert pushgateway.samples("vulnattest_scan_images") == {
        tuple(sorted((*group, ("result", "attested")))): 2.0, tuple(sorted((*group, ("result", "failed")))): 0.0}

    silent = write_config(tmp_path, registry, keypair, [demo_images.alpine], alerts=[],
                          metrics={"pushgateway": silent_endpoint, "timeout": "1s"})
    state, _ = run(silent)
    assert state.is_failed()
    assert f"the Pushgateway at {silent_endpoint} did not take the check-freshness metrics" in str(state.message)


def test_the_shipped_alerting_rules_load_and_pass_their_tests():
    if shutil.which("promtool") is None:
        missing("install Debian's prometheus (promtool): `apt-get install prometheus`")
    checked = subprocess.run(["promtool", "check", "rules", "deployments/prometheus-rules.yaml"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
    tested = subprocess.run(["promtool", "test", "rules", "tests/prometheus-rules.test.yaml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)

    assert checked.returncode == 0 and "SUCCESS: 4 rules found" in checked.stdout, checked.stdout + checked.stderr
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
