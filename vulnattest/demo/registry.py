"""A throwaway OCI registry (Debian's ``docker-registry``) on a free loopback port, and pushing images into it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from vulnattest.demo.images import Image, image_index
from vulnattest.errors import VulnattestError
from vulnattest.registry import OCI_INDEX, RegistryClient

INSTALL_HINT = "install Debian's registry: `sudo apt-get install docker-registry` (it provides docker-registry)"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    """Runs ``docker-registry serve`` with its own storage directory until closed; plain HTTP, no auth."""

    def __init__(self, root: Path | None = None, binary: str = "docker-registry") -> None:
        found = shutil.which(binary)
        if found is None:
            raise VulnattestError(f"{binary} not found; {INSTALL_HINT}")
        self._binary = found
        self._tmp = tempfile.TemporaryDirectory(prefix="vulnattest-registry-") if root is None else None
        self.root: Path = Path(self._tmp.name) if self._tmp is not None else Path(root or ".")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        """Start the registry and wait until it answers ``/v2/``."""
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: error, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: '{self.host}'}}\n"
        )
        log = (self.root / "registry.log").open("wb")
        self._process = subprocess.Popen([self._binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise VulnattestError(f"docker-registry exited at start: {(self.root / 'registry.log').read_text()}")
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise VulnattestError(f"docker-registry did not answer on {self.host} within {timeout}s")

    def stop(self) -> None:
        """Stop the registry and remove its storage if it made it."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def client(self) -> RegistryClient:
        """A client for this registry."""
        return RegistryClient(self.host, insecure=True)

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


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
