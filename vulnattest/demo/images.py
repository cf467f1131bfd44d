"""Build small scannable OCI images in memory: an OS release file and a package database, nothing to run.

Every byte is deterministic (tar entries with mtime 0 and owner 0, gzip with mtime 0, compact JSON), so
equal inputs give equal digests and a `marker` is enough to make two images distinct.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MARKER_PATH = "etc/vulnattest-marker"
_EPOCH = "1970-01-01T00:00:00Z"  # a fixed creation time keeps digests reproducible

_DEBIAN_CODENAMES = {"11": "bullseye", "12": "bookworm", "13": "trixie"}
# Package.arch defaults to apk's spelling; dpkg names the same machines differently.
_DPKG_ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Package:
    """An installed OS package; `source` is the source package when it differs from `name`."""

    name: str
    version: str
    source: str | None = None
    arch: str = "x86_64"


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes with their OCI media type."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        """Return the blob's digest, `sha256:<hex>`."""
        return _sha256(self.data)

    @property
    def size(self) -> int:
        """Return the blob's length in bytes."""
        return len(self.data)

    def descriptor(self) -> dict[str, object]:
        """Return the OCI descriptor that points at this blob."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    """A single-platform OCI image: config, gzip layers (lowest first) and the manifest that ties them."""

    config: Blob
    layers: tuple[Blob, ...]
    manifest: Blob

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Return every blob of the image, the manifest last."""
        return (self.config, *self.layers, self.manifest)


def layer_tar(files: Mapping[str, bytes]) -> bytes:
    """Return a deterministic uncompressed tar of `files` (relative paths) and their parent directories."""
    directories = {str(parent) for path in files for parent in PurePosixPath(path).parents if str(parent) != "."}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directories | set(files)):
            info = tarfile.TarInfo(path)
            info.mtime, info.uid, info.gid = 0, 0, 0
            if path in files:
                info.mode, info.size = 0o644, len(files[path])
                tar.addfile(info, io.BytesIO(files[path]))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    return buffer.getvalue()


def alpine_image(
    packages: Sequence[Package],
    *,
    release: str = "3.19.1",
    base_layers: Sequence[bytes] = (),
    marker: str = "",
    architecture: str = "amd64",
) -> Image:
    """Build an Alpine image whose top layer holds the OS release and an apk database listing `packages`.

    `base_layers` are uncompressed tars (see `layer_tar`) placed below that layer.
    """
    minor = ".".join(release.split(".")[:2])
    os_release = (
        f'NAME="Alpine Linux"\nID=alpine\nVERSION_ID={release}\nPRETTY_NAME="Alpine Linux v{minor}"\n'
        'HOME_URL="https://alpinelinux.org/"\n'
    )
    # `o:` (origin) must follow `V:`: Trivy takes the source version from the `V:` seen before it.
    installed = "".join(f"P:{p.name}\nV:{p.version}\no:{p.source or p.name}\nA:{p.arch}\n\n" for p in packages)
    files = {
        "etc/os-release": os_release,
        "etc/alpine-release": f"{release}\n",
        "lib/apk/db/installed": installed,
    }
    return _image(files, marker, base_layers, architecture)


def debian_image(
    packages: Sequence[Package],
    *,
    release: str = "12.5",
    base_layers: Sequence[bytes] = (),
    marker: str = "",
    architecture: str = "amd64",
) -> Image:
    """Build a Debian image whose top layer holds the OS release and a dpkg status file listing `packages`.

    Package architectures use apk spelling (`x86_64`, `aarch64`) and are written as dpkg names them.
    """
    major = release.split(".")[0]
    codename = _DEBIAN_CODENAMES.get(major)
    version = f"{major} ({codename})" if codename else major
    codename_line = f"VERSION_CODENAME={codename}\n" if codename else ""
    os_release = (
        f'PRETTY_NAME="Debian GNU/Linux {version}"\nNAME="Debian GNU/Linux"\nVERSION_ID="{major}"\n'
        f'VERSION="{version}"\n{codename_line}ID=debian\n'
    )
    files = {
        "etc/os-release": os_release,
        "etc/debian_version": f"{release}\n",
        "var/lib/dpkg/status": "\n".join(_dpkg_entry(p) for p in packages),
    }
    return _image(files, marker, base_layers, architecture)


def _dpkg_entry(package: Package) -> str:
    source = f"Source: {package.source}\n" if package.source and package.source != package.name else ""
    return (
        f"Package: {package.name}\nStatus: install ok installed\n"
        f"Architecture: {_DPKG_ARCHES.get(package.arch, package.arch)}\n{source}"
        f"Version: {package.version}\nDescription: vulnattest demo package\n"
    )


def image_index(images: Mapping[str, Image]) -> Blob:
    """Return an OCI image index over `images`, keyed by platform (`linux/amd64`, `linux/arm64/v8`)."""
    manifests = []
    for platform_key, image in images.items():
        parts = platform_key.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {platform_key!r} must look like 'linux/amd64' or 'linux/arm64/v8'")
        platform = {"architecture": parts[1], "os": parts[0]}
        if len(parts) == 3:
            platform["variant"] = parts[2]
        manifests.append({**image.manifest.descriptor(), "platform": platform})
    return Blob(OCI_INDEX, _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))


def write_oci_layout(image: Image, directory: Path, tag: str = "latest") -> None:
    """Write `image` as an OCI image layout in `directory`, its manifest named `tag` in index.json."""
    blob_dir = directory / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    for blob in image.blobs:
        (blob_dir / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    (directory / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    descriptor = {**image.manifest.descriptor(), "annotations": {REF_NAME_ANNOTATION: tag}}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
    (directory / "index.json").write_bytes(_json(index))


def _image(files: dict[str, str], marker: str, base_layers: Sequence[bytes], architecture: str) -> Image:
    if marker:
        files[MARKER_PATH] = f"{marker}\n"
    tars = [*base_layers, layer_tar({path: text.encode() for path, text in files.items()})]
    layers = tuple(Blob(OCI_LAYER, gzip.compress(tar, mtime=0)) for tar in tars)
    config = Blob(
        OCI_CONFIG,
        _json(
            {
                "created": _EPOCH,
                "architecture": architecture,
                "os": "linux",
                "config": {},
                # Layers are named by their gzip blobs, diff_ids by the tars inside: Trivy caches by diff_id.
                "rootfs": {"type": "layers", "diff_ids": [_sha256(tar) for tar in tars]},
                "history": [{"created": _EPOCH, "created_by": "vulnattest demo layer"} for _ in tars],
            }
        ),
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    return Image(config=config, layers=layers, manifest=Blob(OCI_MANIFEST, _json(manifest)))


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


DEMO_ALPINE_PACKAGES: tuple[Package, ...] = (
    Package("busybox", "1.36.1-r15"),
    Package("libcrypto3", "3.1.4-r5", source="openssl"),
    Package("libssl3", "3.1.4-r5", source="openssl"),
    Package("zlib", "1.3.1-r0"),
    Package("musl", "1.2.4_git20230717-r4"),
)
"""Alpine 3.19 packages DEMO_ADVISORIES hit: busybox, both openssl libraries and zlib; musl stays clean."""

DEMO_DEBIAN_PACKAGES: tuple[Package, ...] = (
    Package("bash", "5.2.15-2+b2"),
    Package("libssl3", "3.0.11-1~deb12u2", source="openssl"),
    Package("openssl", "3.0.11-1~deb12u2"),
    Package("zlib1g", "1:1.2.13.dfsg-1", source="zlib"),
    Package("base-files", "12.4+deb12u5"),
)
"""Debian 12 packages that DEMO_ADVISORIES hit: bash, libssl3 and openssl, zlib1g; base-files stays clean."""
