"""What a user sees in the Prefect UI, checked in a real browser (Debian's chromium driven by Playwright) against a
real Prefect server: a scan-and-attest run's task runs, named after the five stages for each image, with the failed
one marked failed, and its progress at 100%; a check-freshness run's fleet table and its timeline picture."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from deployments.server import LocalPrefectServer
from tests.conftest import ConfigWriter, missing, task_runs
from tests.flows.test_scan_and_attest import _fleet
from tests.integration.test_freshness import MAX_AGE, Attester, push
from vulnattest.demo.registry import LocalRegistry
from vulnattest.outcomes import STAGES
from vulnattest.signing.keyfile import KeyFileSigner

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
        missing(CHROMIUM_HINT)
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


def open_artifact(page: Any, ui_server: LocalPrefectServer, state: Any, key: str) -> Any:
    """Open the run's artifact `key` as a user does, from the run's Artifacts tab; return its page section."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=[key])))
    page.goto(f"{ui_server.url}/runs/flow-run/{run_id}", wait_until="networkidle")
    page.locator("li.p-tab#artifacts").click()
    page.locator(f"a[href$='/artifacts/artifact/{artifact.id}']").first.click()
    view = page.locator(".artifact-data-view")
    view.wait_for(timeout=30_000)
    return view


def table_rows(view: Any) -> list[dict[str, str]]:
    """A table artifact's rows as the page shows them, by column header."""
    view.locator("tbody tr").first.wait_for(timeout=30_000)
    headers = [h.strip() for h in view.locator("thead th").all_inner_texts()]
    return [dict(zip(headers, [c.strip() for c in row.locator("td").all_inner_texts()], strict=True))
            for row in view.locator("tbody tr").all()]


def test_a_run_shows_each_images_five_stage_task_runs_and_the_failed_one(
    browser: Any, ui_server: LocalPrefectServer, registry: LocalRegistry, config_writer: ConfigWriter,
):
    from flows.scan_and_attest import ARTIFACT_KEY, scan_and_attest

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

        progress = open_artifact(page, ui_server, state, f"{ARTIFACT_KEY}-progress")
        assert progress.inner_text().strip() == "Progress: 100%"
        page.get_by_text("3 of 3 image(s) done, 1 failed").wait_for(timeout=30_000)  # its description
    finally:
        page.close()


def test_a_check_shows_the_fleet_table_and_its_timeline_picture_one_row_per_image(
    browser: Any, ui_server: LocalPrefectServer, registry: LocalRegistry, config_writer: ConfigWriter,
):
    from flows.check_freshness import TABLE_ARTIFACT_KEY, TIMELINE_ARTIFACT_KEY, check_freshness

    attester = Attester(registry.client(), KeyFileSigner.from_file(config_writer.key))
    fleet = {}
    for name, age in (("fresh", timedelta(hours=1)), ("expiring", MAX_AGE - timedelta(hours=6)),
                      ("stale", MAX_AGE + timedelta(hours=2)), ("missing", None)):
        ref, image = push(registry, f"ui-{name}")
        if age is not None:
            attester.attach(image, age)
        fleet[ref] = name
    state = check_freshness(config_path=str(config_writer.write(list(fleet))), return_state=True)
    assert state.is_completed(), state.message
    worst_first = sorted(fleet, key=lambda ref: ["stale", "missing", "expiring", "fresh"].index(fleet[ref]))

    page = browser.new_page()
    try:
        table = table_rows(open_artifact(page, ui_server, state, TABLE_ARTIFACT_KEY))
        assert [(row["image"], row["verdict"]) for row in table] == [(ref, fleet[ref]) for ref in worst_first]

        view = open_artifact(page, ui_server, state, TIMELINE_ARTIFACT_KEY)
        picture = view.locator("img")
        picture.wait_for(timeout=30_000)
        # drawn: the browser decoded the SVG to its full width
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle(),
                               timeout=30_000)
        assert picture.evaluate("img => img.naturalWidth") == 1000
        src = str(picture.get_attribute("src"))
        assert src.startswith("data:image/svg+xml;base64,")
        svg = ET.fromstring(base64.b64decode(src.partition(",")[2]))  # noqa: S314 - the artifact under test
        rows = [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "row"]
        assert [(g.get("data-image"), g.get("data-verdict")) for g in rows] == [
            (row["image"], row["verdict"]) for row in table]
    finally:
        page.close()
