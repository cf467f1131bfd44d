"""One-off options of check-freshness, as an operator sets them in the Prefect UI's run form."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prefect.utilities.callables import parameter_schema

from flows.check_freshness import WHAT_IF_ARTIFACT_KEY, CheckOptions, check_freshness
from tests.flows.test_check_freshness import artifact_of, run, write_config
from tests.integration.test_freshness import Attester, WebhookReceiver, push
from vulnattest.alerts import STATE_KEY
from vulnattest.demo.registry import LocalRegistry
from vulnattest.freshness import Verdict
from vulnattest.storage.local import LocalReportStore

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_the_options_are_a_typed_form():
    schema = parameter_schema(check_freshness.fn)
    options = schema.definitions["CheckOptions"]["properties"]
    assert options["max_age"]["title"] == "Max age"
    assert options["max_age"]["anyOf"][0]["pattern"]
    assert options["send_alerts"] == {"default": True, "description": options["send_alerts"]["description"],
                                      "title": "Send alerts", "type": "boolean"}


def test_a_what_if_max_age_tells_no_one_and_changes_nothing(
    registry: LocalRegistry, keypair: tuple[Path, Path], attester: Attester, tmp_path: Path
):
    ref, image = push(registry, "options-what-if")
    attester.attach(image, timedelta(hours=3))
    with WebhookReceiver() as receiver:
        config = write_config(tmp_path, registry, keypair, [ref], [{"webhook": receiver.url}])
        state, verdicts = run(config, options=CheckOptions(max_age="2h"))  # send_alerts left on: the what-if wins
        assert verdicts[ref].verdict is Verdict.STALE
        assert ref in artifact_of(state, WHAT_IF_ARTIFACT_KEY)  # the fleet's own artifact is not overwritten
        assert receiver.received == []
        assert LocalReportStore(tmp_path / "reports").get(STATE_KEY) is None  # the alert state was not touched

        _, verdicts = run(config)  # the configured 168h: fresh, and now the state exists
        assert verdicts[ref].verdict is Verdict.FRESH
        assert LocalReportStore(tmp_path / "reports").get(STATE_KEY) is not None
