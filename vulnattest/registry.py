"""A small OCI distribution client: token and basic auth, manifests, blobs and tags, over one pooled connection."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
from pydantic import ValidationError

from vulnattest.errors import (
    NotFoundError,
    RegistryAuthError,
    RegistryError,
    RegistryUnreachableError,
    TransientRegistryError,
    is_transient_status,
    retry_after_seconds,
)
from vulnattest.images import DOCKER_HUB, ImageRef, is_digest
from vulnattest.retrying import REQUEST_RETRIES, RetryPolicy
from vulnattest.wire import Descriptor, ErrorAnswer, ManifestDocument, Platform, TokenAnswer, first_error

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
# what a registry may send: a manifest or any JSON answer as much as distribution accepts (4 MiB), a blob what its
# descriptor declares and at most cosign's attachment limit (128 MiB, COSIGN_MAX_ATTACHMENT_SIZE's default); at
# least this fast once its headers came (a body that trickles in is cut off, whatever the read timeout says)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_BLOB_BYTES = 128 * 1024 * 1024
MIN_BYTES_PER_SECOND = 256 * 1024
MAX_LISTED = 100_000  # repositories of a catalog, tags of a repository
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_LOOPBACK_HOST = re.compile(r"^(localhost|127(\.\d{1,3}){3}|\[::1\]|::1)(:\d+)?$")

def is_loopback(host: str) -> bool:
    """True for a registry on this machine (``localhost``, 127.0.0.0/8, ``::1``, with or without a port)."""
    return bool(_LOOPBACK_HOST.match(host))


def sha256_digest(data: bytes) -> str:
    """Return the OCI digest (``sha256:<hex>``) of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BodyTooLarge(Exception):
    """A body went past its size limit (`read_bounded`); the caller says whose."""


class BodyTooSlow(Exception):
    """A body came slower than `MIN_BYTES_PER_SECOND` allows (`read_bounded`); the caller says whose."""

    def __init__(self, received: int, seconds: float) -> None:
        super().__init__(f"{received} bytes in {seconds:.0f} s")
        self.received, self.seconds = received, seconds


def read_bounded(response: httpx.Response, limit: int, timeout: float) -> bytes:
    """The body of a streamed `response`: at most `limit` bytes (decoded), all within `timeout` seconds plus the
    time `limit` bytes take at `MIN_BYTES_PER_SECOND`; raises BodyTooLarge or BodyTooSlow past either."""
    seconds = timeout + limit / MIN_BYTES_PER_SECOND
    cutoff = time.monotonic() + seconds
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
        if time.monotonic() > cutoff:
            raise BodyTooSlow(len(body), seconds)
    return bytes(body)


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

    def document(self) -> ManifestDocument:
        """The manifest or index its model reads (a part that does not fit is absent); RegistryError for a body
        that is no JSON object."""
        try:
            return ManifestDocument.read_json(self.body)
        except ValidationError as e:
            what = "not a JSON object" if e.errors()[0]["type"] == "model_type" else f"not JSON: {first_error(e)}"
            raise RegistryError(f"manifest {self.digest} is {what}") from None

    @property
    def is_index(self) -> bool:
        """True for a multi-platform index or manifest list."""
        return self.media_type in INDEX_TYPES


class RegistryClient:
    """Talks to one registry host; thread-safe, with one connection pool and cached bearer tokens.

    Each request is retried on its own (`retries`) when the registry answers 408, 425, 429 or 5xx or the connection
    fails, honouring ``Retry-After``. A registry on this machine that is not configured `insecure` is tried over
    HTTPS first and over plain HTTP when TLS fails, as docker and go-containerregistry do for loopback registries.
    """

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        timeout: float = 30.0,
        retries: RetryPolicy = REQUEST_RETRIES,
    ) -> None:
        self.host = host
        self._api_host = "registry-1.docker.io" if host == DOCKER_HUB else host
        self._scheme = "http" if insecure else "https"
        self._may_fall_back = not insecure and is_loopback(host)
        self._credentials = credentials
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._retries = retries
        self._timeout = timeout
        self._http = httpx.Client(timeout=timeout, follow_redirects=True, limits=httpx.Limits(max_connections=32))

    @property
    def base_url(self) -> str:
        """``<scheme>://<host>``, the scheme being the one this registry was found to speak."""
        return f"{self._scheme}://{self._api_host}"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def api_status(self, timeout: float) -> int:
        """The status ``GET /v2/`` answers without credentials (a registry: 200, or 401 asking for a login);
        raises httpx.TransportError when nothing answers."""
        try:
            return self._status(f"{self.base_url}/v2/", timeout)
        except httpx.TransportError as e:
            if not (_tls_failed(e) and self._fall_back()):
                raise
            return self._status(f"{self.base_url}/v2/", timeout)

    def _status(self, url: str, timeout: float) -> int:
        with self._http.stream("GET", url, timeout=timeout) as response:  # the status alone: no body is read
            return response.status_code

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
            media_type = Manifest(digest, media_type, body).document().media_type or OCI_MANIFEST
        return Manifest(digest=digest, media_type=media_type, body=body)

    def manifest_digest(self, repository: str, reference: str) -> str:
        """The digest of the manifest `reference` names, from a HEAD request (the registry's
        ``Docker-Content-Digest``); the manifest is read whole only where the registry does not say."""
        response = self._request("HEAD", f"/v2/{repository}/manifests/{reference}",
                                 headers={"Accept": MANIFEST_ACCEPT}, what=f"{self.host}/{repository}:{reference}")
        digest = response.headers.get("docker-content-digest", "")
        return digest if is_digest(digest) else self.get_manifest(repository, reference).digest

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

    def put_referrer(self, repository: str, body: bytes) -> tuple[str, bool]:
        """Store an OCI image manifest that has a ``subject``, by digest; return its digest and whether the registry
        indexed it for the referrers API (the ``OCI-Subject`` header), so the fallback tag needs no update."""
        digest = sha256_digest(body)
        response = self._request("PUT", f"/v2/{repository}/manifests/{digest}", content=body,
                                 headers={"Content-Type": OCI_MANIFEST}, what=f"{self.host}/{repository}@{digest}")
        return digest, "oci-subject" in response.headers

    def referrers(self, repository: str, digest: str) -> list[Descriptor] | None:
        """The descriptors of `digest`'s referrers from the referrers API, or None when the registry has no such
        API (it answers 404, as distribution 2.8 does)."""
        what = f"{self.host}/{repository}@{digest} referrers"
        try:
            response = self._request("GET", f"/v2/{repository}/referrers/{digest}", headers={"Accept": OCI_INDEX},
                                     what=what)
        except NotFoundError:
            return None
        try:
            manifests = ManifestDocument.read_json(response.content).manifests
        except ValidationError as e:
            raise RegistryError(f"{what}: the registry answered what is not an OCI index ({first_error(e)})") from None
        return [m for m in manifests or [] if m is not None and m.digest]

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (the registry must allow deletes)."""
        self._request("DELETE", f"/v2/{repository}/manifests/{digest}", what=f"{self.host}/{repository}@{digest}")

    # -- listings ----------------------------------------------------------------------------------------------

    def catalog(self, page_size: int = 1000) -> list[str]:
        """Every repository the registry lists (its catalog API, page by page)."""
        return self._listing(f"/v2/_catalog?n={page_size}", "repositories", f"{self.host} catalog")

    def tags(self, repository: str, page_size: int = 1000) -> list[str]:
        """Every tag of `repository` (the tags API, page by page)."""
        return self._listing(f"/v2/{repository}/tags/list?n={page_size}", "tags", f"{self.host}/{repository} tags")

    def _listing(self, path: str, key: str, what: str) -> list[str]:
        names: list[str] = []
        following: str | None = path
        while following is not None:
            response = self._request("GET", following, what=what)
            try:
                page = response.json().get(key) or []
            except (ValueError, AttributeError) as e:
                raise RegistryError(f"{what}: the registry answered what is not a listing") from e
            if not isinstance(page, list) or not all(isinstance(name, str) for name in page):
                raise RegistryError(f"{what}: the registry's {key} are not a list of names")
            names += page
            if len(names) > MAX_LISTED:
                raise RegistryError(f"{what}: more than {MAX_LISTED} entries; name the repositories without "
                                    "wildcards, or narrow the pattern")
            following = self._next_page(response.headers.get("link"), what)
        return names

    def _next_page(self, link: str | None, what: str) -> str | None:
        """The path of the next page a ``Link: <…>; rel="next"`` header names, on this registry only."""
        match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link or "")
        if match is None:
            return None
        url = httpx.URL(self.base_url).join(match.group(1))
        if url.host != httpx.URL(self.base_url).host or url.port != httpx.URL(self.base_url).port:
            raise RegistryError(f"{what}: the registry's next page is on another host ({url.host})")
        return url.raw_path.decode()

    # -- blobs -------------------------------------------------------------------------------------------------

    def get_blob(self, repository: str, digest: str, size: object = None) -> bytes:
        """Fetch a blob and check it against its digest, reading no more than its descriptor's `size` declares (when
        it declares one) and never over `MAX_BLOB_BYTES`."""
        what = f"{self.host}/{repository}@{digest}"
        limit = MAX_BLOB_BYTES
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            if size > MAX_BLOB_BYTES:
                raise RegistryError(f"{what}: its descriptor declares {size} bytes, over the {MAX_BLOB_BYTES >> 20} "
                                    "MiB cosign and vulnattest read; attest the image again to replace it")
            limit = size
        data = self._request("GET", f"/v2/{repository}/blobs/{digest}", what=what, limit=limit).content
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
        again is harmless, a request per upload is not free. A failed upload is retried whole (a new upload
        session), never by resending into a session the registry may have closed."""
        digest = sha256_digest(data)
        if check_exists and self.has_blob(repository, digest):
            return digest
        what = f"{self.host}/{repository} blob upload"
        self._retries.call(lambda: self._upload(repository, data, digest, what), what)
        return digest

    def _upload(self, repository: str, data: bytes, digest: str, what: str) -> None:
        started = self._request_once("POST", f"/v2/{repository}/blobs/uploads/", what, None, None)
        location = started.headers.get("location")
        if not location:
            raise RegistryError(f"{what}: registry gave no upload location")
        url = httpx.URL(self.base_url).join(location)
        self._request_once("PUT", str(url.copy_merge_params({"digest": digest})), what,
                           {"Content-Type": "application/octet-stream"}, data)

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, what: str, headers: Mapping[str, str] | None = None,
        content: bytes | None = None, limit: int = MAX_MANIFEST_BYTES,
    ) -> httpx.Response:
        """One request, tried again on its own while it fails transiently (`RegistryClient`'s retries)."""
        return self._retries.call(lambda: self._request_once(method, path, what, headers, content, limit), what)

    def _request_once(
        self, method: str, path: str, what: str, headers: Mapping[str, str] | None, content: bytes | None,
        limit: int = MAX_MANIFEST_BYTES,
    ) -> httpx.Response:
        scope = _scope_for(path, method)
        response = self._send(method, path, headers, content, scope, what, limit)
        if response.status_code == 401:
            self._authenticate(response, scope, what)
            response = self._send(method, path, headers, content, scope, what, limit)
        if response.status_code < 400:
            return response
        status = response.status_code
        detail = _error_detail(response)
        if status == 404:
            raise NotFoundError(f"{what}: not found ({detail}); check the name and tag, or that it was pushed")
        if is_transient_status(status):
            raise TransientRegistryError(f"{what}: registry answered {status} ({detail}); retry later",
                                         retry_after=retry_after_seconds(response.headers.get("retry-after")))
        if status in (401, 403):
            raise RegistryAuthError(
                f"{what}: access denied ({status}, {detail}); run `docker login {self.host}` with an account that "
                f"may {method} here", registry=self.host,
            )
        raise RegistryError(f"{what}: registry answered {status} ({detail})")

    def _send(
        self, method: str, path: str, headers: Mapping[str, str] | None, content: bytes | None, scope: str, what: str,
        limit: int = MAX_MANIFEST_BYTES,
    ) -> httpx.Response:
        all_headers = {"Accept-Encoding": "identity", **(headers or {})}
        token = self._tokens.get(scope)
        if token is not None:
            all_headers["Authorization"] = token
        while True:
            url = path if path.startswith(("http://", "https://")) else self.base_url + path
            try:
                request = self._http.build_request(method, url, headers=all_headers, content=content)
                return self._bounded(self._http.send(request, stream=True), limit, what)
            except httpx.TransportError as e:
                if _tls_failed(e) and not path.startswith(("http://", "https://")) and self._fall_back():
                    continue
                raise RegistryUnreachableError(
                    f"{what}: cannot reach {self.base_url} ({type(e).__name__}: {e}); check the host, port and "
                    "`registries.<host>.insecure` in the config", registry=self.host,
                ) from e
            except httpx.RequestError as e:  # too many redirects, a body that does not decode: the answer is wrong
                raise RegistryError(f"{what}: {self.base_url} answered in a way no registry does "
                                    f"({type(e).__name__}: {e})") from e

    def _bounded(self, response: httpx.Response, limit: int, what: str) -> httpx.Response:
        """`response` with its body read, at most `limit` bytes of it (decoded, so a compressed body cannot expand
        past it either) and at no less than `MIN_BYTES_PER_SECOND` after the first `timeout` seconds."""
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise RegistryError(f"{what}: the registry would send {int(declared)} bytes, more than the {limit} "
                                    "this answer may have; refusing to read it")
            body = read_bounded(response, limit, self._timeout)
        except BodyTooLarge:
            raise RegistryError(f"{what}: the registry sent more than the {limit} bytes this answer may have; "
                                "refusing the rest") from None
        except BodyTooSlow as e:
            raise TransientRegistryError(f"{what}: the registry sent {e.received} bytes in {e.seconds:.0f} s and was "
                                         "cut off; check the registry or the network") from None
        finally:
            response.close()
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(response.status_code, headers=headers, content=bytes(body), request=response.request)

    def _fall_back(self) -> bool:
        """Switch a loopback registry from HTTPS to plain HTTP after HTTPS failed; False when that was done."""
        with self._lock:
            if not self._may_fall_back:
                return False
            self._may_fall_back = False
            self._scheme = "http"
        log.info("%s: HTTPS failed; speaking plain HTTP to this loopback registry", self.host)
        return True

    def _authenticate(self, response: httpx.Response, scope: str, what: str) -> None:
        challenge = response.headers.get("www-authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        creds = self._credentials
        if scheme == "basic":
            if creds is None:
                raise RegistryAuthError(f"{what}: registry wants a login; run `docker login {self.host}`",
                                        registry=self.host)
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
            request = self._http.build_request("GET", realm, params=params, headers={"Accept-Encoding": "identity"})
            answer = self._bounded(self._http.send(request, auth=auth, stream=True), MAX_MANIFEST_BYTES, what)
        except httpx.TransportError as e:
            raise RegistryUnreachableError(f"{what}: cannot reach token service {realm} ({type(e).__name__})",
                                           registry=self.host) from e
        except httpx.RequestError as e:
            raise RegistryError(f"{what}: token service {realm} answered in a way none does ({type(e).__name__})"
                                ) from e
        if is_transient_status(answer.status_code):
            raise TransientRegistryError(f"{what}: token service answered {answer.status_code}",
                                         retry_after=retry_after_seconds(answer.headers.get("retry-after")))
        if answer.status_code >= 400:
            raise RegistryAuthError(
                f"{what}: token service refused ({answer.status_code}); run `docker login {self.host}`",
                registry=self.host,
            )
        try:
            token = TokenAnswer.read_json(answer.content).bearer
        except ValidationError as e:
            raise RegistryError(f"{what}: token service {realm} answered what is no token ({first_error(e)}; status "
                                f"{answer.status_code}, {answer.headers.get('content-type', 'no content type')}); "
                                "check the registry's auth setup") from None
        if not token:
            raise RegistryError(f"{what}: token service {realm} answered without a token (status "
                                f"{answer.status_code}, {answer.headers.get('content-type', 'no content type')}); "
                                "check the registry's auth setup")
        with self._lock:
            self._tokens[scope] = f"Bearer {token}"


def _tls_failed(error: BaseException) -> bool:
    """Whether a connection failed in its TLS handshake (a plain-HTTP server answers TLS with garbage)."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, ssl.SSLError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _scope_for(path: str, method: str) -> str:
    match = re.search(r"/v2/(.+?)/(?:manifests|blobs|tags|referrers)/", path)
    if not match:
        return "registry:catalog:*"
    action = "pull" if method in ("GET", "HEAD") else "pull,push"
    return f"repository:{match.group(1)}:{action}"


def _error_detail(response: httpx.Response) -> str:
    try:
        return ErrorAnswer.read_json(response.content).detail() or response.reason_phrase
    except ValidationError:
        return response.reason_phrase


class Registries:
    """One `RegistryClient` per host, created on first use with that host's settings and docker credentials."""

    def __init__(self, insecure_hosts: frozenset[str] = frozenset(), timeout: float = 30.0,
                 timeouts: Mapping[str, float] | None = None) -> None:
        self._insecure = insecure_hosts
        self._timeout = timeout
        self._timeouts = dict(timeouts or {})
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def for_host(self, host: str) -> RegistryClient:
        """Return the client for `host`."""
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = RegistryClient(
                    host, insecure=host in self._insecure, credentials=docker_credentials(host),
                    timeout=self._timeouts.get(host, self._timeout),
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
    size: int | None = None
    """The attested manifest's size in bytes (a referrer's ``subject`` descriptor carries it)."""

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
    size = len(manifest.body)
    if not manifest.is_index:
        return ResolvedImage(pinned, manifest.digest, manifest.media_type, manifest.digest, size=size)
    wanted = platform.split("/")
    entries = [m for m in manifest.document().manifests or [] if m is not None]
    for entry in entries:
        plat = entry.platform or Platform()
        have = [plat.os, plat.architecture] + ([plat.variant] if plat.variant else [])
        if have[: len(wanted)] == wanted and len(wanted) >= 2:
            if not entry.digest.startswith("sha256:"):
                raise RegistryError(f"{pinned.pinned}: its index names a {platform} manifest without a sha256 digest; "
                                    "the index is broken: push the image again")
            return ResolvedImage(pinned, manifest.digest, manifest.media_type, entry.digest, platform, size)
    available = sorted(m.platform.name() for m in entries if m.platform is not None)
    raise RegistryError(
        f"{pinned.pinned} has no {platform} manifest (it has: {', '.join(available) or 'none'}); "
        "set `platform` in the config to one of those"
    )


def check_pullable(client: RegistryClient, image: ResolvedImage) -> None:
    """Check the registry serves the manifest `image` scans and every blob it names (HEAD, no download); raise the
    registry's own error (not found, denied, failing) when it does not."""
    manifest = client.get_manifest(image.image.repository, image.scan_digest).document()
    for descriptor in [manifest.config, *(manifest.layers or [])]:
        if descriptor is None or not descriptor.digest:
            raise RegistryError(f"{image.image.name}@{image.scan_digest}: the manifest names a blob without a digest")
        if not client.has_blob(image.image.repository, descriptor.digest):
            raise NotFoundError(f"{image.image.name}@{image.scan_digest}: blob {descriptor.digest} is missing from "
                                "the registry; push the image again")
