"""A synthetic fleet made the way real ones are: shared distro base layers, a shared runtime layer, an app layer each.

Alpine 3.19 and Debian 12 each get one base layer (OS release files and a package database of ~100 packages) and a
few runtime layers that rewrite the package database with ~300 packages, as an ``apk add`` / ``apt-get install``
layer does. Every image adds its own top layer (its application files), so the scanner analyses the shared layers
once and then only the small top layer of each image, as Trivy's layer cache does in life. An advisory DB with
thousands of advisories makes some of the installed packages vulnerable (fixed and unfixed, every severity) and
leaves others clean (fixed before the installed version, or advisories for packages nobody installed).

Everything is deterministic: the same arguments build the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vulnattest.demo.images import (
    MARKER_PATH,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Blob,
    Image,
    Package,
    layer_tar,
)
from vulnattest.demo.registry import push_image
from vulnattest.demo.trivydb import Advisory, write_trivy_db
from vulnattest.registry import RegistryClient

ALPINE_RELEASE, DEBIAN_RELEASE = "3.19.1", "12.5"
ALPINE_BUCKET, DEBIAN_BUCKET = "alpine 3.19", "debian 12"
RUNTIME_VARIANTS = 3  # runtime layers per distro, each shared by a third of that distro's images
BASE_PACKAGES, RUNTIME_PACKAGES = 100, 200  # so a runtime image lists ~300 packages
SEVERITY_CYCLE = ("CRITICAL", "HIGH", "HIGH", "MEDIUM", "MEDIUM", "MEDIUM", "LOW", "LOW", "UNKNOWN")
_SYLLABLES = ("ab", "ar", "bel", "cor", "dex", "fa", "gli", "hal", "io", "jun", "kel", "lo", "mar", "nex", "or",
              "pel", "qua", "ros", "sil", "tor", "ul", "vin", "wex", "xa", "yor", "zen")
_EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class Distro:
    """One distro's package universe: base packages, runtime variants, and the packages installed by each."""

    name: str  # "alpine" or "debian"
    bucket: str  # the Trivy DB bucket its advisories go in
    base: tuple[Package, ...]
    runtimes: tuple[tuple[Package, ...], ...]  # the full package list of each runtime layer (base included)


@dataclass(frozen=True)
class FleetImage:
    """One image of the fleet as pushed: its repository, tag and manifest digest."""

    repository: str
    tag: str
    digest: str
    distro: str


def _name(rng: random.Random, taken: set[str], prefix: str) -> str:
    while True:
        name = prefix + "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
        if name not in taken:
            taken.add(name)
            return name


def _version(rng: random.Random, distro: str) -> tuple[int, int, int, int]:
    return (rng.randint(0, 9), rng.randint(0, 30), rng.randint(1, 20), rng.randint(0, 5 if distro == "alpine" else 3))


def _format(distro: str, parts: tuple[int, int, int, int]) -> str:
    major, minor, patch, release = parts
    return f"{major}.{minor}.{patch}-r{release}" if distro == "alpine" else f"{major}.{minor}.{patch}-{release + 1}"


def _packages(rng: random.Random, distro: str, count: int, taken: set[str]) -> list[Package]:
    packages = []
    for _ in range(count):
        source = _name(rng, taken, "lib" if rng.random() < 0.4 else "")
        version = _format(distro, _version(rng, distro))
        # a quarter of the source packages build two binary packages, as openssl builds libssl and libcrypto
        names = [source] if rng.random() < 0.75 else [source, f"{source}-libs"]
        packages += [Package(name, version, source=source) for name in names]
    return packages


def distro(name: str, seed: int = 1) -> Distro:
    """The package universe of `name` ("alpine" or "debian"), the same for the same seed."""
    rng = random.Random(f"{name}-{seed}")  # noqa: S311 - reproducible test data, no secret
    taken: set[str] = set()
    base = tuple(_packages(rng, name, BASE_PACKAGES * 4 // 5, taken))
    runtimes = tuple(
        tuple(sorted({*base, *_packages(rng, name, RUNTIME_PACKAGES * 4 // 5, taken)}, key=lambda p: p.name))
        for _ in range(RUNTIME_VARIANTS)
    )
    return Distro(name, ALPINE_BUCKET if name == "alpine" else DEBIAN_BUCKET, base, runtimes)


AFFECTED_SHARE = {"alpine": 0.03, "debian": 0.2}
"""The share of installed source packages with an advisory that affects them: Debian images carry far more
(mostly unfixed, low) findings than Alpine ones, as real scans show."""


def advisories(distros: Sequence[Distro], seed: int = 1) -> list[Advisory]:
    """Advisories for the fleet's distros: some affect the installed version (fixed later, or unfixed), most were
    fixed before it, and as many again name packages nobody installed; thousands in all."""
    rng = random.Random(f"advisories-{seed}")  # noqa: S311 - reproducible test data, no secret
    found: list[Advisory] = []

    def add(d: Distro, source: str, fixed: str | None) -> None:
        number = len(found) + 1
        severity = SEVERITY_CYCLE[number % len(SEVERITY_CYCLE)]
        found.append(Advisory(d.bucket, source, f"CVE-2098-{number:05d}", severity, fixed,
                              f"vulnattest bench advisory {number} in {source}"))

    for d in distros:
        installed = {p.source or p.name: p.version for layer in (d.base, *d.runtimes) for p in layer}
        ghosts = {f"ghost{n}-{d.name}": _format(d.name, _version(rng, d.name)) for n in range(len(installed))}
        for source, version in sorted({**installed, **ghosts}.items()):
            major, minor, patch = (int(x) for x in version.rpartition("-")[0].split("."))
            for _ in range(rng.randint(0, 3)):  # patch is at least 1, so x.y.0 is older than what is installed
                add(d, source, _format(d.name, (major, minor, 0, 0)))
            if rng.random() < AFFECTED_SHARE[d.name]:
                for _ in range(rng.randint(1, 4)):
                    fixed = None if rng.random() < 0.3 else _format(d.name, (major, minor, patch + 1, 0))
                    add(d, source, fixed)
    return found


def write_db(cache_dir: Path, distros: Sequence[Distro]) -> int:
    """Write the fleet's offline Trivy DB into `cache_dir`; return how many advisories it holds."""
    found = advisories(distros)
    write_trivy_db(cache_dir, found)
    return len(found)


def _os_files(d: Distro) -> dict[str, bytes]:
    if d.name == "alpine":
        return {
            "etc/os-release": (f'NAME="Alpine Linux"\nID=alpine\nVERSION_ID={ALPINE_RELEASE}\n'
                               'PRETTY_NAME="Alpine Linux v3.19"\n').encode(),
            "etc/alpine-release": f"{ALPINE_RELEASE}\n".encode(),
        }
    return {
        "etc/os-release": (b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
                           b'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'),
        "etc/debian_version": f"{DEBIAN_RELEASE}\n".encode(),
    }


def _package_db(d: Distro, packages: Sequence[Package]) -> dict[str, bytes]:
    if d.name == "alpine":
        # `o:` (origin) must follow `V:`: Trivy takes the source version from the `V:` seen before it
        text = "".join(f"P:{p.name}\nV:{p.version}\no:{p.source or p.name}\nA:x86_64\n\n" for p in packages)
        return {"lib/apk/db/installed": text.encode()}
    entries = [
        f"Package: {p.name}\nStatus: install ok installed\nArchitecture: amd64\n"
        + (f"Source: {p.source}\n" if p.source and p.source != p.name else "")
        + f"Version: {p.version}\nDescription: vulnattest bench package\n"
        for p in packages
    ]
    return {"var/lib/dpkg/status": "\n".join(entries).encode()}


@dataclass(frozen=True)
class Layer:
    """A layer as pushed (gzip blob) and as Trivy caches it (the diff id of the tar inside)."""

    blob: Blob
    diff_id: str

    @classmethod
    def of(cls, tar: bytes) -> Layer:
        """Compress `tar` deterministically."""
        return cls(Blob(OCI_LAYER, gzip.compress(tar, compresslevel=1, mtime=0)),
                   "sha256:" + hashlib.sha256(tar).hexdigest())


@dataclass(frozen=True)
class Layers:
    """The shared layers of one distro: the base, then each runtime variant."""

    base: Layer
    runtimes: tuple[Layer, ...]


def shared_layers(d: Distro) -> Layers:
    """The base layer (OS files, base package DB, some filler) and the runtime layers (a rewritten package DB)."""
    filler = {f"usr/share/{d.name}/doc-{i}.txt": hashlib.sha256(f"{d.name}{i}".encode()).hexdigest().encode() * 64
              for i in range(32)}
    base = Layer.of(layer_tar({**_os_files(d), **_package_db(d, d.base), **filler}))
    runtimes = tuple(
        Layer.of(layer_tar({**_package_db(d, packages), f"usr/lib/runtime-{i}/VERSION": f"{i}\n".encode()}))
        for i, packages in enumerate(d.runtimes)
    )
    return Layers(base, runtimes)


def app_image(layers: Layers, variant: int, name: str) -> Image:
    """An image: the distro base, one runtime layer, and a top layer of `name`'s own application files."""
    seed = hashlib.sha256(name.encode()).digest()
    app = Layer.of(layer_tar({
        MARKER_PATH: f"{name}\n".encode(),
        f"app/{name}/main.bin": b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(256)),
        f"app/{name}/config.json": json.dumps({"name": name}).encode(),
    }))
    stack = [layers.base, layers.runtimes[variant % len(layers.runtimes)], app]
    config = Blob(OCI_CONFIG, _json({
        "created": _EPOCH, "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in stack]},
        "history": [{"created": _EPOCH, "created_by": f"vulnattest bench layer {i}"} for i in range(len(stack))],
    }))
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                "layers": [layer.blob.descriptor() for layer in stack]}
    return Image(config=config, layers=tuple(layer.blob for layer in stack),
                 manifest=Blob(OCI_MANIFEST, _json(manifest)))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def build_fleet(client: RegistryClient, count: int, distros: Sequence[Distro], *, prefix: str = "bench",
                threads: int = 8) -> list[FleetImage]:
    """Push `count` distinct images, alternating distros and runtime variants, one repository each."""
    layers = {d.name: shared_layers(d) for d in distros}

    def one(i: int) -> FleetImage:
        d = distros[i % len(distros)]
        repository = f"{prefix}/{d.name}/app-{i:04d}"
        image = app_image(layers[d.name], i // len(distros), f"{prefix}-app-{i:04d}")
        return FleetImage(repository, "1.0", push_image(client, repository, "1.0", image), d.name)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, range(count)))
