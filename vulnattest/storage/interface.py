"""The report-store protocol and the object keys reports are stored under."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from vulnattest.errors import StoreError
from vulnattest.images import ImageRef

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True)
class ObjectKey:
    """A relative, slash-separated key whose every segment is plain (no ``..``, no absolute path, no odd bytes)."""

    path: str

    def __post_init__(self) -> None:
        segments = self.path.split("/")
        if not all(_SAFE_SEGMENT.match(s) and ".." not in s for s in segments):
            raise StoreError(f"unsafe object key {self.path!r}: every segment must be [A-Za-z0-9._-], no '..'")

    @classmethod
    def join(cls, *parts: str) -> ObjectKey:
        """Build a key from parts, each segment cleaned to the safe alphabet (so no part can climb out)."""
        return cls("/".join(_clean(p) for part in parts for p in part.split("/") if p))


def _clean(segment: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", segment).replace("..", "__").lstrip("._-")
    return cleaned or "_"


def report_key(image: ImageRef, finished: datetime, suffix: str = "trivy.json") -> ObjectKey:
    """Key for a report: ``reports/<registry>/<repository>/sha256-<hex>/<finish time>.<suffix>``."""
    if image.digest is None:
        raise StoreError(f"{image} must be pinned to a digest before its report is stored")
    stamp = finished.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return ObjectKey.join("reports", image.registry, image.repository, image.digest.replace(":", "-"),
                          f"{stamp}.{suffix}")


@dataclass(frozen=True)
class StoredObject:
    """Where an object lives, and the sha256 the store recorded for it."""

    key: ObjectKey
    uri: str
    sha256: str
    version_id: str | None = None

    def __str__(self) -> str:
        return self.uri


class ReportStore(Protocol):
    """Persists reports (and small state documents) and reads them back."""

    def put(self, key: ObjectKey, body: bytes, sha256: str) -> StoredObject:
        """Persist `body` under `key`, recording `sha256`; return where it lives."""
        ...

    def read(self, stored: StoredObject) -> bytes:
        """Read back exactly the object `stored` names (its version, where the store keeps versions)."""
        ...

    def get(self, key: ObjectKey) -> bytes | None:
        """Read the current object under `key`, or None when there is none."""
        ...

    def close(self) -> None:
        """Release what the store holds open (an S3 client's connection pool)."""
        ...
