"""A throwaway OCI registry (Debian's ``docker-registry``) on a free loopback port, and pushing images into it."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from vulnattest.demo.images import Image, image_index
from vulnattest.errors import VulnattestError
from vulnattest.localservice import LocalService, free_port
from vulnattest.registry import OCI_INDEX, RegistryClient

__all__ = ["INSTALL_HINT", "LocalRegistry", "free_port", "push_image", "push_index"]

INSTALL_HINT = "install Debian's registry: `sudo apt-get install docker-registry` (it provides docker-registry)"


class LocalRegistry(LocalService):
    """Runs ``docker-registry serve`` with its own storage directory until closed; no auth, plain HTTP unless given
    `tls` (a PEM certificate and key file): then HTTPS only. `storage` shares another registry's blobs and manifests."""

    name = "registry"

    def __init__(self, root: Path | None = None, binary: str = "docker-registry", *,
                 tls: tuple[Path, Path] | None = None, storage: Path | None = None) -> None:
        found = shutil.which(binary)
        if found is None:
            raise VulnattestError(f"{binary} not found; {INSTALL_HINT}")
        super().__init__(root)
        self._binary = found
        self._tls = tls
        self.storage = storage or self.root / "data"
        self.host = f"127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        """The registry's directory (config, storage, log)."""
        return self.directory

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        """Start the registry and wait until it answers ``/v2/``."""
        config = self.root / "config.yml"
        tls = f", tls: {{certificate: '{self._tls[0]}', key: '{self._tls[1]}'}}" if self._tls else ""
        config.write_text(
            "version: 0.1\n"
            "log: {level: error, accesslog: {disabled: true}}\n"
            # the storage settings of the config Debian's package ships (its blob descriptor cache included)
            f"storage: {{filesystem: {{rootdirectory: '{self.storage}'}}, delete: {{enabled: true}}, "
            "cache: {blobdescriptor: inmemory}}\n"
            f"http: {{addr: '{self.host}'{tls}}}\n"
        )
        scheme = "https" if self._tls else "http"
        # the health probe only: whoever talks to it next decides whether to trust its certificate
        self._launch([self._binary, "serve", str(config)], f"{scheme}://{self.host}/v2/", timeout, verify=False)
        return self

    def client(self) -> RegistryClient:
        """A client for this registry."""
        return RegistryClient(self.host, insecure=True)


def push_image(client: RegistryClient, repository: str, tag: str | None, image: Image) -> str:
    """Push `image`'s blobs and manifest (under `tag`, or by digest when None); return the manifest digest."""
    for blob in (image.config, *image.layers):
        client.push_blob(repository, blob.data)
    return client.put_manifest(repository, tag or image.manifest.digest, image.manifest.data, image.manifest.media_type)


def push_index(client: RegistryClient, repository: str, tag: str, images: Mapping[str, Image]) -> str:
    """Push a multi-platform image: every platform's manifest by digest, then the index under `tag`."""
    for image in images.values():
        push_image(client, repository, None, image)
    index = image_index(images)
    return client.put_manifest(repository, tag, index.data, OCI_INDEX)
