"""Image reference parsing."""

from __future__ import annotations

import pytest

from vulnattest.errors import ImageRefError
from vulnattest.images import ImageRef

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", None),
        ("org/app:1.2", "docker.io", "org/app", "1.2", None),
        ("127.0.0.1:5000/demo/app:1", "127.0.0.1:5000", "demo/app", "1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        (f"ghcr.io/a/b@{DIGEST}", "ghcr.io", "a/b", None, DIGEST),
        (f"ghcr.io/a/b:v1@{DIGEST}", "ghcr.io", "a/b", "v1", DIGEST),
        ("[::1]:5000/x/y:z", "[::1]:5000", "x/y", "z", None),
        ("index.docker.io/nginx:1", "docker.io", "library/nginx", "1", None),  # docker's names for Docker Hub
        ("registry-1.docker.io/org/app", "docker.io", "org/app", "latest", None),
    ],
)
def test_parses_docker_references(text: str, registry: str, repository: str, tag: str | None, digest: str | None):
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "expected [registry/]repository"),
        ("Upper/Case", "must be lowercase"),
        ("a/../b", "must be lowercase"),
        ("host:5000/a:b:c", "must be lowercase"),
        ("app@sha256:short", "digest must be sha256"),
        ("app:bad tag", "expected [registry/]repository"),
        ("app:-dash", "bad tag"),
        ("app:tåg", "bad tag"),  # docker's tags are ASCII
    ],
)
def test_rejects_malformed_references_naming_them(text: str, complaint: str):
    with pytest.raises(ImageRefError, match="invalid image reference") as caught:
        ImageRef.parse(text)
    assert complaint in str(caught.value)
    assert repr(text) in str(caught.value)


def test_pinned_and_display_forms():
    ref = ImageRef.parse("127.0.0.1:5000/demo/app:1").with_digest(DIGEST)
    assert ref.pinned == f"127.0.0.1:5000/demo/app@{DIGEST}"
    assert ref.reference == DIGEST
    assert str(ref) == f"127.0.0.1:5000/demo/app:1@{DIGEST}"
    with pytest.raises(ImageRefError, match="not pinned"):
        _ = ImageRef.parse("app").pinned
