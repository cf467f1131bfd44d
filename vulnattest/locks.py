"""Locks that serialise writers of one image's attestations: in-process, or across processes on one host."""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vulnattest.errors import VulnattestError


def default_lock_dir() -> Path:
    """Where file locks live unless the config says (``attach_lock_dir``): ``$XDG_RUNTIME_DIR/vulnattest/locks``,
    else ``~/.cache/vulnattest/locks``. Never under TMPDIR: two runs with different temporary directories (a
    systemd PrivateTmp) must still lock the same files."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vulnattest" / "locks"


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
    """``flock`` on one of a fixed set of lock files: serialises threads and processes that share a filesystem.

    The directory must be this user's and writable by no one else: a lock file another user could replace or hold
    would let them stall or unserialise the writers."""

    def __init__(self, directory: Path | None = None, shards: int = 256) -> None:
        self.directory = directory or default_lock_dir()
        self.shards = shards
        self._checked = False

    def _ready(self) -> None:
        if self._checked:
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = self.directory.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise VulnattestError(
                f"the lock directory {self.directory} is not this user's alone (owner uid {info.st_uid}, mode "
                f"{stat.filemode(info.st_mode)}); set attach_lock_dir to a directory only this user can write"
            )
        self._checked = True

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        self._ready()
        path = self.directory / f"attach-{shard_of(key, self.shards):03d}.lock"
        # every holder opens its own file description, so threads of one process exclude each other too
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
