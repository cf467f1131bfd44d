"""A report store in S3 (or any S3-compatible service) through boto3, with SHA-256 checksums on every upload."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vulnattest.errors import StoreError, TransientStoreError, botocore_transient_errors
from vulnattest.storage.interface import ObjectKey, StoredObject

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_THROTTLING = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                         "ServiceUnavailable"})


@dataclass(frozen=True)
class S3ReportStore:
    """Stores objects under ``s3://bucket/prefix``; keeps the version id when the bucket is versioned."""

    bucket: str
    prefix: str
    client: S3Client

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                 timeout: float = 60.0) -> S3ReportStore:
        """Open ``s3://bucket/prefix``; credentials come from boto3's usual chain (env, profile, role)."""
        parsed = urlparse(url)
        if not parsed.netloc:
            raise StoreError(f"store URL {url!r} names no bucket: use s3://bucket/prefix")
        client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region,
            # each request retried on its own (5xx, throttling, timeouts, resets), with backoff and jitter
            config=Config(retries={"mode": "standard", "total_max_attempts": 5}, max_pool_connections=32,
                          connect_timeout=10, read_timeout=timeout),
        )
        return cls(bucket=parsed.netloc, prefix=parsed.path.strip("/"), client=client)

    def _key(self, key: ObjectKey) -> str:
        return f"{self.prefix}/{key.path}" if self.prefix else key.path

    def _uri(self, key: ObjectKey) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def close(self) -> None:
        """Close the client's connection pool."""
        self.client.close()

    def put(self, key: ObjectKey, body: bytes, sha256: str) -> StoredObject:
        """Upload `body` with its SHA-256 as the S3 checksum and as object metadata."""
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        with _errors(self._uri(key), "write"):
            answer = self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=body, ChecksumSHA256=checksum,
                ContentType="application/json", Metadata={"sha256": sha256},
            )
        return StoredObject(key=key, uri=self._uri(key), sha256=sha256, version_id=answer.get("VersionId"))

    def read(self, stored: StoredObject) -> bytes:
        """Read exactly the version that was written, where the bucket keeps versions."""
        with _errors(stored.uri, "read"):
            if stored.version_id:
                answer = self.client.get_object(Bucket=self.bucket, Key=self._key(stored.key),
                                                VersionId=stored.version_id)
            else:
                answer = self.client.get_object(Bucket=self.bucket, Key=self._key(stored.key))
            return bytes(answer["Body"].read())

    def get(self, key: ObjectKey) -> bytes | None:
        """Read the current object under `key`, or None."""
        try:
            with _errors(self._uri(key), "read"):
                answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                return bytes(answer["Body"].read())
        except _Missing:
            return None


class _Missing(StoreError):
    pass


@contextmanager
def _errors(uri: str, action: str) -> Iterator[None]:
    """Turn botocore failures into store errors that name the object and say whether to retry."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in ("NoSuchKey", "404", "NoSuchVersion"):
            raise _Missing(f"{uri} does not exist") from exc
        if code in _THROTTLING or status >= 500:
            raise TransientStoreError(f"cannot {action} {uri}: {code} ({status}); retry later") from exc
        if code == "RequestTimeTooSkewed":
            hint = "this machine's clock is off; set it right (NTP)"
        elif status in (403, 404):
            hint = "check the bucket exists and the credentials may use it"
        else:
            hint = "see the code"
        raise StoreError(f"cannot {action} {uri}: {code}: {error.get('Message', '')}; {hint}") from exc
    except botocore_transient_errors() as exc:
        raise TransientStoreError(f"cannot {action} {uri}: {exc}; retry, or check store.endpoint_url") from exc
    except BotoCoreError as exc:
        raise StoreError(f"cannot {action} {uri}: {exc}") from exc
