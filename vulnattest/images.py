"""Image references: parsing, normalisation and pinning to a manifest digest."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vulnattest.errors import ImageRefError

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})  # docker names them all docker.io
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)  # docker's [A-Za-z0-9_]: no other letters
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?$"  # name[:port]
    r"|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$"  # [ipv6][:port]
)


def is_digest(value: str) -> bool:
    """Return True when `value` is a sha256 digest such as ``sha256:<64 hex>``."""
    return bool(_DIGEST.match(value))


_DIGEST_TAG = re.compile(r"sha256-[0-9a-f]{64}(\.[a-z]+)?")


def digest_tag(digest: str, suffix: str = "") -> str:
    """The tag cosign and the referrers fallback file things about a manifest under: ``sha256-<hex>`` and `suffix`
    (cosign's ``.att``, ``.sig``)."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}-{hex_digest}{suffix}"


def is_digest_tag(tag: str) -> bool:
    """Return True for a tag `digest_tag` makes: something attached to an image, never an image to scan."""
    return bool(_DIGEST_TAG.fullmatch(tag))


@dataclass(frozen=True, order=True)
class ImageRef:
    """A parsed image reference: registry host, repository path, and a tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse `text` the way docker does (``[host[:port]/]path[:tag][@sha256:…]``)."""
        raw = text.strip()
        if not raw or any(c.isspace() for c in raw):
            raise ImageRefError(f"invalid image reference {text!r}: expected [registry/]repository[:tag][@sha256:…]")
        rest, at, digest_text = raw.partition("@")
        digest = digest_text if at else None
        if digest is not None and not is_digest(digest):
            raise ImageRefError(f"invalid image reference {text!r}: digest must be sha256:<64 lowercase hex>")
        first, sep, remainder = rest.partition("/")
        if sep and (("." in first or ":" in first or first == "localhost") or first.startswith("[")):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
        tag: str | None = None
        name, colon, maybe_tag = path.rpartition(":")
        if colon and "/" not in maybe_tag:
            path, tag = name, maybe_tag
            if not _TAG.match(tag):
                raise ImageRefError(f"invalid image reference {text!r}: bad tag {tag!r}")
        registry = DOCKER_HUB if registry in _DOCKER_HUB_ALIASES else registry
        if not _HOST.match(registry):
            raise ImageRefError(f"invalid image reference {text!r}: bad registry host {registry!r}")
        components = path.split("/")
        if not path or not all(_COMPONENT.match(c) for c in components):
            raise ImageRefError(
                f"invalid image reference {text!r}: repository {path!r} must be lowercase letters, digits "
                "and separators (. _ -) between slashes"
            )
        if registry == DOCKER_HUB and len(components) == 1:
            path = f"library/{path}"
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry=registry, repository=path, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """Registry and repository, as cosign writes it in a statement subject (``host/path``)."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> ImageRef:
        """Return this reference pinned to `digest`, keeping the tag for display."""
        return ImageRef(self.registry, self.repository, self.tag, digest)

    @property
    def pinned(self) -> str:
        """The reference by digest (``host/path@sha256:…``); requires a digest."""
        if self.digest is None:
            raise ImageRefError(f"{self} is not pinned to a digest")
        return f"{self.name}@{self.digest}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
