"""Fleets found rather than listed: the images of `sources`, registries with repository and tag patterns and
Kubernetes clusters' running Pods, read at each run and added to the config's own `images`."""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from vulnattest.config import ClusterSource, FleetConfig, KubernetesSelector, RegistrySource, Source
from vulnattest.errors import VulnattestError
from vulnattest.images import ImageRef, is_digest_tag
from vulnattest.registry import Registries, RegistryClient

__all__ = ["Discovered", "discover", "discover_running", "with_discovered"]

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
    return discovered_fleet(config)[0]


def discovered_fleet(config: FleetConfig) -> tuple[FleetConfig, dict[str, str]]:
    """`with_discovered(config)`, and where each of its images came from: ``images`` for those the config lists,
    else the first source that found it (e.g. ``sources[0]: registry.example/team/*``)."""
    origins = {str(ref): "images" for ref in config.image_refs()}
    if not config.sources:
        return config, origins
    found: dict[str, None] = {}
    registries = Registries(insecure_hosts=config.insecure_registries(), timeouts=config.registry_timeouts())
    try:
        for i, source in enumerate(config.sources):
            try:
                if isinstance(source, ClusterSource):
                    refs = discover_running(source)
                else:
                    refs = [d.ref for d in discover(source, registries.for_host(source.registry))]
            except VulnattestError as e:
                log.error("sources[%d] (%s) found no images this run: %s", i, source_text(source), e)
                continue
            for ref in refs:
                found[ref] = None
                origins.setdefault(str(ImageRef.parse(ref)), f"sources[{i}]: {source_text(source)}")
    finally:
        registries.close()
    return config.with_images(list(dict.fromkeys([*config.images, *found]))), origins


def source_text(source: Source) -> str:
    """A source in a few words: ``registry.example/team/*`` or ``cluster (namespaces a, b; tier=prod)``."""
    if isinstance(source, RegistrySource):
        return ", ".join(f"{source.registry}/{r}" for r in source.repositories)
    selector = source.kubernetes
    scope = [f"namespaces {', '.join(selector.namespaces)}" if selector.namespaces else "every namespace",
             *([selector.label_selector] if selector.label_selector else [])]
    return f"cluster ({'; '.join(scope)})"


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
            by_digest.setdefault(client.manifest_digest(repository, tag), []).append(tag)
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


def _selected(tags: list[str], source: RegistrySource) -> list[str]:
    """The tags `source` wants: highest version first, then tags that are no version, by name (`semver` and
    `newest` keep versions only). Attachment tags (``sha256-<hex>.att``, ``.sig``, the referrers fallback) are
    never images."""
    chosen = [t for t in tags if fnmatch.fnmatchcase(t, source.tags) and not is_digest_tag(t)]
    versioned = [(v, t) for t in chosen if (v := _version(t)) is not None]
    if source.semver is not None:
        wanted = SpecifierSet(source.semver)
        versioned = [(v, t) for v, t in versioned if wanted.contains(v, prereleases=True)]
    ranked = [t for _, t in sorted(versioned, reverse=True)]
    if source.semver is not None or source.newest is not None:
        return ranked[: source.newest]
    return ranked + sorted(t for t in chosen if _version(t) is None)


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PAGE = 500


def discover_running(source: ClusterSource) -> list[str]:
    """The images of the Pods `source` selects, each once: ``<name>@<digest>`` where the Pod's status says which
    digest the node pulled (``imageID``, as the kubelet reports it), else the reference the Pod names."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    selector = source.kubernetes
    where = f"the cluster of {selector.kubeconfig or 'this environment'}"
    try:
        api = k8s.CoreV1Api(_api_client(source))
        pods = [pod for namespace in (selector.namespaces or [None]) for pod in _pods(api, namespace, selector)]
    except ApiException as e:
        if e.status in (401, 403):
            raise VulnattestError(f"{where} refused to list Pods ({e.status} {e.reason}); grant its identity `list` "
                                  "on pods (a ClusterRole, or a Role per namespace)") from None
        raise VulnattestError(f"{where} answered {e.status} {e.reason} listing Pods") from None
    except HTTPError as e:
        raise VulnattestError(f"cannot reach {where} ({type(e).__name__}); check the kubeconfig") from None
    images = [_running_ref(container.image, _pulled(pod).get(container.name))
              for pod in pods for container in _containers(pod)]
    found = list(dict.fromkeys(images))
    log.info("%s: found %d image(s) in %d Pod(s)", where, len(found), len(pods))
    return found


def _containers(pod: Any) -> list[Any]:
    spec = pod.spec
    return [*spec.containers, *(spec.init_containers or []), *(spec.ephemeral_containers or [])]


def _pulled(pod: Any) -> dict[str, str]:
    """Container name to the image ID its status reports (what the node pulled), where it has one."""
    status = pod.status
    if status is None:
        return {}
    statuses = [*(status.container_statuses or []), *(status.init_container_statuses or []),
                *(status.ephemeral_container_statuses or [])]
    return {s.name: s.image_id for s in statuses if s.image_id}


def _api_client(source: ClusterSource) -> Any:
    """A Kubernetes API client: from the kubeconfig named, else in the cluster (its service account), else from
    $KUBECONFIG or ~/.kube/config."""
    from kubernetes import client as k8s
    from kubernetes import config as kubeconfig
    from kubernetes.config.config_exception import ConfigException

    selector = source.kubernetes
    try:
        if selector.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            kubeconfig.load_incluster_config()
            return k8s.ApiClient()
        path = str(selector.kubeconfig) if selector.kubeconfig else None
        return kubeconfig.new_client_from_config(config_file=path, context=selector.context)
    except (ConfigException, OSError) as e:
        raise VulnattestError(f"cannot load the kubeconfig {selector.kubeconfig or '(default)'}: {e}") from None


def _pods(api: Any, namespace: str | None, selector: KubernetesSelector) -> list[Any]:
    """Every Pod of `namespace` (all namespaces when None) the label selector keeps, page by page."""
    pods: list[Any] = []
    token: str | None = None
    while True:
        kwargs = {"label_selector": selector.label_selector or "", "limit": _PAGE, "_continue": token}
        page = api.list_namespaced_pod(namespace, **kwargs) if namespace else api.list_pod_for_all_namespaces(**kwargs)
        pods += page.items
        token = page.metadata._continue
        if not token:
            return pods


def _running_ref(image: str, image_id: str | None) -> str:
    """What a container runs, as vulnattest names it: by the pulled digest when the status has one."""
    ref = ImageRef.parse(image)
    digest = _DIGEST.search(image_id or "")
    return f"{ref.name}@{digest.group(0)}" if digest else str(ref)
