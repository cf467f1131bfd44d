"""The fleet configuration file: YAML in, validated models out, with errors that name the file, line and field."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from vulnattest.errors import ConfigError, ImageRefError
from vulnattest.images import ImageRef
from vulnattest.registry import is_loopback
from vulnattest.scanners.interface import SEVERITIES, Severity
from vulnattest.text import go_regexp

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$"
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DEFAULT_STORE = "file://./vulnattest-reports"
MAX_CONCURRENCY = 64


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


def clear_text_off_host(url: str) -> str | None:
    """The host of an ``http://`` URL that leaves this machine (its traffic readable and changeable on the way),
    else None."""
    parsed = urlparse(url)
    if parsed.scheme != "http":
        return None
    host = parsed.hostname or ""
    return None if is_loopback(host) or is_loopback(f"[{host}]") else host


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class RegistrySettings(_Strict):
    """Per-registry settings; credentials come from ``~/.docker/config.json``, never from this file."""

    insecure: bool = Field(False, description="speak plain HTTP (a loopback registry falls back to it without)")
    timeout: Duration = Field(timedelta(seconds=30), description="per-request timeout (each request is retried on its "
                              "own after one)")


class RegistrySource(_Strict):
    """Images found in a registry at each run rather than listed: its repositories matching `repositories` (the
    catalog API, only when a pattern has a wildcard), their tags matching `tags`, `semver` and `newest`, one per
    digest."""

    registry: str = Field(min_length=1, pattern=r"^[A-Za-z0-9.-]+(:[0-9]+)?$", description="host[:port]")
    repositories: tuple[str, ...] = Field(min_length=1, description="repository names or glob patterns "
                                          "(team/*, */api); a name without a wildcard needs no catalog access")
    tags: str = Field("*", min_length=1, description="glob pattern the tags must match")
    semver: str | None = Field(None, min_length=1, description="version range the tags must fall in, e.g. "
                               "'>=1.4,<2' (a leading v is ignored; tags that are no version are skipped)")
    newest: int | None = Field(None, ge=1, description="only the N highest versions of each repository")

    @field_validator("semver")
    @classmethod
    def _range(cls, value: str | None) -> str | None:
        if value is not None:
            from packaging.specifiers import InvalidSpecifier, SpecifierSet

            try:
                SpecifierSet(value)
            except InvalidSpecifier as e:
                raise ValueError(f"semver {value!r} is not a version range like '>=1.4,<2'") from e
        return value


class KubernetesSelector(_Strict):
    """Which cluster, and which of its Pods."""

    kubeconfig: Path | None = Field(None, description="kubeconfig file (default: in the cluster, its service "
                                    "account; outside, $KUBECONFIG or ~/.kube/config)")
    context: str | None = Field(None, min_length=1, description="kubeconfig context (default: its current one)")
    namespaces: tuple[str, ...] = Field((), description="only Pods in these namespaces (default: every namespace)")
    label_selector: str | None = Field(None, min_length=1, description="only Pods with these labels, e.g. "
                                       "'tier=prod,app!=debug'")


class ClusterSource(_Strict):
    """Images found running in a Kubernetes cluster at each run: every container of the selected Pods (init and
    ephemeral ones too), by the digest the node pulled where the Pod's status has it."""

    kubernetes: KubernetesSelector


def _source_kind(value: object) -> str:
    if isinstance(value, dict):
        return "kubernetes" if "kubernetes" in value else "registry"
    return "kubernetes" if isinstance(value, ClusterSource) else "registry"


Source = Annotated[Annotated[RegistrySource, Tag("registry")] | Annotated[ClusterSource, Tag("kubernetes")],
                   Discriminator(_source_kind)]


class TrivySettings(_Strict):
    """How Trivy runs."""

    path: str = Field("trivy", description="the trivy binary, a path or a name on PATH")
    cache_dir: Path | None = Field(None, description="Trivy's cache (DB and layer analysis)")
    offline: bool = Field(False, description="never download the DB or touch the network except the registry")
    ignore_unfixed: bool = Field(False, description="report only vulnerabilities that have a fix")
    severities: tuple[Severity, ...] = Field(SEVERITIES, description="severities to report")
    timeout: Duration = Field(timedelta(minutes=10), description="per-image scan timeout")
    db_repository: str = Field("mirror.gcr.io/aquasec/trivy-db:2", description="where Trivy gets its DB")
    server: str = Field("local", description="where scans find the DB: `local` (a Trivy server started for each "
                        "run), `standalone` (every scan on its own, layers cached in memory), or a shared Trivy "
                        "server's URL")
    token_env: str = Field("VULNATTEST_TRIVY_TOKEN", description="environment variable holding the shared Trivy "
                           "server's token")
    allow_http: bool = Field(False, description="allow a shared Trivy server at an http:// URL off this machine "
                             "(its token and the findings it answers, which get signed, travel in clear text)")

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        if value in ("local", "standalone") or urlparse(value).scheme in ("http", "https"):
            return value.rstrip("/")
        raise ValueError(f"{value!r} is none of local, standalone or a Trivy server URL (https://host:4954)")

    @model_validator(mode="after")
    def _server_over_tls(self) -> TrivySettings:
        host = clear_text_off_host(self.server)
        if host is not None and not self.allow_http:
            raise ValueError(f"the Trivy server on {host} is reached over plain http://: anyone on the way could "
                             "change the findings that get signed; use https://, or set allow_http: true")
        return self


class ScannerSettings(_Strict):
    """Which scanner to use (Trivy, the one with a cosign vuln output)."""

    trivy: TrivySettings = TrivySettings()


class StoreSettings(_Strict):
    """Where reports are kept."""

    url: str = Field(DEFAULT_STORE, description="file:///dir, a path, or s3://bucket/prefix")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, …)")
    region: str | None = Field(None, description="S3 region (default: boto3's)")
    timeout: Duration = Field(timedelta(seconds=60), description="per-request read timeout (S3; each request is "
                              "retried on its own after one)")
    allow_http: bool = Field(False, description="allow an http:// endpoint_url off this machine (reports and "
                             "request signatures travel in clear text)")

    @model_validator(mode="after")
    def _endpoint_over_tls(self) -> StoreSettings:
        host = clear_text_off_host(self.endpoint_url or "")
        if host is not None and not self.allow_http:
            raise ValueError(f"the S3 endpoint on {host} is reached over plain http://: anyone on the way could read "
                             "or replace the reports; use https://, or set allow_http: true")
        return self

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if "://" in url and not url.startswith(("file://", "s3://")):
            raise ValueError(f"unsupported store URL {url!r}: use file:///dir or s3://bucket/prefix")
        return url


KEY_URI_SCHEMES = ("awskms://",)
KEYLESS = "keyless"


def _key_ref(value: Any) -> Any:
    """A signing key reference: ``keyless``, a KMS URI (kept as text) or a file path."""
    if isinstance(value, str):
        text = value.strip()
        if text == KEYLESS or text.startswith(KEY_URI_SCHEMES):
            return text
        if "://" in text:
            raise ValueError(f"unsupported key URI {text!r}: use a file path, awskms://… or keyless")
        return Path(text)
    return value


KeyRef = Annotated[Path | str, BeforeValidator(_key_ref)]


class CertificateIdentitySettings(_Strict):
    """One keyless signer to accept: exactly one of subject / subject_regexp and of issuer / issuer_regexp."""

    subject: str | None = Field(None, description="certificate SAN, e.g. an email or a CI workflow URI")
    subject_regexp: str | None = Field(None, description="searched like Go's regexp.MatchString; anchor with ^…$")
    issuer: str | None = Field(None, description="OIDC issuer, e.g. https://token.actions.githubusercontent.com")
    issuer_regexp: str | None = Field(None, description="searched like Go's regexp.MatchString")

    @model_validator(mode="after")
    def _one_of_each(self) -> CertificateIdentitySettings:
        if (self.subject is None) == (self.subject_regexp is None):
            raise ValueError("set exactly one of subject and subject_regexp")
        if (self.issuer is None) == (self.issuer_regexp is None):
            raise ValueError("set exactly one of issuer and issuer_regexp")
        for pattern in (self.subject_regexp, self.issuer_regexp):
            if pattern is not None:
                try:
                    go_regexp(pattern)
                except re.error as e:
                    raise ValueError(f"invalid regular expression {pattern!r}: {e}") from e
        return self


class KeylessSettings(_Strict):
    """Where keyless signing gets its Sigstore deployment and its OIDC identity."""

    trust_config: Path | None = Field(
        None, description="Sigstore ClientTrustConfig JSON of a private deployment (default: public Sigstore via TUF)")
    identity_token_file: Path | None = Field(
        None, description="a file holding the OIDC token (e.g. a projected Kubernetes token, audience sigstore)")


class SigningSettings(_Strict):
    """How attestations are signed (a key file, a KMS key or keyless) and which signers verify accepts."""

    key: KeyRef = Field(Path("keys/vulnattest.key"),
                        description="PEM or cosign.key file, awskms:///<key id|alias/name|arn>, or keyless")
    password_secret: str | None = Field(
        None, description="name of a Prefect Secret block holding the key file's password "
                          "(default: VULNATTEST_KEY_PASSWORD or COSIGN_PASSWORD)")
    public_keys: tuple[KeyRef, ...] = Field(
        (), description="PEM public key files or awskms:// keys trusted by verify (default: the signing key's)")
    keyless: KeylessSettings = KeylessSettings()
    identities: tuple[CertificateIdentitySettings, ...] = Field(
        (), description="keyless certificate identities trusted by verify")
    trusted_root: Path | None = Field(
        None, description="Sigstore trusted_root.json of a private deployment (default: public Sigstore via TUF)")
    roots: Path | None = Field(None, description="PEM CA certificates keyless certificates must chain to")
    rekor_public_keys: tuple[Path, ...] = Field((), description="PEM public keys of trusted Rekor logs")
    ctlog_public_keys: tuple[Path, ...] = Field((), description="PEM public keys of trusted CT logs")
    rekor_url: str | None = Field(None, description="the Rekor log Kyverno consults (default: public Rekor)")
    ignore_tlog: bool = Field(
        False, description="accept keyless attestations without a Rekor entry (private deployments without a log)")
    ignore_sct: bool = Field(False, description="accept certificates without an SCT (private CAs without a CT log)")

    @model_validator(mode="after")
    def _password_for_key_files(self) -> SigningSettings:
        if self.password_secret is not None and not isinstance(self.key, Path):
            raise ValueError("password_secret is the password of a key file; signing.key is not one")
        return self

    def trusted_public_keys(self) -> tuple[Path | str, ...]:
        """The configured public keys; else, when no identities are configured, the signing key's own (the ``.pub``
        beside a key file, or the KMS key). With identities configured, list any keys to keep trusting."""
        if self.public_keys or self.identities:
            return self.public_keys
        if isinstance(self.key, Path):
            return (self.key.with_suffix(".pub"),)
        return () if self.key == KEYLESS else (self.key,)

    def resolved_against(self, base: Path) -> SigningSettings:
        """Resolve relative file paths against `base`; URIs and ``keyless`` stay as they are."""

        def absolute(path: Path) -> Path:
            return path if path.is_absolute() else (base / path.expanduser()).resolve()

        def ref(value: Path | str) -> Path | str:
            return absolute(value) if isinstance(value, Path) else value

        def optional(path: Path | None) -> Path | None:
            return absolute(path) if path is not None else None

        return self.model_copy(update={
            "key": ref(self.key),
            "public_keys": tuple(ref(p) for p in self.public_keys),
            "keyless": self.keyless.model_copy(update={
                "trust_config": optional(self.keyless.trust_config),
                "identity_token_file": optional(self.keyless.identity_token_file),
            }),
            "trusted_root": optional(self.trusted_root),
            "roots": optional(self.roots),
            "rekor_public_keys": tuple(absolute(p) for p in self.rekor_public_keys),
            "ctlog_public_keys": tuple(absolute(p) for p in self.ctlog_public_keys),
        })


class ChangeSettings(_Strict):
    """What a scan compared with the image's previous scan tells on-call (webhook and Prefect block channels)."""

    severity: Severity = Field("HIGH", description="new vulnerabilities at or above this severity are news")
    fixable: bool = Field(True, description="a known vulnerability (at or above severity) that got a fix is news")


class FreshnessSettings(_Strict):
    """How old a scan may be before admission refuses the image, when to warn, and how often to remind."""

    max_age: Duration = Field(timedelta(hours=168), description="Kyverno's time_since limit on scanFinishedOn")
    warn_before: Duration | None = Field(
        None, description="how long before the deadline to warn (default: scan_interval + admission_cache + margin)"
    )
    scan_interval: Duration = Field(timedelta(hours=24), description="how often scan-and-attest runs")
    admission_cache: Duration = Field(
        timedelta(hours=1), description="how long Kyverno caches a verification result (its default is 1h)"
    )
    margin: Duration = Field(timedelta(hours=5), description="slack for a failed or slow scan run")
    remind_every: Duration = Field(
        timedelta(hours=24), description="repeat an alert this often while an image stays bad"
    )
    digest_threshold: int = Field(
        5, ge=1, description="more alerts than this for one channel in one run go out as one digest message"
    )

    def effective_warn_before(self) -> timedelta:
        """`warn_before`, or the default: one missed scan interval plus Kyverno's cache plus a margin."""
        if self.warn_before is not None:
            return self.warn_before
        return self.scan_interval + self.admission_cache + self.margin

    @model_validator(mode="after")
    def _warn_inside_max_age(self) -> FreshnessSettings:
        warn = self.effective_warn_before()
        if warn >= self.max_age:
            raise ValueError(
                f"warn_before ({format_duration(warn)}) must be shorter than max_age "
                f"({format_duration(self.max_age)}), or every image is always expiring; lower warn_before "
                "(or scan_interval, admission_cache, margin) or raise max_age"
            )
        if self.max_age - warn < self.scan_interval:
            raise ValueError(
                f"max_age - warn_before ({format_duration(self.max_age - warn)}) is shorter than scan_interval "
                f"({format_duration(self.scan_interval)}), so healthy images turn expiring before each scheduled "
                "scan and alert every time; set scan_interval to how often scan-and-attest runs, or lower warn_before"
            )
        return self


def _utc_moment(value: Any) -> Any:
    """A date means 00:00 UTC that day; a datetime without a zone is read as UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        return datetime.combine(date.fromisoformat(value.strip()), time(0), tzinfo=UTC)
    return value


UtcMoment = Annotated[datetime, BeforeValidator(_utc_moment)]
VulnId = Annotated[str, Field(min_length=1, pattern=r"^\S+$"), BeforeValidator(lambda v: str(v).strip().upper())]


class AllowEntry(_Strict):
    """A vulnerability accepted for a while, with the reason it was accepted."""

    id: VulnId = Field(description="vulnerability ID, e.g. CVE-2024-1234 or GHSA-…")
    reason: str = Field(min_length=1, description="why it is accepted (shown in alerts and reports)")
    expires: UtcMoment = Field(description="when the entry stops applying (a date means 00:00 UTC that day)")


def _vex_location(value: Any) -> str:
    """A VEX document's place: a file path, or an https:// URL (plain http:// only on this machine)."""
    text = str(value).strip()
    if "://" in text:
        if urlparse(text).scheme not in ("http", "https") or not urlparse(text).hostname:
            raise ValueError(f"unsupported VEX location {text!r}: use a file path or an https:// URL")
        host = clear_text_off_host(text)
        if host is not None:
            raise ValueError(f"the VEX document on {host} is fetched over plain http://: anyone on the way could "
                             "add statements that hide vulnerabilities; use https://")
    elif not text:
        raise ValueError("empty VEX location: give a file path or an https:// URL")
    return text


VexLocation = Annotated[str, BeforeValidator(_vex_location)]


class PolicyOverride(_Strict):
    """Policy changes for the images whose reference matches one of `images` (shell-style patterns)."""

    images: tuple[str, ...] = Field(min_length=1, description="patterns such as registry.example/team/*")
    severity: Severity | None = Field(None, description="replaces the fleet's severity threshold")
    fixed_only: bool | None = Field(None, description="replaces the fleet's fixed_only")
    allow: tuple[AllowEntry, ...] = Field((), description="added to the fleet's allow list")
    deny: tuple[VulnId, ...] = Field((), description="added to the fleet's deny list")
    vex: tuple[VexLocation, ...] = Field((), description="OpenVEX documents added to the fleet's, for these images")


class PolicySettings(_Strict):
    """The vulnerability policy applied to each attested scan report."""

    severity: Severity | None = Field(None, description="fail on findings at or above this severity")
    fixed_only: bool = Field(False, description="count only findings that have a fixed version")
    allow: tuple[AllowEntry, ...] = Field((), description="accepted vulnerabilities, each with reason and expiry")
    deny: tuple[VulnId, ...] = Field((), description="vulnerabilities that always fail, whatever the allow list")
    allow_warning: Duration = Field(
        timedelta(days=7), description="warn this long before an allow entry an image relies on expires"
    )
    overrides: tuple[PolicyOverride, ...] = Field((), description="per-image changes, applied in order")
    vex: tuple[VexLocation, ...] = Field(
        (), description="OpenVEX documents (files or https:// URLs): their not_affected and fixed statements "
                        "suppress findings in the images they name, with no expiry; scans pass them to Trivy")
    vex_attestations: bool = Field(
        False, description="also honour OpenVEX attestations attached to an image (predicate type "
                           "https://openvex.dev/ns), when signed by a signer signing trusts")

    def vex_locations(self) -> tuple[str, ...]:
        """Every VEX document the config names, the fleet's and the overrides', once each, in file order."""
        return tuple(dict.fromkeys([*self.vex, *(v for o in self.overrides for v in o.vex)]))

    def resolved_against(self, base: Path) -> PolicySettings:
        """Resolve relative VEX file paths against `base`; URLs stay as they are."""

        def absolute(location: str) -> str:
            path = Path(location).expanduser()
            return location if "://" in location or path.is_absolute() else str((base / path).resolve())

        return self.model_copy(update={
            "vex": tuple(map(absolute, self.vex)),
            "overrides": tuple(o.model_copy(update={"vex": tuple(map(absolute, o.vex))}) for o in self.overrides),
        })


PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


def channel_id(name: str | None, *, webhook: SecretStr | None = None, block: str | None = None,
               pagerduty: SecretStr | None = None, alertmanager: str | None = None) -> str:
    """What the alert state knows a channel by: its configured name, else ``webhook:<host>#<hash of the URL>`` (the
    URL may hold a token), ``prefect-block:<block>``, ``pagerduty#<hash of the key>`` or ``alertmanager:<host>``."""
    if name:
        return name
    if webhook is not None:
        url = webhook.get_secret_value()
        fingerprint = hashlib.sha256(url.encode()).hexdigest()[:10]
        return f"webhook:{urlparse(url).netloc.rpartition('@')[2]}#{fingerprint}"
    if pagerduty is not None:
        return f"pagerduty#{hashlib.sha256(pagerduty.get_secret_value().encode()).hexdigest()[:10]}"
    if alertmanager is not None:
        return f"alertmanager:{urlparse(alertmanager).netloc.rpartition('@')[2]}"
    return f"prefect-block:{block}"


class AlertChannelSettings(_Strict):
    """One alert channel: a plain JSON webhook, a Prefect notification block saved under a name, PagerDuty, or
    Alertmanager (the last two know each image's incident by the image, so a fresh image resolves it)."""

    webhook: SecretStr | None = Field(None, description="URL that receives a JSON POST per alert (kept secret)")
    prefect_block: str | None = Field(None, min_length=1, description="name of a saved notification block")
    pagerduty: SecretStr | None = Field(None, description="a PagerDuty Events API v2 routing (integration) key: one "
                                        "incident per image, resolved when it is fresh again (kept secret)")
    pagerduty_url: str = Field(PAGERDUTY_EVENTS_URL, description="PagerDuty's events endpoint (EU accounts: "
                               "https://events.eu.pagerduty.com/v2/enqueue)")
    alertmanager: str | None = Field(None, description="an Alertmanager's URL, e.g. http://alertmanager:9093: one "
                                     "alert per image (labels alertname, image), resolved when it is fresh again")
    name: str | None = Field(None, min_length=1, description="how alerts and logs name this channel")
    timeout: Duration = Field(timedelta(seconds=10), description="per-request timeout (webhook, PagerDuty, "
                              "Alertmanager)")
    allow_http: bool = Field(False, description="allow an http:// webhook or Alertmanager off this machine (the "
                             "alerts, and any token in the URL, travel in clear text)")

    @property
    def id(self) -> str:
        """The channel's `channel_id`."""
        return channel_id(self.name, webhook=self.webhook, block=self.prefect_block, pagerduty=self.pagerduty,
                          alertmanager=self.alertmanager)

    @model_validator(mode="after")
    def _exactly_one(self) -> AlertChannelSettings:
        given = [self.webhook, self.prefect_block, self.pagerduty, self.alertmanager]
        if sum(kind is not None for kind in given) != 1:
            raise ValueError("give exactly one of `webhook: URL`, `prefect_block: NAME`, `pagerduty: ROUTING_KEY` or "
                             "`alertmanager: URL`")
        urls = {"webhook": self.webhook.get_secret_value() if self.webhook else None,
                "alertmanager": self.alertmanager,
                "pagerduty_url": self.pagerduty_url if self.pagerduty else None}
        for what, text in urls.items():
            if text is None:
                continue
            url = urlparse(text)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"{what} must be an http:// or https:// URL")
            host = clear_text_off_host(text)
            if host is not None and not self.allow_http:
                raise ValueError(f"the {what} on {host} is reached over plain http://: the alerts, and any token in "
                                 "its URL, travel in clear text; use https://, or set allow_http: true")
        return self


class MetricsSettings(_Strict):
    """Prometheus metrics of every run, pushed to a Pushgateway (the flows are batch jobs, not servers to scrape)."""

    pushgateway: str | None = Field(None, description="the Pushgateway's URL, e.g. http://pushgateway:9091 (none: "
                                    "no metrics)")
    job: str = Field("vulnattest", min_length=1, description="the job label of the pushed metrics")
    timeout: Duration = Field(timedelta(seconds=10), description="per-push timeout")
    allow_http: bool = Field(False, description="allow an http:// Pushgateway off this machine")

    @model_validator(mode="after")
    def _reachable_safely(self) -> MetricsSettings:
        if self.pushgateway is not None:
            url = urlparse(self.pushgateway)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError("pushgateway must be an http:// or https:// URL")
            host = clear_text_off_host(self.pushgateway)
            if host is not None and not self.allow_http:
                raise ValueError(f"the Pushgateway on {host} is reached over plain http://; use https://, or set "
                                 "allow_http: true")
        return self


class FleetConfig(_Strict):
    """The whole fleet configuration."""

    images: tuple[ImageText, ...] = Field((), description="image references, by tag or digest")
    sources: tuple[Source, ...] = Field((), description="registries (their repositories and tags) and clusters "
                                        "(their running Pods) that add images at each run")
    platform: str = Field("linux/amd64", pattern=r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$",
                          description="the platform scanned in a multi-platform image (the index is attested)")
    registries: dict[str, RegistrySettings] = Field({}, description="settings per registry host[:port]")
    scanner: ScannerSettings = ScannerSettings()
    store: StoreSettings = StoreSettings()
    signing: SigningSettings = SigningSettings()
    freshness: FreshnessSettings = FreshnessSettings()
    policy: PolicySettings = PolicySettings()
    alerts: tuple[AlertChannelSettings, ...] = ()
    metrics: MetricsSettings = MetricsSettings()
    changes: ChangeSettings = ChangeSettings()
    concurrency: int = Field(4, ge=1, le=MAX_CONCURRENCY, description="images processed at once by one flow run")
    image_timeout: Duration = Field(timedelta(minutes=30), description="the longest one image may take through "
                                    "scan-and-attest, retries included (no retry starts past it)")
    attach_lock_dir: Path | None = Field(None, description="where file locks live (default "
                                         "$XDG_RUNTIME_DIR/vulnattest/locks, else ~/.cache/vulnattest/locks); every "
                                         "process on the host must use the same")
    attach: Literal["legacy", "bundle", "both"] = Field(
        "legacy", description="where attestations go: cosign's .att tag (legacy: what Kyverno `type: Cosign` reads), "
        "Sigstore bundle referrers (bundle: cosign v3's default, Kyverno `type: SigstoreBundle` and "
        "ImageValidatingPolicy), or both",
    )
    attach_lock: Literal["file", "prefect"] = Field(
        "file", description="how writers of one image's attestations are serialised: file locks on this host, "
        "or global concurrency limits on the Prefect server (workers on many hosts)",
    )

    @model_validator(mode="after")
    def _time_for_a_scan(self) -> FleetConfig:
        if self.image_timeout <= self.scanner.trivy.timeout:
            raise ValueError(f"image_timeout ({format_duration(self.image_timeout)}) must be longer than "
                             f"scanner.trivy.timeout ({format_duration(self.scanner.trivy.timeout)}): a scan has to "
                             "fit in it, with the other stages and their retries")
        return self

    @model_validator(mode="after")
    def _insecure_reaches_its_registry_alone(self) -> FleetConfig:
        # Trivy's --insecure, which a scan of an insecure registry's image needs, also stops it checking the TLS of
        # the Trivy server it asks: a shared server elsewhere would then answer findings anyone could change
        server = self.scanner.trivy.server
        insecure = sorted(host for host, settings in self.registries.items() if settings.insecure)
        if insecure and urlparse(server).scheme == "https" and not is_loopback(urlparse(server).netloc):
            raise ValueError(f"registries {', '.join(insecure)} are insecure, and Trivy's --insecure would stop it "
                             f"checking the TLS of the Trivy server {urlparse(server).netloc} too; scan those images "
                             "with scanner.trivy.server: local (or standalone), or serve them over TLS")
        return self

    @field_validator("alerts")
    @classmethod
    def _distinct_channels(cls, alerts: tuple[AlertChannelSettings, ...]) -> tuple[AlertChannelSettings, ...]:
        # the alert state keeps what each channel was told under the channel's id: two alike would share it
        seen: dict[str, int] = {}
        for i, channel in enumerate(alerts):
            key = channel.id
            if key in seen:
                raise ValueError(f"alerts[{i}] is the same channel as alerts[{seen[key]}] (same name, or same URL or "
                                 "block); give each channel a distinct name")
            seen[key] = i
        return alerts

    def image_refs(self) -> list[ImageRef]:
        """The fleet's images, parsed, without duplicates, in file order."""
        return list(dict.fromkeys(ImageRef.parse(text) for text in self.images))

    def with_images(self, images: list[str]) -> FleetConfig:
        """This config for only `images` (validated like the file's own list)."""
        try:
            return FleetConfig.model_validate({**self.model_dump(), "images": images})
        except ValidationError as e:
            problems = "; ".join(error["msg"].removeprefix("Value error, ") for error in e.errors())
            raise ConfigError(f"invalid image: {problems}") from e

    def registry_timeouts(self) -> dict[str, float]:
        """Per-host request timeouts, in seconds, where the config sets them."""
        return {host: settings.timeout.total_seconds() for host, settings in self.registries.items()}

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
            "attach_lock_dir": absolute(self.attach_lock_dir) if self.attach_lock_dir else None,
            "signing": self.signing.resolved_against(base),
            "policy": self.policy.resolved_against(base),
            "sources": tuple(
                source.model_copy(update={"kubernetes": source.kubernetes.model_copy(
                    update={"kubeconfig": absolute(source.kubernetes.kubeconfig)})})
                if isinstance(source, ClusterSource) and source.kubernetes.kubeconfig else source
                for source in self.sources
            ),
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
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_expansion(root, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        # from None: the parser's own message quotes the line, which may hold a webhook token, and Prefect logs
        # the whole chain of a failed run
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the config must be a mapping (images:, store:, …), not {type(data).__name__}")
    try:
        config = FleetConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for error in e.errors():
            # a source's kind (the union's tag pydantic puts in the path) is no key of the file
            loc = tuple(p for i, p in enumerate(error["loc"])
                        if not (i == 2 and error["loc"][0] == "sources" and p in ("registry", "kubernetes")))
            field = ".".join(str(p) for p in loc) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key; see the configuration reference in README.md"
            if len(message) > MAX_MESSAGE:  # a value echoed back: the start says which
                message = message[:MAX_MESSAGE] + "… (cut short)"
            problems.append(f"{source}:{_line_of(root, loc)}: {field}: {message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None  # as above: input values
    return config.resolved_against(base or Path.cwd())


MAX_CONFIG_VALUES = 100_000
"""The most values a config may hold once its YAML aliases are expanded (a billion-laughs file holds billions)."""
MAX_MESSAGE = 300


def _check_expansion(root: yaml.Node | None, source: str) -> None:
    """Refuse a document whose aliases (``*name``) expand it past `MAX_CONFIG_VALUES`, or that refers to itself,
    before anything is built from it."""
    sizes: dict[int, int] = {}
    building: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in building:
            raise ConfigError(f"{source}:{node.start_mark.line + 1}: a YAML alias refers to the value it is in")
        building.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_CONFIG_VALUES:
                raise ConfigError(f"{source}:{node.start_mark.line + 1}: the config expands to over "
                                  f"{MAX_CONFIG_VALUES} values through YAML aliases (*name); write the values out")
        building.discard(key)
        sizes[key] = total
        return total

    if root is not None:
        size(root)


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
