"""A program run in the background on a loopback port until closed (a Trivy server, a Prefect server, the demo's
registry), which never outlives the process that started it, even when that one is killed."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from vulnattest.errors import VulnattestError

_PR_SET_PDEATHSIG = 1
# resolved here, in the parent: the child, between fork and exec, must not load anything (another thread of the
# parent may have held the loader's lock when it forked)
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this (child) process when the thread that started it ends, however it ends (SIGKILL
    included), and put it in a process group of its own so a stop reaches whatever it starts in turn. For
    ``subprocess.Popen(preexec_fn=...)``."""
    os.setpgrp()
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _parent_death_prefix() -> tuple[str, ...]:
    """A command prefix that sets the parent-death signal, then execs the command (util-linux's setpriv, on every
    Debian and Ubuntu); none where it is missing, and the command then outlives a killed parent."""
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "TERM", "--") if setpriv else ()


PARENT_DEATH = _parent_death_prefix()
"""Put before a command started from a thread that waits for it (a scan): it is SIGTERMed if that thread ends."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StartedUntilStopped:
    """A context manager over ``start()`` (which returns the object) and ``stop()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalService(StartedUntilStopped):
    """Starts a command, waits until a health URL answers 200, and stops it (and its scratch directory) on close.

    The command runs in its own process group and is told to stop when the thread that started it ends (Linux's
    parent-death signal): a killed `vulnattest run` leaves no server behind. Start and stop it from one thread that
    lives as long as it is needed (a flow run's, or the CLI's main thread).
    """

    name = "service"

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix=f"vulnattest-{self.name}-") if directory is None else None
        self.directory: Path = Path(self._tmp.name) if self._tmp is not None else Path(directory or ".")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Where the program's output goes."""
        return self.directory / f"{self.name}.log"

    def start(self) -> Self:
        """Start the program; subclasses say how."""
        raise NotImplementedError

    def _launch(self, command: Sequence[str], health_url: str, timeout: float,
                env: Mapping[str, str] | None = None, cwd: Path | None = None,
                verify: ssl.SSLContext | bool = True) -> None:
        with socket.socket() as probe:  # else the health check could be answered by whatever holds the port
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise VulnattestError(f"cannot start the {self.name} on port {self.port}: something already listens "
                                      "there; choose another port")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(command), env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        # one client: each new one loads the CA bundle, ~30 ms of CPU
        with httpx.Client(timeout=2, verify=verify) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise VulnattestError(f"{self.name} exited at start: {self.log_path.read_text()[-2000:]}")
                try:
                    if http.get(health_url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise VulnattestError(f"{self.name} did not answer at {health_url} within {timeout:.0f}s: {tail}")

    def stop(self) -> None:
        """Stop the program, and remove its directory if this object made it."""
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process, grace=20)
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()


def stop_process_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM `process` and its process group (it must lead one), SIGKILL whatever is left after `grace` seconds."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the leader gone, its group may live on
    process.wait()
