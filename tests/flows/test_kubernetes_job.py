"""The Job a Kubernetes worker submits for the Kubernetes deployments: the work pool's base job template and the
deployments' job variables, accepted by a real Prefect server and rendered by prefect-kubernetes as its worker does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.kubernetes_job import KUBERNETES, PREFECT_KUBERNETES_YAML, build_outputs, rendered_jobs
from vulnattest.config import parse_config

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_each_run_is_a_job_with_the_fleet_config_registry_credentials_trivy_cache_and_sigstore_token():
    spec = yaml.safe_load(PREFECT_KUBERNETES_YAML.read_text())
    [config_map] = yaml.safe_load_all((KUBERNETES / "fleet-configmap.yaml").read_text())
    fleet = parse_config(config_map["data"]["fleet.yaml"])
    jobs = rendered_jobs("vulnattest-k8s-render")
    assert len(jobs) == len(spec["deployments"]) == 2
    for job, entry in zip(jobs, spec["deployments"], strict=True):
        assert job["metadata"]["namespace"] == "vulnattest"
        assert job["spec"]["ttlSecondsAfterFinished"] == 3600
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["image"] == next(iter(build_outputs(spec).values()))["image"]
        assert container["args"] == ["prefect", "flow-run", "execute"]
        assert pod["serviceAccountName"] == "vulnattest"
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["PREFECT__FLOW_RUN_ID"]  # the worker's own variables came through with the template's
        mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert set(mounts) == set(volumes)

        # the fleet config: the ConfigMap's key at the path the deployment passes
        assert volumes["fleet-config"]["configMap"]["name"] == config_map["metadata"]["name"]
        assert Path(entry["parameters"]["config_path"]) == Path(mounts["fleet-config"]["mountPath"]) / "fleet.yaml"
        # registry credentials: the dockerconfigjson Secret's one key as config.json where DOCKER_CONFIG points
        assert volumes["registry-credentials"]["secret"] == {
            "secretName": "vulnattest-registry", "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
        assert env["DOCKER_CONFIG"] == mounts["registry-credentials"]["mountPath"]
        # Trivy's cache on a volume of the run's own (no claim one Job could hold while another waits for it)
        assert volumes["trivy-cache"] == {"name": "trivy-cache", "emptyDir": {"sizeLimit": "4Gi"}}
        assert env["TRIVY_CACHE_DIR"] == mounts["trivy-cache"]["mountPath"]
        # keyless signing's identity: a projected token for audience sigstore, the file the fleet config names
        [source] = volumes["sigstore-token"]["projected"]["sources"]
        token = source["serviceAccountToken"]
        assert token["audience"] == "sigstore"
        assert fleet.signing.keyless.identity_token_file == Path(mounts["sigstore-token"]["mountPath"]) / token["path"]
        # resources, with no empty quantity left by the variables with no default
        assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
