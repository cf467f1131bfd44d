"""The deployment definitions: prefect.yaml and the served deployments agree with the flows they run."""

from __future__ import annotations

import importlib
import inspect
import tomllib
from pathlib import Path

import pytest
import yaml

from deployments.serve import CHECK_CRON, SCAN_CRON, fleet_deployments

ROOT = Path(__file__).parents[2]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
PREFECT_KUBERNETES_YAML = ROOT / "deployments" / "prefect-kubernetes.yaml"


@pytest.mark.parametrize(("prefect_file", "pool"), [(PREFECT_YAML, "vulnattest"),
                                                    (PREFECT_KUBERNETES_YAML, "vulnattest-k8s")])
def test_prefect_yaml_deployments_point_at_real_flows_with_real_parameters(prefect_file: Path, pool: str):
    spec = yaml.safe_load(prefect_file.read_text())
    found = {}
    for deployment in spec["deployments"]:
        module, _, name = deployment["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
        assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
        assert deployment["work_pool"]["name"] == pool
        assert (ROOT / module).is_file()  # relative to the directory the pull step sets
        [schedule] = deployment["schedules"]
        assert schedule["timezone"] == "UTC"
        found[flow.name] = schedule["cron"]
    assert found == {"scan-and-attest": SCAN_CRON, "check-freshness": CHECK_CRON}


def test_the_process_deployments_need_no_docker_and_the_kubernetes_ones_build_their_image():
    process = yaml.safe_load(PREFECT_YAML.read_text())
    assert not process.get("build") and not process.get("push")
    kubernetes = yaml.safe_load(PREFECT_KUBERNETES_YAML.read_text())
    [build], [push] = kubernetes["build"], kubernetes["push"]
    build_step = build["prefect_docker.deployments.steps.build_docker_image"]
    push_step = push["prefect_docker.deployments.steps.push_docker_image"]
    assert push_step["image_name"] == f"{{{{ {build_step['id']}.image_name }}}}"
    assert push_step["tag"] == f"{{{{ {build_step['id']}.tag }}}}"
    pool = kubernetes["definitions"]["work_pools"]["kubernetes"]
    assert pool["job_variables"]["image"] == f"{{{{ {build_step['id']}.image }}}}"
    # the Job runs the image's own copy of vulnattest, at the version the image is tagged with
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert build_step["tag"] == project["version"]
    [docker] = [dep for dep in project["optional-dependencies"]["kubernetes"] if dep.startswith("prefect-docker")]
    assert build_step["requires"] == push_step["requires"] == docker


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
