"""The Kubernetes deployment's objects on a real kube-apiserver: the example manifests are created, the Secret and
ConfigMaps README.md has you create pass server-side validation, and the Job prefect-kubernetes renders from the base
job template (tests/kubernetes_job.py) passes the API server's validation and admission (Kyverno's webhooks
included). No kubelet runs: nothing is pulled or started."""

from __future__ import annotations

import json

import pytest

from tests.kubernetes_job import BASE_JOB_TEMPLATE, KUBERNETES, rendered_jobs
from vulnattest.demo.cluster import LocalCluster

pytestmark = pytest.mark.usefixtures("prefect_server")

NAMESPACE = "vulnattest"
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:vulnattest"


def test_the_manifests_apply_and_the_rendered_jobs_pass_server_side_validation(no_policies: LocalCluster):
    cluster = no_policies
    cluster.kubectl("apply", "--validate=strict", "-f", str(KUBERNETES / "vulnattest.yaml"))
    cluster.kubectl("apply", "--validate=strict", "--dry-run=server", "-f", str(KUBERNETES / "fleet-configmap.yaml"))
    cluster.kubectl("create", "secret", "docker-registry", "vulnattest-registry", "--namespace", NAMESPACE,
                    "--docker-server=registry.example.com", "--docker-username=robot", "--docker-password=s3cret",
                    "--dry-run=server")
    cluster.kubectl("create", "configmap", "vulnattest-base-job-template", "--namespace", NAMESPACE,
                    f"--from-file=baseJobTemplate.json={BASE_JOB_TEMPLATE}", "--dry-run=server")

    # the Jobs' service account reads Pods everywhere (a `kubernetes` source) and nothing else
    def can(*args: str) -> bool:
        done = cluster.kubectl("auth", "can-i", *args, f"--as={ACCOUNT}", check=False)
        return done.stdout.strip() == "yes"

    assert can("list", "pods", "--all-namespaces")
    assert not can("get", "secrets", "--namespace", NAMESPACE)
    assert not can("create", "pods", "--namespace", NAMESPACE)

    jobs = rendered_jobs("vulnattest-k8s-admission")
    for job in jobs:
        done = cluster.kubectl("create", "--validate=strict", "--dry-run=server", "-o", "json", "-f", "-",
                               input=json.dumps(job))
        admitted = json.loads(done.stdout)
        pod = admitted["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        [source] = volumes["sigstore-token"]["projected"]["sources"]
        assert source["serviceAccountToken"]["audience"] == "sigstore"
        assert volumes["registry-credentials"]["secret"]["items"] == [
            {"key": ".dockerconfigjson", "path": "config.json"}]
        assert admitted["metadata"]["namespace"] == NAMESPACE
        assert admitted["metadata"]["name"].startswith(job["metadata"]["generateName"])
