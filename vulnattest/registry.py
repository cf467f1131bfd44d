"""A small OCI distribution client: token and basic auth, manifests, blobs and tags, over one pooled connection."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from vulnattest.errors import NotFoundError, RegistryError, TransientRegistryError
from vulnattest.images import DOCKER_HUB, ImageRef

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def sha256_digest(data: bytes) -> str:
    """Return the OCI digest (``sha256:<hex>``) of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or identity token) for one registry; never logged."""

    username: str
    password: str = field(repr=False)


def docker_credentials(registry: str) -> Credentials | None:
    """Read credentials for `registry` from ``~/.docker/config.json`` and its credential helpers."""
    from docker import auth

    try:
        found = auth.resolve_authconfig(auth.load_config(), registry)
    except Exception as e:  # noqa: BLE001 - a broken helper must not stop anonymous pulls
        log.warning("could not read docker credentials for %s: %s", registry, type(e).__name__)
        return None
    if not found:
        return None
    # the docker package answers with lowercase keys from config.json and capitalised ones from credential helpers
    entry = {key.lower(): value for key, value in found.items()}
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"])
    if entry.get("identitytoken"):
        log.warning("the docker login for %s is an OAuth identity token, which vulnattest cannot use; log in "
                    "with a user name and password or token, or use a credential helper", registry)
    return None


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as the registry served it: exact bytes, media type and digest."""

    digest: str
    media_type: str
    body: bytes

    def json(self) -> dict[str, Any]:
        """Parse the manifest body."""
        try:
            parsed = json.loads(self.body)
        except ValueError as e:
            raise RegistryError(f"manifest {self.digest} is not JSON: {e}") from e
        if not isinstance(parsed, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return parsed

    @property
    def is_index(self) -> bool:
        """True for a multi-platform index or manifest list."""
        return self.media_type in INDEX_TYPES


class RegistryClient:
    """Talks to one registry host; thread-safe, with one connection pool and cached bearer tokens."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        api_host = "registry-1.docker.io" if host == DOCKER_HUB else host
        self.base_url = f"{'http' if insecure else 'https'}://{api_host}"
        self._credentials = credentials
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=timeout, follow_redirects=True, limits=httpx.Limits(max_connections=32))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def api_status(self, timeout: float) -> int:
        """The status ``GET /v2/`` answers without credentials (a registry: 200, or 401 asking for a login);
        raises httpx.TransportError when nothing answers."""
        return self._http.get(f"{self.base_url}/v2/", timeout=timeout).status_code

    # -- manifests ---------------------------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch a manifest or index by tag or digest, checking a digest reference against the bytes."""
        response = self._request(
            "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT},
            what=f"{self.host}/{repository}:{reference}",
        )
        body = response.content
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"{self.host}/{repository}@{reference}: registry served a manifest hashing to {digest}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if not media_type or media_type == "application/json":  # the body says (a body that is not JSON: an error)
            media_type = str(Manifest(digest, media_type, body).json().get("mediaType", OCI_MANIFEST))
        return Manifest(digest=digest, media_type=media_type, body=body)

    def find_manifest(self, repository: str, reference: str) -> Manifest | None:
        """Like `get_manifest`, but None when the registry has no such tag or digest."""
        try:
            return self.get_manifest(repository, reference)
        except NotFoundError:
            return None

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store a manifest under a tag or digest and return its digest."""
        self._request(
            "PUT", f"/v2/{repository}/manifests/{reference}", content=body,
            headers={"Content-Type": media_type}, what=f"{self.host}/{repository}:{reference}",
        )
        return sha256_digest(body)

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (the registry must allow deletes)."""
        self._request("DELETE", f"/v2/{repository}/manifests/{digest}", what=f"{self.host}/{repository}@{digest}")

    # -- blobs -------------------------------------------------------------------------------------------------

    def get_blob(self, repository: str, digest: str) -> bytes:
        """Fetch a blob and check it against its digest."""
        what = f"{self.host}/{repository}@{digest}"
        data = self._request("GET", f"/v2/{repository}/blobs/{digest}", what=what).content
        if sha256_digest(data) != digest:
            raise RegistryError(f"{self.host}/{repository}: blob {digest} does not match its digest")
        return data

    def has_blob(self, repository: str, digest: str) -> bool:
        """True when the repository already holds the blob."""
        try:
            self._request("HEAD", f"/v2/{repository}/blobs/{digest}", what=f"{self.host}/{repository}@{digest}")
        except NotFoundError:
            return False
        return True

    def push_blob(self, repository: str, data: bytes, *, check_exists: bool = True) -> str:
        """Upload a blob unless the repository already has it; return its digest.

        Callers skip the existence check for blobs that are almost never there (a fresh signature): uploading one
        again is harmless, a request per upload is not free."""
        digest = sha256_digest(data)
        if check_exists and self.has_blob(repository, digest):
            return digest
        what = f"{self.host}/{repository} blob upload"
        started = self._request("POST", f"/v2/{repository}/blobs/uploads/", what=what)
        location = started.headers.get("location")
        if not location:
            raise RegistryError(f"{what}: registry gave no upload location")
        url = httpx.URL(self.base_url).join(location)
        self._request(
            "PUT", str(url.copy_merge_params({"digest": digest})), content=data,
            headers={"Content-Type": "application/octet-stream"}, what=what,
        )
        return digest

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, what: str, headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        scope = _scope_for(path, method)
        response = self._send(method, url, headers, content, scope, what)
        if response.status_code == 401:
            self._authenticate(response, scope, what)
            response = self._send(method, url, headers, content, scope, what)
        if response.status_code < 400:
            return response
        detail = _error_detail(response)
        if response.status_code == 404:
            raise NotFoundError(f"{what}: not found ({detail}); check the name and tag, or that it was pushed")
        if response.status_code in _TRANSIENT_STATUS:
            raise TransientRegistryError(f"{what}: registry answered {response.status_code} ({detail}); retry later")
        if response.status_code in (401, 403):
            raise RegistryError(
                f"{what}: access denied ({response.status_code}, {detail}); "
                f"run `docker login {self.host}` with an account that may {method} here"
            )
        raise RegistryError(f"{what}: registry answered {response.status_code} ({detail})")

    def _send(
        self, method: str, url: str, headers: Mapping[str, str] | None, content: bytes | None, scope: str, what: str
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        token = self._tokens.get(scope)
        if token is not None:
            all_headers["Authorization"] = token
        try:
            return self._http.request(method, url, headers=all_headers, content=content)
        except httpx.TransportError as e:
            raise TransientRegistryError(
                f"{what}: cannot reach {self.base_url} ({type(e).__name__}: {e}); check the host, port and "
                "`registries.<host>.insecure` in the config"
            ) from e
        except httpx.RequestError as e:  # too many redirects, a body that does not decode: the answer is wrong
            raise RegistryError(f"{what}: {self.base_url} answered in a way no registry does ({type(e).__name__}: "
                                f"{e})") from e

    def _authenticate(self, response: httpx.Response, scope: str, what: str) -> None:
        challenge = response.headers.get("www-authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        creds = self._credentials
        if scheme == "basic":
            if creds is None:
                raise RegistryError(f"{what}: registry wants a login; run `docker login {self.host}`")
            basic = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            self._tokens[scope] = f"Basic {basic}"
            return
        if scheme != "bearer":
            raise RegistryError(f"{what}: unsupported auth challenge {challenge!r}")
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise RegistryError(f"{what}: bearer challenge without a realm")
        params["scope"] = params.get("scope") or scope
        auth = httpx.BasicAuth(creds.username, creds.password) if creds else None
        try:
            answer = self._http.get(realm, params=params, auth=auth)
        except httpx.TransportError as e:
            raise TransientRegistryError(f"{what}: cannot reach token service {realm} ({type(e).__name__})") from e
        if answer.status_code in _TRANSIENT_STATUS:
            raise TransientRegistryError(f"{what}: token service answered {answer.status_code}")
        if answer.status_code >= 400:
            raise RegistryError(
                f"{what}: token service refused ({answer.status_code}); run `docker login {self.host}`"
            )
        body = answer.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"{what}: token service gave no token")
        with self._lock:
            self._tokens[scope] = f"Bearer {token}"


def _scope_for(path: str, method: str) -> str:
    match = re.search(r"/v2/(.+?)/(?:manifests|blobs|tags|referrers)/", path)
    if not match:
        return "registry:catalog:*"
    action = "pull" if method in ("GET", "HEAD") else "pull,push"
    return f"repository:{match.group(1)}:{action}"


def _error_detail(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or response.reason_phrase
    except ValueError:
        return response.reason_phrase


class Registries:
    """One `RegistryClient` per host, created on first use with that host's settings and docker credentials."""

    def __init__(self, insecure_hosts: frozenset[str] = frozenset(), timeout: float = 30.0) -> None:
        self._insecure = insecure_hosts
        self._timeout = timeout
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def for_host(self, host: str) -> RegistryClient:
        """Return the client for `host`."""
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = RegistryClient(
                    host, insecure=host in self._insecure, credentials=docker_credentials(host), timeout=self._timeout
                )
                self._clients[host] = client
            return client

    def for_image(self, image: ImageRef) -> RegistryClient:
        """Return the client for the registry that serves `image`."""
        return self.for_host(image.registry)

    def close(self) -> None:
        """Close every client."""
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


@dataclass(frozen=True)
class ResolvedImage:
    """An image pinned to the digest that gets attested, and the platform manifest that gets scanned."""

    image: ImageRef
    digest: str
    media_type: str
    scan_digest: str
    platform: str | None = None

    def __str__(self) -> str:
        label = f"{self.image.name}:{self.image.tag}" if self.image.tag else self.image.name
        return f"{label}@{self.digest[:19]}"

    @property
    def scan_ref(self) -> str:
        """The reference the scanner pulls: the platform manifest by digest."""
        return f"{self.image.name}@{self.scan_digest}"


def resolve(client: RegistryClient, image: ImageRef, platform: str = "linux/amd64") -> ResolvedImage:
    """Pin `image` to its manifest digest; for an index, also pick the manifest of `platform` to scan."""
    manifest = client.get_manifest(image.repository, image.reference)
    pinned = image.with_digest(manifest.digest)
    if not manifest.is_index:
        return ResolvedImage(pinned, manifest.digest, manifest.media_type, manifest.digest)
    wanted = platform.split("/")
    for entry in manifest.json().get("manifests", []):
        plat = entry.get("platform") or {}
        have = [plat.get("os"), plat.get("architecture")] + ([plat["variant"]] if plat.get("variant") else [])
        if have[: len(wanted)] == wanted and len(wanted) >= 2:
            return ResolvedImage(pinned, manifest.digest, manifest.media_type, str(entry["digest"]), platform)
    available = sorted(
        "/".join(filter(None, [p.get("os"), p.get("architecture"), p.get("variant")]))
        for p in (m.get("platform") or {} for m in manifest.json().get("manifests", []))
    )
    raise RegistryError(
        f"{pinned.pinned} has no {platform} manifest (it has: {', '.join(available) or 'none'}); "
        "set `platform` in the config to one of those"
    )
