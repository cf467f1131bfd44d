"""check-freshness task runs that carry batches of images (a retry rechecks only what failed), and the batch parent."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client

import flows.check_freshness as check_flow
from flows import results_of
from tests.conftest import task_runs as _task_runs
from tests.integration.test_freshness import Attester, push
from vulnattest.demo.registry import LocalRegistry
from vulnattest.errors import TransientRegistryError
from vulnattest.freshness import FreshnessChecker, Verdict
from vulnattest.signing.keyfile import KeyFileSigner

pytestmark = pytest.mark.usefixtures("prefect_server")


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
    from prefect.settings import PREFECT_API_DEFAULT_LIMIT, temporary_settings

    from flows.fleet_batches import read_flow_runs

    @flow
    def batch() -> None: ...

    with get_client(sync_client=True) as client, temporary_settings({PREFECT_API_DEFAULT_LIMIT: 5}):
        ids = [client.create_flow_run(batch).id for _ in range(12)]
        assert {run.id for run in read_flow_runs(client, ids)} == set(ids)
