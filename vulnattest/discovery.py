"""Fleets found rather than listed: the images of `sources` (registries with repository and tag patterns), read from
the registries at each run and added to the config's own `images`."""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from vulnattest.config import FleetConfig, RegistrySource
from vulnattest.errors import VulnattestError
from vulnattest.registry import Registries, RegistryClient

__all__ = ["Discovered", "discover", "with_discovered"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Discovered:
    """An image a source found: its reference by tag, its digest, and the other tags naming the same digest."""

    ref: str
    digest: str
    aliases: tuple[str, ...] = ()


def with_discovered(config: FleetConfig) -> FleetConfig:
    """`config` with its sources' images after its own (an image listed and found is kept once). A source whose
    registry fails is logged as an error naming it and skipped: the other sources and the listed images go on."""
    if not config.sources:
        return config
    registries = Registries(insecure_hosts=config.insecure_registries(), timeouts=config.registry_timeouts())
    found: list[str] = []
    try:
        for i, source in enumerate(config.sources):
            try:
                found += [d.ref for d in discover(source, registries.for_host(source.registry))]
            except VulnattestError as e:
                log.error("sources[%d] (%s) found no images this run: %s", i, source.registry, e)
    finally:
        registries.close()
    return config.with_images(list(dict.fromkeys([*config.images, *found])))


def discover(source: RegistrySource, client: RegistryClient, page_size: int = 1000) -> list[Discovered]:
    """The images `source` names in its registry now: repositories by pattern, tags by pattern, range and count,
    and one image per digest (the first tag in version order, highest first, names it)."""
    patterns = source.repositories
    wildcard = any(_is_pattern(p) for p in patterns)
    catalog = client.catalog(page_size) if wildcard else []
    repositories = [p for p in patterns if not _is_pattern(p)]
    repositories += [name for name in catalog if any(fnmatch.fnmatchcase(name, p) for p in patterns if _is_pattern(p))]
    found: list[Discovered] = []
    for repository in dict.fromkeys(repositories):
        tags = _selected(client.tags(repository, page_size), source)
        by_digest: dict[str, list[str]] = {}
        for tag in tags:
            by_digest.setdefault(client.get_manifest(repository, tag).digest, []).append(tag)
        for digest, names in by_digest.items():
            found.append(Discovered(f"{source.registry}/{repository}:{names[0]}", digest, tuple(names[1:])))
    log.info("%s: found %d image(s) in %d repositories", source.registry, len(found), len(set(repositories)))
    return found


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def _version(tag: str) -> Version | None:
    try:
        return Version(tag.removeprefix("v"))
    except InvalidVersion:
        return None


# what cosign and the referrers fallback tag things attached to an image with: never images to scan
_ATTACHMENT_TAG = re.compile(r"sha256-[0-9a-f]{64}(\.[a-z]+)?")


def _selected(tags: list[str], source: RegistrySource) -> list[str]:
    """The tags `source` wants: highest version first, then tags that are no version, by name (`semver` and
    `newest` keep versions only). Attachment tags (``sha256-<hex>.att``, ``.sig``, the referrers fallback) are
    never images."""
    chosen = [t for t in tags if fnmatch.fnmatchcase(t, source.tags) and not _ATTACHMENT_TAG.fullmatch(t)]
    versioned = [(v, t) for t in chosen if (v := _version(t)) is not None]
    if source.semver is not None:
        wanted = SpecifierSet(source.semver)
        versioned = [(v, t) for v, t in versioned if wanted.contains(v, prereleases=True)]
    ranked = [t for _, t in sorted(versioned, reverse=True)]
    if source.semver is not None or source.newest is not None:
        return ranked[: source.newest]
    return ranked + sorted(t for t in chosen if _version(t) is None)
