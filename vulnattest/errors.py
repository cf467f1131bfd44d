"""One root error for everything vulnattest raises, a marker for what is worth retrying, and the one rule that says
which HTTP answers are worth another try."""

from __future__ import annotations

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP answers that may pass on another try: request timeout, too early, throttled, and the server failing or a
gateway in front of it. Every client of vulnattest (registry, probe, alerts, keyless, Trivy's failures) uses this."""


def is_transient_status(status: int) -> bool:
    """True for an HTTP status worth retrying (`TRANSIENT_STATUSES`)."""
    return status in TRANSIENT_STATUSES


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (its delta-seconds form; an HTTP date counts as no advice)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class VulnattestError(Exception):
    """Root of every error vulnattest raises; the message names the object and what to do next.

    `hint` is what to do next where the kind of failure alone says it (a subclass per such cause); empty otherwise,
    the message being all there is to go on."""

    @property
    def hint(self) -> str:
        """What to do next, from the kind of failure; empty when only the message can say."""
        return ""


class TransientError(VulnattestError):
    """A failure worth retrying: a timeout, throttling, a 5xx answer or a dropped connection.

    `retry_after` is the server's own advice (``Retry-After``), in seconds, when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(VulnattestError):
    """The fleet configuration is invalid."""

    @property
    def hint(self) -> str:
        """Fix the file."""
        return "fix the configuration where the message points, then run the command again"


class ImageRefError(VulnattestError):
    """An image reference does not parse."""


class RegistryError(VulnattestError):
    """The registry refused or failed a request."""


class TransientRegistryError(RegistryError, TransientError):
    """The registry failed in a way that may pass: 429, 5xx, timeout, connection reset."""


class RegistryUnreachableError(TransientRegistryError):
    """Nothing answers at the registry's address (refused, reset, timed out, a failed TLS handshake)."""

    def __init__(self, message: str, *, registry: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.registry = registry

    @property
    def hint(self) -> str:
        """Check the registry and the way to it."""
        return f"check that {self.registry} is up and reachable from here"


class RegistryAuthError(RegistryError):
    """The registry wants credentials it was not given, or refused the ones it was given."""

    def __init__(self, message: str, *, registry: str) -> None:
        super().__init__(message)
        self.registry = registry

    @property
    def hint(self) -> str:
        """Log in to the registry."""
        return f"run `docker login {self.registry}`"


class NotFoundError(RegistryError):
    """The registry has no such tag, manifest or blob."""


class ScanError(VulnattestError):
    """The scanner crashed, timed out or wrote output that does not parse."""


class TransientScanError(ScanError, TransientError):
    """The scanner failed for a reason that may pass (the registry failing under it, a lock held by another scan)."""


class ScanTimeoutError(ScanError):
    """The scanner ran past its timeout and was stopped; not retried (another try would likely hang as long)."""


class StoreError(VulnattestError):
    """The report store refused or failed a request."""


class TransientStoreError(StoreError, TransientError):
    """The report store failed in a way that may pass."""


class TamperError(VulnattestError):
    """A stored report does not hash to the value computed before it was stored."""

    @property
    def hint(self) -> str:
        """Someone else writes to the store."""
        return "find out who else can write to the report store, then run the image again"


class SigningError(VulnattestError):
    """A key could not be loaded or a payload could not be signed."""


class KeyPasswordError(SigningError):
    """The signing key is encrypted and no password, or a wrong one, was given."""

    @property
    def hint(self) -> str:
        """Give the key's password."""
        return ("set VULNATTEST_KEY_PASSWORD (COSIGN_PASSWORD for a cosign.key), or the Secret block "
                "signing.password_secret names, to the key's password")


class VerificationError(VulnattestError):
    """An attestation failed verification."""


def is_transient(exc: BaseException) -> bool:
    """Return True when `exc` (or what caused it) is worth retrying."""
    return transient_cause(exc) is not None


def transient_cause(exc: BaseException) -> TransientError | None:
    """The TransientError `exc` is or was caused by, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TransientError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def botocore_transient_errors() -> tuple[type[Exception], ...]:
    """botocore's failures of the connection itself (refused, reset, timed out, cut short): another try may pass.

    Their classes do not share a base short of BotoCoreError, which also covers what retrying cannot fix (no
    credentials, a bad parameter)."""
    from botocore.exceptions import ConnectionError, HTTPClientError, IncompleteReadError

    return (ConnectionError, HTTPClientError, IncompleteReadError)
