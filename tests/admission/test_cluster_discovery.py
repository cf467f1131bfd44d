"""Fleets found running in a cluster: Pods on the real kube-apiserver (no kubelet runs, so each Pod's status is
written through the status subresource as a kubelet would, with the digest it pulled), read back by a cluster
source with the kubernetes client and the cluster's kubeconfig."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from vulnattest.config import FleetConfig
from vulnattest.demo.cluster import LocalCluster
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.discovery import with_discovered


def pod(namespace: str, name: str, images: dict[str, str], labels: dict[str, str],
        init: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": n, "image": i} for n, i in images.items()],
                     "initContainers": [{"name": n, "image": i} for n, i in (init or {}).items()]}}


def pulled(cluster: LocalCluster, namespace: str, name: str, statuses: dict[str, tuple[str, str]],
           kind: str = "containerStatuses") -> None:
    """Write what a kubelet reports once it pulled each container's image: its image and image ID."""
    patch = {"status": {kind: [
        {"name": n, "image": image, "imageID": image_id, "ready": False, "restartCount": 0,
         "state": {"waiting": {"reason": "ContainerCreating"}}} for n, (image, image_id) in statuses.items()]}}
    cluster.kubectl("patch", "pod", name, "--namespace", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(patch))


@pytest.fixture(scope="module")
def running(cluster: LocalCluster, registry: LocalRegistry) -> dict[str, str]:
    """Pods in namespaces shop and tools naming images of the test registry by tag; the digests they pulled."""
    cluster.delete_policies()  # another test's policy could refuse these Pods
    client = registry.client()
    digests = {name: push_image(client, f"k8s/{name}", "1", alpine_image(DEMO_ALPINE_PACKAGES, marker=name))
               for name in ("web", "sidecar", "migrate", "debugger", "other")}
    host = registry.host
    cluster.kubectl("create", "namespace", "shop")
    cluster.kubectl("create", "namespace", "tools")
    manifests = [
        pod("shop", "web-1", {"web": f"{host}/k8s/web:1", "sidecar": f"{host}/k8s/sidecar:1"}, {"tier": "prod"},
            init={"migrate": f"{host}/k8s/migrate:1"}),
        pod("shop", "web-2", {"web": f"{host}/k8s/web:1"}, {"tier": "prod"}),  # the same image: found once
        pod("shop", "scratch", {"debugger": f"{host}/k8s/debugger:1"}, {"tier": "dev"}),
        pod("tools", "other", {"other": f"{host}/k8s/other:1"}, {"tier": "prod"}),
    ]
    cluster.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    pulled(cluster, "shop", "web-1", {"web": (f"{host}/k8s/web:1", f"{host}/k8s/web@{digests['web']}"),
                                      "sidecar": (f"{host}/k8s/sidecar:1",
                                                  f"docker-pullable://{host}/k8s/sidecar@{digests['sidecar']}")})
    pulled(cluster, "shop", "web-1", {"migrate": (f"{host}/k8s/migrate:1", f"{host}/k8s/migrate@{digests['migrate']}")},
           kind="initContainerStatuses")
    pulled(cluster, "shop", "web-2", {"web": (f"{host}/k8s/web:1", f"{host}/k8s/web@{digests['web']}")})
    # scratch has no status yet (not scheduled): found by the reference it names
    return digests


def fleet(cluster: LocalCluster, **selector: Any) -> FleetConfig:
    return FleetConfig.model_validate({"sources": [{"kubernetes": {"kubeconfig": str(cluster.kubeconfig),
                                                                   **selector}}]})


def test_pods_of_chosen_namespaces_and_labels_by_the_digest_their_node_pulled(
    cluster: LocalCluster, registry: LocalRegistry, running: dict[str, str]
):
    host = registry.host

    prod = with_discovered(fleet(cluster, namespaces=["shop"], label_selector="tier=prod"))
    shop = with_discovered(fleet(cluster, namespaces=["shop"]))
    everywhere = with_discovered(fleet(cluster, label_selector="tier=prod"))

    assert list(prod.images) == [f"{host}/k8s/web@{running['web']}", f"{host}/k8s/sidecar@{running['sidecar']}",
                                 f"{host}/k8s/migrate@{running['migrate']}"]
    assert set(shop.images) == {*prod.images, f"{host}/k8s/debugger:1"}  # no status: the reference it names
    assert set(everywhere.images) == {*prod.images, f"{host}/k8s/other:1"}


def test_a_cluster_that_refuses_is_named_and_the_rest_goes_on(
    cluster: LocalCluster, registry: LocalRegistry, running: dict[str, str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": "not-a-valid-token"}
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    listed = f"{registry.host}/k8s/other:1"

    found = with_discovered(FleetConfig.model_validate({
        "images": [listed], "sources": [{"kubernetes": {"kubeconfig": str(tmp_path / "kubeconfig")}}]}))

    assert list(found.images) == [listed]
    assert "sources[0] (cluster (every namespace)) found no images this run" in caplog.text
    assert "refused to list Pods (401" in caplog.text
