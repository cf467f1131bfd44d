"""scan-and-attest as task runs named after its stages: a failed stage fails only its image, and its retry resumes
at that stage."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import flows.scan_and_attest as scan_flow
from flows import results_of
from tests.conftest import ConfigWriter, task_runs
from tests.flows.test_scan_and_attest import _fleet, _vuln_layers
from vulnattest.demo.registry import LocalRegistry
from vulnattest.errors import TransientStoreError
from vulnattest.outcomes import STAGES
from vulnattest.scanners.trivy import TrivyScanner
from vulnattest.storage.local import LocalReportStore

pytestmark = pytest.mark.usefixtures("prefect_server")


def _by_name(runs: list[Any]) -> dict[str, Any]:
    return {run.name: run for run in runs}


def test_each_image_runs_five_stage_tasks_and_a_store_outage_resumes_at_store(
    registry: LocalRegistry, config_writer: ConfigWriter, monkeypatch: pytest.MonkeyPatch
):
    refs = _fleet(registry, "stages", 4)[1:]  # three single-platform images
    scans: Counter[str] = Counter()
    puts: Counter[str] = Counter()
    scan, put = TrivyScanner.scan, LocalReportStore.put

    def counting_scan(self: TrivyScanner, image: Any) -> Any:
        scans[image.image.repository] += 1
        return scan(self, image)

    def failing_put(self: LocalReportStore, key: Any, body: bytes, sha256: str) -> Any:
        if not key.path.startswith("reports/"):  # the findings baseline, written after attest
            return put(self, key, body, sha256)
        puts[key.path.split("/")[3]] += 1
        if key.path.split("/")[3] == "app-2" and puts["app-2"] == 1:
            raise TransientStoreError("cannot write the report: the store answered 503; retry later")
        return put(self, key, body, sha256)

    monkeypatch.setattr(TrivyScanner, "scan", counting_scan)
    monkeypatch.setattr(LocalReportStore, "put", failing_put)
    # the real task and retry condition, without the production backoff between attempts
    monkeypatch.setattr(scan_flow, "store", scan_flow.store.with_options(retry_delay_seconds=0))

    state = scan_flow.scan_and_attest(config_path=str(config_writer.write(refs)), return_state=True)

    assert state.is_completed(), state.message
    assert all(o.ok for o in results_of(state))
    assert dict(scans) == {f"stages/app-{i}": 1 for i in (1, 2, 3)}  # nothing rescanned
    assert dict(puts) == {"app-1": 1, "app-2": 2, "app-3": 1}
    runs = _by_name(task_runs(state, expected=15))
    for ref in refs:
        prefix = ref.rpartition(":")[0]
        named = {stage: run for name, run in runs.items() for stage in STAGES if name.startswith(f"{stage} {prefix}")}
        assert set(named) == set(STAGES), sorted(runs)
        assert all(run.state.is_completed() for run in named.values())
        store_retried = prefix.endswith("app-2")
        assert named["store"].run_count == (2 if store_retried else 1)
        assert named["scan"].run_count == 1
    assert [_vuln_layers(registry, ref) for ref in refs] == [1, 1, 1]


def test_a_stage_that_fails_for_good_fails_only_its_task_run_and_its_image(
    registry: LocalRegistry, config_writer: ConfigWriter
):
    refs = _fleet(registry, "stagefail", 3)[1:]
    missing = f"{registry.host}/stagefail/none:1"

    state = scan_flow.scan_and_attest(config_path=str(config_writer.write([refs[0], missing, refs[1]])),
                                      return_state=True)

    assert state.is_failed()
    outcomes = {o.image: o for o in results_of(state)}
    assert [outcomes[ref].ok for ref in refs] == [True, True]
    assert outcomes[missing].failed_stage == "scan"
    assert "not found" in (outcomes[missing].error or "")
    runs = task_runs(state, expected=11)
    failed = [run for run in runs if run.state.is_failed()]
    assert [(run.name, run.run_count) for run in failed] == [(f"scan {missing}", 1)]  # no retry for a missing tag
    assert "not found" in (failed[0].state.message or "")
    assert not [run for run in runs if run.name.endswith(missing) and not run.name.startswith("scan ")]
