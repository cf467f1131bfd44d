"""Images the size of real ones, and an advisory DB the size of a real one, built without Docker.

Each image is a Debian 12 image of four layers (a base, two ``apt-get install`` layers and an application layer),
as images built from ``debian:bookworm`` are: ~1,600 installed packages (from ~1,000 source packages) in dpkg's
status file, which every package layer rewrites, a ``/var/lib/dpkg/info/<package>.list`` per package, and
~24,000 files in all (shared libraries, documentation, configuration: ~130 MB unpacked). The DB holds ~200,000
advisories over ~2,400 source packages (all installed ones and as many again that no image has), most fixed long
before the installed versions, as in Trivy's real Debian data; ~2,000 findings per image.

Every layer of every image is distinct (a marker file per layer and image), so no image reuses another's layer
analysis: each scan is a first scan. Building 100 such images in Python would take minutes, so each layer's
content is built and compressed once, and each image's copy of it is that gzip stream followed by a small gzip
member holding the image's marker (a valid multi-member gzip, which Go's gzip reader reads as one stream): the
layer's bytes, digest and diff id are still the image's own.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vulnattest.demo.images import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Package
from vulnattest.demo.trivydb import Advisory, write_trivy_db
from vulnattest.registry import RegistryClient

SOURCES = 1_000
GHOST_SOURCES = 1_400  # advisories for packages no image installs, as most of a real DB's are
ADVISORIES_PER_SOURCE = 85
AFFECTED_SHARE = 0.006  # of an installed package's advisories, those that affect its version (fixed later, or not)
UNFIXED_SHARE = 0.4
FILES_PER_PACKAGE = 14
BUCKET = "debian 12"
SEVERITIES = ("CRITICAL", "HIGH", "HIGH", "MEDIUM", "MEDIUM", "MEDIUM", "LOW", "LOW", "LOW", "UNKNOWN")
_WORDS = ("the", "package", "library", "data", "file", "shared", "config", "system", "runtime", "support", "module",
          "version", "debian", "binary", "documentation", "copyright", "license", "upstream", "changes", "build")
_EPOCH = "1970-01-01T00:00:00Z"
_OS_RELEASE = (b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
               b'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n')


@dataclass(frozen=True)
class Universe:
    """The installed packages of the fleet's images, in install order (base, then two install layers)."""

    layers: tuple[tuple[Package, ...], ...]

    @property
    def packages(self) -> tuple[Package, ...]:
        """Every installed package."""
        return tuple(p for layer in self.layers for p in layer)

    @property
    def sources(self) -> dict[str, str]:
        """Installed source package -> its installed version."""
        return {p.source or p.name: p.version for p in self.packages}


def universe(seed: int = 1) -> Universe:
    """~1,600 packages from `SOURCES` source packages, split 25/45/30% over the base and two install layers."""
    rng = random.Random(f"realistic-{seed}")  # noqa: S311 - reproducible test data
    names: set[str] = set()
    packages: list[Package] = []
    while len(names) < SOURCES:
        source = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 10)))
        if source in names:
            continue
        names.add(source)
        version = f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(1, 20)}-{rng.randint(1, 4)}"
        binaries = [source] if rng.random() < 0.55 else [source, f"lib{source}{rng.randint(0, 3)}"]
        if rng.random() < 0.15:
            binaries.append(f"{source}-common")
        packages += [Package(name, version, source=source) for name in binaries]
    cut1, cut2 = len(packages) // 4, len(packages) * 7 // 10
    return Universe((tuple(packages[:cut1]), tuple(packages[cut1:cut2]), tuple(packages[cut2:])))


def advisories(world: Universe, seed: int = 1) -> list[Advisory]:
    """`ADVISORIES_PER_SOURCE` advisories for each installed source package and each of `GHOST_SOURCES` others."""
    rng = random.Random(f"realistic-advisories-{seed}")  # noqa: S311 - reproducible test data
    installed = world.sources
    found: list[Advisory] = []
    for source in [*sorted(installed), *(f"ghost{n:04d}" for n in range(GHOST_SOURCES))]:
        for _ in range(ADVISORIES_PER_SOURCE):
            number = len(found) + 1
            affected = source in installed and rng.random() < AFFECTED_SHARE * 2
            if affected and rng.random() < UNFIXED_SHARE:
                fixed = None
            elif affected:
                fixed = "99:1.0-1"  # an epoch: later than any installed version
            else:
                fixed = f"0.{rng.randint(0, 9)}.{rng.randint(0, 9)}-1"  # long before every installed version
            found.append(Advisory(BUCKET, source, f"CVE-2097-{number:06d}", SEVERITIES[number % len(SEVERITIES)],
                                  fixed, f"bench advisory {number} in {source}"))
    return found


def write_db(cache_dir: Path, world: Universe) -> int:
    """Write the DB into `cache_dir`; return how many advisories it holds."""
    found = advisories(world)
    write_trivy_db(cache_dir, found)
    return len(found)


def _text(rng: random.Random, size: int) -> bytes:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words).encode()[:size]


def _status(packages: Sequence[Package]) -> bytes:
    return "\n".join(
        f"Package: {p.name}\nStatus: install ok installed\nPriority: optional\nSection: libs\n"
        f"Installed-Size: {len(p.name) * 97}\nMaintainer: Debian Developers <debian@example.org>\n"
        f"Architecture: amd64\n" + (f"Source: {p.source}\n" if p.source and p.source != p.name else "")
        + f"Version: {p.version}\nDepends: libc6 (>= 2.36)\nDescription: {p.name} for the benchmark\n"
        f" a longer description of {p.name}, as packages carry.\n"
        for p in packages
    ).encode()


def _tar_entries(files: dict[str, bytes]) -> bytes:
    """A tar of `files` and their directories, without the end-of-archive blocks (an image's marker follows)."""
    directories = {"/".join(path.split("/")[:i]) for path in files for i in range(1, path.count("/") + 1)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directories | set(files)):
            info = tarfile.TarInfo(path)
            info.mtime = 0
            if path in files:
                info.mode, info.size = 0o644, len(files[path])
                tar.addfile(info, io.BytesIO(files[path]))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
        end = tar.offset  # where the end-of-archive blocks that closing writes begin
    return buffer.getvalue()[:end]


def _marker_tar(path: str, text: str) -> bytes:
    """The tar entry of one small file, then the end-of-archive blocks."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(path)
        info.mtime, info.mode, info.size = 0, 0o644, len(text)
        tar.addfile(info, io.BytesIO(text.encode()))
    return buffer.getvalue()


@dataclass(frozen=True)
class LayerBody:
    """A layer's content, tarred and compressed once for the whole fleet."""

    tar: bytes
    gzipped: bytes
    files: int

    def for_image(self, marker: str, index: int) -> tuple[bytes, str]:
        """This image's copy of the layer (gzip blob) and its diff id."""
        suffix = _marker_tar(f"etc/bench-marker-{index}", marker)
        tar_hash = hashlib.sha256(self.tar)
        tar_hash.update(suffix)
        return self.gzipped + gzip.compress(suffix, mtime=0), "sha256:" + tar_hash.hexdigest()


def layer_bodies(world: Universe, seed: int = 1) -> list[LayerBody]:
    """The four layers' content: OS files and the packages of each layer (status, .list files, their files)."""
    rng = random.Random(f"realistic-files-{seed}")  # noqa: S311 - reproducible test data
    bodies = []
    installed: list[Package] = []
    for number, packages in enumerate(world.layers):
        installed += packages
        files: dict[str, bytes] = {"var/lib/dpkg/status": _status(installed)}
        if number == 0:
            files |= {"etc/os-release": _OS_RELEASE, "etc/debian_version": b"12.5\n"}
        for package in packages:
            paths = []
            for i in range(FILES_PER_PACKAGE):
                if i % 3 == 0:
                    path = f"usr/lib/x86_64-linux-gnu/{package.name}/lib{package.name}-{i}.so.1"
                    content = os.urandom(rng.randint(2_000, 12_000))  # binaries barely compress
                else:
                    path = f"usr/share/doc/{package.name}/{i}/README-{i}.txt"
                    content = _text(rng, rng.randint(1_000, 8_000))
                files[path] = content
                paths.append(f"/{path}")
            files[f"var/lib/dpkg/info/{package.name}.list"] = ("\n".join(paths) + "\n").encode()
            files[f"var/lib/dpkg/info/{package.name}.md5sums"] = "".join(
                f"{hashlib.md5(p.encode()).hexdigest()}  {p[1:]}\n" for p in paths).encode()  # noqa: S324
        tar = _tar_entries(files)
        bodies.append(LayerBody(tar, gzip.compress(tar, compresslevel=1, mtime=0), len(files)))
    app = {f"app/lib/module-{i}.py": _text(rng, rng.randint(500, 4_000)) for i in range(2_000)}
    app_tar = _tar_entries(app)
    bodies.append(LayerBody(app_tar, gzip.compress(app_tar, compresslevel=1, mtime=0), len(app)))
    return bodies


def push_fleet(client: RegistryClient, bodies: Sequence[LayerBody], count: int, *, prefix: str = "real",
               threads: int = 4) -> list[tuple[str, str]]:
    """Push `count` images built from `bodies`, each layer made the image's own; return (repository, digest)."""

    def one(i: int) -> tuple[str, str]:
        repository = f"{prefix}/app-{i:04d}"
        blobs, diff_ids = [], []
        for index, body in enumerate(bodies):
            blob, diff_id = body.for_image(f"{repository}\n", index)
            blobs.append(blob)
            diff_ids.append(diff_id)
        config = _json({
            "created": _EPOCH, "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": _EPOCH, "created_by": f"bench layer {n}"} for n in range(len(blobs))],
        })
        descriptors = [{"digest": client.push_blob(repository, blob, check_exists=False), "size": len(blob)}
                       for blob in (config, *blobs)]
        manifest = _json({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **descriptors[0]},
            "layers": [{"mediaType": OCI_LAYER, **d} for d in descriptors[1:]],
        })
        return repository, client.put_manifest(repository, "1.0", manifest, OCI_MANIFEST)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, range(count)))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
