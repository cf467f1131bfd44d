"""The local cluster harness gives Kyverno's real admission decisions: a policy requiring signed images from the test
registry denies an unsigned one there, and leaves images it does not cover alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from vulnattest.demo.cluster import LocalCluster
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.signing.keyfile import generate_keypair

pytestmark = pytest.mark.usefixtures("no_policies")


def signed_images_policy(registry: LocalRegistry, public_key: str) -> dict[str, object]:
    """A ClusterPolicy that admits a Pod's images from `registry` only when signed with `public_key`, pinned."""
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": "smoke-signed-images"},
        "spec": {
            "webhookTimeoutSeconds": 15,
            "rules": [{
                "name": "signed",
                "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "verifyImages": [{
                    "imageReferences": [f"{registry.host}/*"],
                    "failureAction": "Enforce",
                    "mutateDigest": True,
                    "verifyDigest": True,
                    "required": True,
                    "attestors": [{"entries": [{"keys": {
                        "publicKeys": public_key,
                        "rekor": {"ignoreTlog": True},
                        "ctlog": {"ignoreSCT": True},
                    }}]}],
                }],
            }],
        },
    }


def test_unsigned_image_is_denied_and_an_uncovered_one_admitted(
    cluster: LocalCluster, registry: LocalRegistry, tmp_path: Path
) -> None:
    push_image(registry.client(), "smoke/alpine", "1", alpine_image(DEMO_ALPINE_PACKAGES, marker="cluster-smoke"))
    _, public = generate_keypair(tmp_path)
    cluster.apply_policy(signed_images_policy(registry, public.read_text()))

    denied = cluster.create_pod("default", "unsigned", f"{registry.host}/smoke/alpine:1")
    admitted = cluster.create_pod("default", "uncovered", "registry.invalid/other/app:1")

    assert not denied.admitted
    assert "smoke-signed-images" in denied.message
    assert "signed" in denied.message
    assert admitted.admitted
    assert admitted.image == "registry.invalid/other/app:1"
    cluster.delete_pod("default", "uncovered")
