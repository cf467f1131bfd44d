"""Locks that serialise writers of one image's attestations: in-process, or across processes on one host."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / f"vulnattest-locks-{os.getuid()}"


def shard_of(key: str, shards: int) -> int:
    """Which of `shards` locks guards `key` (stable across processes and hosts)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % shards


class ThreadLocks:
    """One in-process lock per key: serialises the threads of one process only."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def __call__(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks[key]


class FileLocks:
    """``flock`` on one of a fixed set of lock files: serialises threads and processes that share a filesystem."""

    def __init__(self, directory: Path = DEFAULT_LOCK_DIR, shards: int = 256) -> None:
        self.directory = directory
        self.shards = shards

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / f"attach-{shard_of(key, self.shards):03d}.lock"
        # every holder opens its own file description, so threads of one process exclude each other too
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
