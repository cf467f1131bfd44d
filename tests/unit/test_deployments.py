"""The deployment definitions: prefect.yaml and the served deployments agree with the flows they run."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import yaml

from deployments.serve import CHECK_CRON, SCAN_CRON, fleet_deployments

PREFECT_YAML = Path(__file__).parents[2] / "deployments" / "prefect.yaml"


def test_prefect_yaml_deployments_point_at_real_flows_with_real_parameters():
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    found = {}
    for deployment in spec["deployments"]:
        module, _, name = deployment["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
        assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
        assert deployment["work_pool"]["name"] == "vulnattest"
        [schedule] = deployment["schedules"]
        assert schedule["timezone"] == "UTC"
        found[flow.name] = schedule["cron"]
    assert found == {"scan-and-attest": SCAN_CRON, "check-freshness": CHECK_CRON}
    assert spec["definitions"]["work_pools"]["kubernetes"]["job_variables"]["image"]


def test_served_deployments_carry_schedules_limits_and_a_parameter_form():
    scan, check = fleet_deployments("/etc/fleet.yaml")
    assert (scan.flow_name, check.flow_name) == ("scan-and-attest", "check-freshness")
    for deployment, cron in ((scan, SCAN_CRON), (check, CHECK_CRON)):
        assert deployment.name == "fleet"
        [schedule] = deployment.schedules
        assert schedule.schedule.cron == cron  # type: ignore[union-attr]
        assert deployment.concurrency_limit == 1
        assert deployment.concurrency_options is not None
        assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
        assert deployment.parameters == {"config_path": "/etc/fleet.yaml"}


def test_flow_parameters_are_typed_so_the_ui_renders_a_form():
    from prefect.utilities.callables import parameter_schema

    from flows.check_freshness import check_freshness
    from flows.scan_and_attest import scan_and_attest

    for flow in (scan_and_attest, check_freshness):
        properties = parameter_schema(flow.fn).properties
        assert properties["images"]["anyOf"][0] == {"items": {"type": "string"}, "type": "array"}
        assert properties["config_path"]["anyOf"][0] == {"type": "string"}


def test_every_flow_parameter_has_help_in_the_run_form():
    from prefect.utilities.callables import parameter_schema

    from flows.check_freshness import check_freshness
    from flows.fleet_batches import scan_fleet_in_batches
    from flows.scan_and_attest import scan_and_attest

    for flow in (scan_and_attest, check_freshness, scan_fleet_in_batches):
        properties = parameter_schema(flow).model_dump()["properties"]
        assert properties
        assert {name for name, field in properties.items() if not field.get("description")} == set(), flow.name
