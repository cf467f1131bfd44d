"""One root error for everything vulnattest raises, and a marker for what is worth retrying."""

from __future__ import annotations


class VulnattestError(Exception):
    """Root of every error vulnattest raises; the message names the object and what to do next."""


class TransientError(VulnattestError):
    """A failure worth retrying: a timeout, throttling, a 5xx answer or a dropped connection."""


class ConfigError(VulnattestError):
    """The fleet configuration is invalid."""


class ImageRefError(VulnattestError):
    """An image reference does not parse."""


class RegistryError(VulnattestError):
    """The registry refused or failed a request."""


class TransientRegistryError(RegistryError, TransientError):
    """The registry failed in a way that may pass: 429, 5xx, timeout, connection reset."""


class NotFoundError(RegistryError):
    """The registry has no such tag, manifest or blob."""


class ScanError(VulnattestError):
    """The scanner crashed, timed out or wrote output that does not parse."""


class StoreError(VulnattestError):
    """The report store refused or failed a request."""


class TransientStoreError(StoreError, TransientError):
    """The report store failed in a way that may pass."""


class TamperError(VulnattestError):
    """A stored report does not hash to the value computed before it was stored."""


class SigningError(VulnattestError):
    """A key could not be loaded or a payload could not be signed."""


class VerificationError(VulnattestError):
    """An attestation failed verification."""


def is_transient(exc: BaseException) -> bool:
    """Return True when `exc` (or what caused it) is worth retrying."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TransientError):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


def botocore_transient_errors() -> tuple[type[Exception], ...]:
    """botocore's failures of the connection itself (refused, reset, timed out, cut short): another try may pass.

    Their classes do not share a base short of BotoCoreError, which also covers what retrying cannot fix (no
    credentials, a bad parameter)."""
    from botocore.exceptions import ConnectionError, HTTPClientError, IncompleteReadError

    return (ConnectionError, HTTPClientError, IncompleteReadError)
