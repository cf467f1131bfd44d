"""What changed since yesterday, with the real Trivy and a DB the test updates between runs: a DB update that adds a
CRITICAL advisory (and a fix for a known one) makes the next scan tell on-call once, for exactly the images it hits,
and the scan after stays quiet."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

from flows.scan_and_attest import ARTIFACT_KEY, CHANGE_EVENT, scan_and_attest
from tests.conftest import ConfigWriter, poll_events
from tests.flows.test_check_freshness import artifact_of
from tests.integration.test_freshness import WebhookReceiver
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, DEMO_DEBIAN_PACKAGES, alpine_image, debian_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.demo.trivydb import DEMO_ADVISORIES, Advisory, write_trivy_db
from vulnattest.outcomes import ImageOutcome

pytestmark = pytest.mark.usefixtures("prefect_server")

NEW = Advisory("alpine 3.19", "musl", "CVE-2099-9001", "CRITICAL", None, "a new flaw in musl")


def overnight() -> list[Advisory]:
    """The DB a day later: a new CRITICAL advisory for Alpine's musl, a fix for zlib's CVE-2099-0003, and Debian's
    CVE-2099-0102 withdrawn."""
    updated = [dataclasses.replace(a, fixed_version="1.3.1-r2") if a.vuln_id == "CVE-2099-0003" else a
               for a in DEMO_ADVISORIES if a.vuln_id != "CVE-2099-0102"]
    return [*updated, NEW]


@pytest.fixture
def inbox() -> Any:
    with WebhookReceiver() as running:
        yield running


def run(config: Path) -> tuple[Any, dict[str, ImageOutcome]]:
    state = scan_and_attest(config_path=str(config), return_state=True)
    assert state.is_completed(), state.message
    return state, {o.image: o for o in state.result()}


def test_a_new_critical_advisory_is_news_once_for_exactly_the_images_it_hits(
    registry: LocalRegistry, config_writer: ConfigWriter, inbox: WebhookReceiver, tmp_path: Path
):
    client = registry.client()
    host = registry.host
    for name, image in {"changes/web": alpine_image(DEMO_ALPINE_PACKAGES, marker="changes-web"),
                        "changes/api": alpine_image(DEMO_ALPINE_PACKAGES, marker="changes-api"),
                        "changes/db": debian_image(DEMO_DEBIAN_PACKAGES, marker="changes-db")}.items():
        push_image(client, name, "1", image)
    web, api, db = (f"{host}/changes/{name}:1" for name in ("web", "api", "db"))
    cache = tmp_path / "trivy"
    write_trivy_db(cache, DEMO_ADVISORIES)
    config = config_writer.write([web, api, db], scanner={"trivy": {"cache_dir": str(cache), "offline": True}},
                                 alerts=[{"webhook": inbox.url, "name": "on-call"}], changes={"severity": "MEDIUM"})

    _, first = run(config)  # no previous scan: a baseline, no news
    assert inbox.take() == []
    assert all(o.change is None for o in first.values())

    write_trivy_db(cache, overnight())
    state, second = run(config)
    [notice] = inbox.take()

    assert notice["kind"] == "changes"
    assert sorted(i["image"] for i in notice["images"]) == sorted([web, api])  # Debian's change is no news
    for image in notice["images"]:
        assert [(f["id"], f["severity"], f["package"]) for f in image["new"]] == [("CVE-2099-9001", "CRITICAL",
                                                                                  "musl")]
        assert [(f["id"], f["fixed"]) for f in image["fixable"]] == [("CVE-2099-0003", "1.3.1-r2")]
        assert image["rebuilt"] is False
    assert "2 image(s) changed since their last scan: 2 new vulnerabilities, 2 newly fixable" in notice["subject"]
    assert [f.vulnerability_id for f in second[db].change.gone] == ["CVE-2099-0102"]  # type: ignore[union-attr]
    assert not second[db].change.news  # type: ignore[union-attr]
    summary = artifact_of(state, ARTIFACT_KEY)
    assert "## Changed since the last scan" in summary and "CVE-2099-0102" in summary
    events = poll_events(EventFilter(event=EventNameFilter(name=[f"vulnattest.image.{CHANGE_EVENT}"]),
                                     related=EventRelatedFilter(id=[f"prefect.flow-run."
                                                                    f"{state.state_details.flow_run_id}"])), 2, 30)
    assert sorted(e.resource.id for e in events) == sorted(f"vulnattest.image.{i}" for i in (web, api))

    _, third = run(config)  # nothing changed since: quiet
    assert inbox.take() == []
    assert not any(o.change and o.change.news for o in third.values())


def test_news_a_channel_failed_to_receive_comes_with_the_next_run(
    registry: LocalRegistry, config_writer: ConfigWriter, inbox: WebhookReceiver, tmp_path: Path
):
    image = f"{registry.host}/changes/owed:1"
    push_image(registry.client(), "changes/owed", "1", alpine_image(DEMO_ALPINE_PACKAGES, marker="changes-owed"))
    cache = tmp_path / "trivy"
    write_trivy_db(cache, DEMO_ADVISORIES)
    config = config_writer.write([image], scanner={"trivy": {"cache_dir": str(cache), "offline": True}},
                                 alerts=[{"webhook": inbox.url, "name": "on-call"}], changes={"severity": "MEDIUM"})
    run(config)  # the baseline
    write_trivy_db(cache, overnight())

    inbox.answers = [400]  # refused: no retry within the run
    _, second = run(config)
    assert second[image].ok and second[image].change is not None and second[image].change.news
    assert inbox.take() == []

    run(config)  # nothing new in this scan: the news owed is sent
    [notice] = inbox.take()
    assert [i["image"] for i in notice["images"]] == [image]
    assert [f["id"] for f in notice["images"][0]["new"]] == ["CVE-2099-9001"]

    run(config)  # delivered: owed no more
    assert inbox.take() == []
