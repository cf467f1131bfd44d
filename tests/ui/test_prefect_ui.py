"""What a user sees in the Prefect UI, checked in a real browser (Debian's chromium driven by Playwright) against a
real Prefect server: a scan-and-attest run's task runs, named after the five stages for each image, with the failed
one marked failed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.server import LocalPrefectServer
from tests.conftest import ConfigWriter, task_runs
from tests.flows.test_scan_and_attest import _fleet
from vulnattest.demo.registry import LocalRegistry
from vulnattest.outcomes import STAGES

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_HINT = "install Debian's chromium (`sudo apt-get install chromium`) and `pip install -e '.[test]'`"
# what a sandboxed headless run needs, and no call home (the machine's network is closed)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium (a skip naming the install where it is missing; a failure in CI)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(CHROMIUM_HINT, pytrace=False)
        pytest.skip(CHROMIUM_HINT)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefectServer]:
    """A Prefect server with its UI, this process's client pointed at it. Prefect's event and log workers are made
    once per process for the API they first saw: they are drained (so made again) on the way in and out, or this
    server's task runs would be reported to the session's other server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.local import drain_prefect_workers

    drain_prefect_workers()
    with LocalPrefectServer(home=tmp_path_factory.mktemp("prefect-home")) as server, \
            temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server
        drain_prefect_workers()


def test_a_run_shows_each_images_five_stage_task_runs_and_the_failed_one(
    browser: Any, ui_server: LocalPrefectServer, registry: LocalRegistry, config_writer: ConfigWriter,
):
    from flows.scan_and_attest import scan_and_attest

    refs = _fleet(registry, "ui", 3)[1:]
    missing = f"{registry.host}/ui/none:1"
    state = scan_and_attest(config_path=str(config_writer.write([*refs, missing])), return_state=True)
    assert state.is_failed()
    recorded = task_runs(state, expected=2 * len(STAGES) + 1)
    assert len(recorded) == 2 * len(STAGES) + 1

    page = browser.new_page()
    try:
        page.goto(f"{ui_server.url}/runs/flow-run/{state.state_details.flow_run_id}", wait_until="networkidle")
        page.locator("li.p-tab#task-runs").click()
        for ref in refs:
            name = ref.rpartition(":")[0]
            for stage in STAGES:
                page.get_by_text(f"{stage} {name}", exact=False).first.wait_for(timeout=30_000)
        # each task run is a card whose class carries its state
        failed = page.locator(".state-list-item--failed")
        failed.first.wait_for(timeout=30_000)
        assert [text.strip() for text in failed.locator("a.p-link").all_inner_texts()] == [f"scan {missing}"]
        assert page.locator(".state-list-item--completed").count() == 2 * len(STAGES)
    finally:
        page.close()
