"""What attestations, verification and freshness need of a registry, as a Protocol: `RegistryClient` speaks it over
HTTP (retries, auth, limits, transport errors all inside it); unit tests give an in-memory one."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from vulnattest.registry import Manifest
from vulnattest.wire import Descriptor

__all__ = ["Registry"]


@runtime_checkable
class Registry(Protocol):
    """A registry's manifests, blobs and referrers, by repository. Failures are `RegistryError`s (transient or not);
    a missing manifest is `NotFoundError` from `get_manifest` and None from `find_manifest`."""

    host: str

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """A manifest or index by tag or digest."""
        ...

    def find_manifest(self, repository: str, reference: str) -> Manifest | None:
        """Like `get_manifest`, None when there is none."""
        ...

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store a manifest under a tag or digest; its digest."""
        ...

    def put_referrer(self, repository: str, body: bytes) -> tuple[str, bool]:
        """Store a manifest with a subject by digest; its digest and whether the registry indexed it as a referrer."""
        ...

    def referrers(self, repository: str, digest: str) -> list[Descriptor] | None:
        """The referrers API's descriptors for `digest`, None where the registry has no such API."""
        ...

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest."""
        ...

    def get_blob(self, repository: str, digest: str, size: object = None) -> bytes:
        """A blob, checked against its digest and declared size."""
        ...

    def push_blob(self, repository: str, data: bytes, *, check_exists: bool = True) -> str:
        """Upload a blob unless there; its digest."""
        ...
