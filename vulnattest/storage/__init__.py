"""Report stores (local directory, S3) behind one protocol, and the read-back tamper check."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vulnattest.errors import StoreError, TamperError
from vulnattest.storage.interface import ObjectKey, ReportStore, StoredObject, report_key

__all__ = ["ObjectKey", "ReportStore", "StoredObject", "VerifiedReport", "open_store", "report_key", "verify_stored"]


@dataclass(frozen=True)
class VerifiedReport:
    """A stored report whose bytes, read back from the store, hash to the value computed at scan time."""

    stored: StoredObject

    @property
    def uri(self) -> str:
        """Where the report lives."""
        return self.stored.uri

    @property
    def sha256(self) -> str:
        """The verified hex sha256."""
        return self.stored.sha256


def verify_stored(store: ReportStore, stored: StoredObject, expected_sha256: str) -> VerifiedReport:
    """Read the report back, recompute its sha256 and compare it with the hash taken before storing."""
    actual = hashlib.sha256(store.read(stored)).hexdigest()
    if actual != expected_sha256 or stored.sha256 != expected_sha256:
        raise TamperError(
            f"stored report {stored.uri} does not match its scan: expected sha256 {expected_sha256}, "
            f"read back {actual} (store recorded {stored.sha256}); the report was altered after the scan, "
            "so no attestation was made: find out who can write to the store, then rerun"
        )
    return VerifiedReport(stored)


def open_store(url: str, *, endpoint_url: str | None = None, region: str | None = None,
               timeout: float = 60.0) -> ReportStore:
    """Open the store a URL names: ``file:///dir``, a plain path, or ``s3://bucket/prefix`` (`timeout`: S3's read
    timeout per request)."""
    if url.startswith("s3://"):
        from vulnattest.storage.s3 import S3ReportStore

        return S3ReportStore.from_url(url, endpoint_url=endpoint_url, region=region, timeout=timeout)
    if url.startswith("file://") or "://" not in url:
        from vulnattest.storage.local import LocalReportStore

        return LocalReportStore.from_url(url)
    raise StoreError(f"unsupported store URL {url!r}: use file:///path or s3://bucket/prefix")
