"""The Job a Kubernetes worker would submit for a run of the Kubernetes deployments, rendered by prefect-kubernetes
against the Prefect API in use (the test harness): the work pool and deployment are created there, so the server
validates the base job template and the job variables, and the configuration is built as the worker builds it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[1]
DEPLOYMENTS = ROOT / "deployments"
KUBERNETES = DEPLOYMENTS / "kubernetes"
BASE_JOB_TEMPLATE = KUBERNETES / "base-job-template.json"
PREFECT_KUBERNETES_YAML = DEPLOYMENTS / "prefect-kubernetes.yaml"
IMAGE = "registry.example.com/platform/vulnattest"


def build_outputs(spec: dict[str, Any]) -> dict[str, Any]:
    """What `prefect deploy` holds after the build step (no Docker here): prefect-docker's result for that step."""
    [build] = spec["build"]
    step = build["prefect_docker.deployments.steps.build_docker_image"]
    image = f"{IMAGE}:{step['tag']}"
    return {step["id"]: {"image_name": IMAGE, "tag": step["tag"], "image": image, "image_id": "sha256:" + "0" * 64,
                         "additional_tags": []}}


def rendered_jobs(pool_name: str) -> list[dict[str, Any]]:
    """The Job manifest of a run of each deployment in prefect-kubernetes.yaml, on a new work pool `pool_name`."""
    return asyncio.run(_render(pool_name))


async def _render(pool_name: str) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.utilities.templating import apply_values
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    spec = yaml.safe_load(PREFECT_KUBERNETES_YAML.read_text())
    outputs = build_outputs(spec)
    jobs = []
    async with get_client() as client:
        pool = await client.create_work_pool(WorkPoolCreate(
            name=pool_name, type="kubernetes", base_job_template=json.loads(BASE_JOB_TEMPLATE.read_text())))
        for entry in spec["deployments"]:
            work_pool = apply_values(entry["work_pool"], outputs)
            flow_name = entry["entrypoint"].rpartition(":")[2].replace("_", "-")
            flow_id = await client.create_flow_from_name(flow_name)
            # a name of its own: the session's Prefect server may hold other tests' deployments of these flows
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name=f"{entry['name']}-{pool_name}", work_pool_name=pool.name,
                work_queue_name=work_pool["work_queue_name"], job_variables=work_pool["job_variables"],
                parameters=entry["parameters"], entrypoint=entry["entrypoint"])
            deployment = await client.read_deployment(deployment_id)
            flow_run = await client.create_flow_run_from_deployment(deployment_id)
            configuration = await KubernetesWorkerJobConfiguration.from_template_and_values(
                base_job_template=pool.base_job_template,
                values={**deployment.job_variables, **(flow_run.job_variables or {})}, client=client)
            configuration.prepare_for_flow_run(flow_run=flow_run, deployment=deployment,
                                               flow=await client.read_flow(flow_id), work_pool=pool)
            jobs.append(configuration.job_manifest)
    return jobs
