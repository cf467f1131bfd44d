"""A report store in a local directory; each object has a ``.sha256`` file beside it."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from vulnattest.errors import StoreError
from vulnattest.storage.interface import ObjectKey, StoredObject


@dataclass(frozen=True)
class LocalReportStore:
    """Stores objects as files below `root`, written atomically."""

    root: Path

    @classmethod
    def from_url(cls, url: str) -> LocalReportStore:
        """Open ``file:///dir`` (or a plain path), creating the directory if needed."""
        path = Path(unquote(urlparse(url).path)) if url.startswith("file://") else Path(url)
        return cls(path.expanduser().resolve())

    def _path(self, key: ObjectKey) -> Path:
        path = (self.root / key.path).resolve()
        if not path.is_relative_to(self.root):
            raise StoreError(f"object key {key.path!r} escapes the store at {self.root}")
        return path

    def close(self) -> None:
        """Nothing to release: each read and write opens and closes its file."""

    def put(self, key: ObjectKey, body: bytes, sha256: str) -> StoredObject:
        """Write `body` and its sha256 file atomically."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, body)
            _atomic_write(path.with_name(path.name + ".sha256"), f"{sha256}  {path.name}\n".encode())
        except OSError as e:
            raise StoreError(f"cannot write {path}: {e.strerror}; check the directory exists and is writable") from e
        return StoredObject(key=key, uri=path.as_uri(), sha256=sha256)

    def read(self, stored: StoredObject) -> bytes:
        """Read the file `stored` names."""
        body = self.get(stored.key)
        if body is None:
            raise StoreError(f"{stored.uri} is gone from the store")
        return body

    def get(self, key: ObjectKey) -> bytes | None:
        """Read the file under `key`, or None."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e.strerror}") from e


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before it is named: an attestation may point at it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
