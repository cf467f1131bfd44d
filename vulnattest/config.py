"""The fleet configuration file: YAML in, validated models out, with errors that name the file, line and field."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from vulnattest.errors import ConfigError, ImageRefError
from vulnattest.images import ImageRef
from vulnattest.scanners.interface import SEVERITIES, Severity

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DEFAULT_STORE = "file://./vulnattest-reports"


def parse_duration(value: Any) -> timedelta:
    """Parse a Go-style duration (``90s``, ``10m``, ``168h``, ``1h30m``; also ``7d``) or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    text = str(value).strip().replace(" ", "")
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 90s, 10m, 168h or 1h30m")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def format_duration(value: timedelta) -> str:
    """Format a duration the way Go prints one (``170h3m2s``), as Kyverno's ``time_since`` returns it."""
    seconds = int(value.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _image_text(value: Any) -> str:
    try:
        ImageRef.parse(str(value))
    except ImageRefError as e:
        raise ValueError(str(e)) from e
    return str(value)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
ImageText = Annotated[str, BeforeValidator(_image_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistrySettings(_Strict):
    """Per-registry settings; credentials come from ``~/.docker/config.json``, never from this file."""

    insecure: bool = Field(False, description="speak plain HTTP (loopback and lab registries only)")


class TrivySettings(_Strict):
    """How Trivy runs."""

    path: str = Field("trivy", description="the trivy binary, a path or a name on PATH")
    cache_dir: Path | None = Field(None, description="Trivy's cache (DB and layer analysis)")
    offline: bool = Field(False, description="never download the DB or touch the network except the registry")
    ignore_unfixed: bool = Field(False, description="report only vulnerabilities that have a fix")
    severities: tuple[Severity, ...] = Field(SEVERITIES, description="severities to report")
    timeout: Duration = Field(timedelta(minutes=10), description="per-image scan timeout")
    db_repository: str = Field("mirror.gcr.io/aquasec/trivy-db:2", description="where Trivy gets its DB")


class ScannerSettings(_Strict):
    """Which scanner to use (Trivy, the one with a cosign vuln output)."""

    trivy: TrivySettings = TrivySettings()


class StoreSettings(_Strict):
    """Where reports are kept."""

    url: str = Field(DEFAULT_STORE, description="file:///dir, a path, or s3://bucket/prefix")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, …)")
    region: str | None = None

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if "://" in url and not url.startswith(("file://", "s3://")):
            raise ValueError(f"unsupported store URL {url!r}: use file:///dir or s3://bucket/prefix")
        return url


class SigningSettings(_Strict):
    """The signing key and the public keys trusted when verifying."""

    key: Path = Field(Path("keys/vulnattest.key"), description="PEM ECDSA P-256 private key")
    public_keys: tuple[Path, ...] = Field((), description="PEM public keys trusted by verify (default: key's .pub)")

    def trusted_public_keys(self) -> tuple[Path, ...]:
        """The configured public keys, or the public half written beside the signing key."""
        return self.public_keys or (self.key.with_suffix(".pub"),)


class FreshnessSettings(_Strict):
    """How old a scan may be before admission refuses the image."""

    max_age: Duration = Field(timedelta(hours=168), description="Kyverno's time_since limit on scanFinishedOn")
    warn_before: Duration | None = Field(None, description="how long before the deadline to warn")


class FleetConfig(_Strict):
    """The whole fleet configuration."""

    images: tuple[ImageText, ...] = ()
    platform: str = Field("linux/amd64", pattern=r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
    registries: dict[str, RegistrySettings] = {}
    scanner: ScannerSettings = ScannerSettings()
    store: StoreSettings = StoreSettings()
    signing: SigningSettings = SigningSettings()
    freshness: FreshnessSettings = FreshnessSettings()
    concurrency: int = Field(4, ge=1, le=64)

    def image_refs(self) -> list[ImageRef]:
        """The fleet's images, parsed, without duplicates, in file order."""
        return list(dict.fromkeys(ImageRef.parse(text) for text in self.images))

    def insecure_registries(self) -> frozenset[str]:
        """Hosts to speak plain HTTP to."""
        return frozenset(host for host, settings in self.registries.items() if settings.insecure)

    def resolved_against(self, base: Path) -> FleetConfig:
        """Resolve relative paths in the config against `base` (the config file's directory)."""

        def absolute(path: Path) -> Path:
            return path if path.is_absolute() else (base / path.expanduser()).resolve()

        trivy = self.scanner.trivy
        store_url = self.store.url
        if store_url.startswith("file://") and not store_url.startswith("file:///"):
            store_url = absolute(Path(store_url.removeprefix("file://"))).as_uri()
        elif "://" not in store_url:
            store_url = absolute(Path(store_url)).as_uri()
        return self.model_copy(update={
            "scanner": ScannerSettings(trivy=trivy.model_copy(
                update={"cache_dir": absolute(trivy.cache_dir) if trivy.cache_dir else None})),
            "store": self.store.model_copy(update={"url": store_url}),
            "signing": self.signing.model_copy(update={
                "key": absolute(self.signing.key),
                "public_keys": tuple(absolute(p) for p in self.signing.public_keys),
            }),
        })


def load_config(path: Path) -> FleetConfig:
    """Read and validate a fleet configuration file; relative paths in it are relative to the file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
    return parse_config(text, source=str(path), base=path.resolve().parent)


def parse_config(text: str, *, source: str = "<config>", base: Path | None = None) -> FleetConfig:
    """Validate YAML `text`; errors name `source`, the line and the field, and what is expected."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the config must be a mapping (images:, store:, …), not {type(data).__name__}")
    try:
        config = FleetConfig.model_validate(data)
    except ValidationError as e:
        root = yaml.compose(text)
        problems = []
        for error in e.errors():
            loc = tuple(error["loc"])
            field = ".".join(str(p) for p in loc) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key; see the configuration reference in README.md"
            problems.append(f"{source}:{_line_of(root, loc)}: {field}: {message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from e
    return config.resolved_against(base or Path.cwd())


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the YAML node at `loc`, or of its deepest ancestor that exists."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
