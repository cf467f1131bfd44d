"""Task runs that carry batches of images: a retry resumes only what failed, and only where it failed."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun

import flows.check_freshness as check_flow
import flows.scan_and_attest as scan_flow
from flows import results_of
from tests.conftest import ConfigWriter
from tests.flows.test_scan_and_attest import _fleet, _vuln_layers
from tests.integration.test_freshness import Attester, push
from vulnattest.attestations.cosign import CosignAttacher
from vulnattest.demo.registry import LocalRegistry
from vulnattest.errors import TransientRegistryError
from vulnattest.freshness import FreshnessChecker, Verdict
from vulnattest.scanners.trivy import TrivyScanner
from vulnattest.signing.keyfile import KeyFileSigner

pytestmark = pytest.mark.usefixtures("prefect_server")


def _task_runs(state: Any, expected: int, timeout: float = 30.0) -> list[TaskRun]:
    """The flow run's task runs, once the server has recorded `expected` of them (it records them from events)."""
    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=flow_filter)
        done = [r for r in runs if r.state is not None and r.state.is_final()]
        if len(done) >= expected or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


def test_a_transient_attach_failure_retries_only_that_image_from_its_attest_stage(
    registry: LocalRegistry, config_writer: ConfigWriter, monkeypatch: pytest.MonkeyPatch
):
    refs = _fleet(registry, "resume", 4)[1:]  # three single-platform images
    scans: Counter[str] = Counter()
    attaches: Counter[str] = Counter()
    scan, attach = TrivyScanner.scan, CosignAttacher.attach

    def counting_scan(self: TrivyScanner, image: Any) -> Any:
        scans[image.image.repository] += 1
        return scan(self, image)

    def flaky_attach(self: CosignAttacher, client: Any, image: Any, *args: Any, **kwargs: Any) -> Any:
        attaches[image.image.repository] += 1
        if image.image.repository.endswith("app-2") and attaches[image.image.repository] == 1:
            raise TransientRegistryError("registry answered 503; retry later")
        return attach(self, client, image, *args, **kwargs)

    monkeypatch.setattr(TrivyScanner, "scan", counting_scan)
    monkeypatch.setattr(CosignAttacher, "attach", flaky_attach)
    # the real task and retry condition, without the production backoff between attempts
    monkeypatch.setattr(scan_flow, "attest_images", scan_flow.attest_images.with_options(retry_delay_seconds=0))

    # one thread, so one task run pulls all three
    state = scan_flow.scan_and_attest(config_path=str(config_writer.write(refs, concurrency=1)), images_per_task=3,
                                      return_state=True)

    assert state.is_completed(), state.message
    outcomes = {o.image: o for o in results_of(state)}
    assert all(o.ok for o in outcomes.values())
    assert set(scans.values()) == {1}  # nothing rescanned
    assert sorted(attaches.values()) == [1, 1, 2]  # only the image that failed, only its attest stage
    assert [_vuln_layers(registry, ref) for ref in refs] == [1, 1, 1]
    [task_run] = _task_runs(state, expected=1)
    assert (task_run.name, task_run.run_count) == (f"attest {refs[0]} and up to 2 more", 2)


def test_a_failure_for_good_does_not_stop_its_batch_and_is_not_retried(
    registry: LocalRegistry, config_writer: ConfigWriter
):
    refs = _fleet(registry, "batchfail", 3)[1:]
    missing = f"{registry.host}/batchfail/none:1"

    state = scan_flow.scan_and_attest(config_path=str(config_writer.write([refs[0], missing, refs[1]], concurrency=1)),
                                      images_per_task=3, return_state=True)

    assert state.is_failed()
    outcomes = {o.image: o for o in results_of(state)}
    assert [outcomes[ref].ok for ref in refs] == [True, True]
    assert (outcomes[missing].failed_stage, outcomes[missing].seconds.keys()) == ("resolve", {"resolve"})
    [task_run] = _task_runs(state, expected=1)
    assert task_run.state is not None and task_run.state.is_failed()
    assert task_run.run_count == 1  # a missing tag is not worth retrying


def test_task_runs_per_image_follow_images_per_task(registry: LocalRegistry, config_writer: ConfigWriter):
    refs = _fleet(registry, "pertask", 4)
    config = str(config_writer.write(refs))

    one_each = scan_flow.scan_and_attest(config_path=config, images_per_task=1, return_state=True)
    two_each = scan_flow.scan_and_attest(config_path=str(config_writer.write(refs, "one.yaml", concurrency=1)),
                                         images_per_task=2, return_state=True)

    assert one_each.is_completed() and two_each.is_completed()
    assert sorted(r.name for r in _task_runs(one_each, expected=4)) == sorted(f"attest {ref}" for ref in refs)
    assert sorted(r.name for r in _task_runs(two_each, expected=2)) == [f"attest {refs[0]} and up to 1 more",
                                                                      f"attest {refs[2]} and up to 1 more"]
    assert [_vuln_layers(registry, ref) for ref in refs] == [1] * 4  # the second run replaced the first's


def test_a_transient_registry_failure_rechecks_only_that_image(
    registry: LocalRegistry, keypair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    attester = Attester(registry.client(), KeyFileSigner.from_file(keypair[0]))
    refs = []
    for name in ("recheck-1", "recheck-2", "recheck-3"):
        ref, image = push(registry, name)
        attester.attach(image, timedelta(hours=1))
        refs.append(ref)
    checks: Counter[str] = Counter()
    check = FreshnessChecker.check

    def flaky_check(self: FreshnessChecker, client: Any, image: Any, now: Any = None) -> Any:
        checks[str(image)] += 1
        if str(image) == refs[1] and checks[str(image)] == 1:
            raise TransientRegistryError("registry answered 503; retry later")
        return check(self, client, image, now)

    monkeypatch.setattr(FreshnessChecker, "check", flaky_check)
    monkeypatch.setattr(check_flow, "check_images", check_flow.check_images.with_options(retry_delay_seconds=0))
    config = tmp_path / "fleet.yaml"
    config.write_text(
        f"images: {refs}\nregistries: {{'{registry.host}': {{insecure: true}}}}\n"
        f"store: {{url: '{(tmp_path / 'store').as_uri()}'}}\nsigning: {{key: '{keypair[0]}'}}\n"
    )

    state = check_flow.check_freshness(config_path=str(config), return_state=True)

    assert state.is_completed(), state.message
    assert {v.image: v.verdict for v in results_of(state)} == dict.fromkeys(refs, Verdict.FRESH)
    assert [checks[ref] for ref in refs] == [1, 2, 1]
    # probe, load and save the alert state, and one batch of checks, retried once
    batches = [r for r in _task_runs(state, expected=4) if r.name.startswith("check ")]
    assert [(r.name, r.run_count) for r in batches] == [(f"check {refs[0]} and up to 2 more", 2)]


def test_the_batch_parent_reads_back_every_run_in_flight_past_one_page_of_the_api():
    # the API returns at most PREFECT_API_DEFAULT_LIMIT runs at once (200); a page of 5 shows the paging with 12
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_DEFAULT_LIMIT, temporary_settings

    from flows.fleet_batches import read_flow_runs

    @flow
    def batch() -> None: ...

    with get_client(sync_client=True) as client, temporary_settings({PREFECT_API_DEFAULT_LIMIT: 5}):
        ids = [client.create_flow_run(batch).id for _ in range(12)]
        assert {run.id for run in read_flow_runs(client, ids)} == set(ids)
