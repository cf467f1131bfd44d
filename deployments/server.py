"""A local Prefect server with its UI, started for `vulnattest serve --ui`, the demo and the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from vulnattest.demo.registry import free_port
from vulnattest.errors import VulnattestError


class LocalPrefectServer:
    """``prefect server start`` on a loopback port, with its own home (database) unless one is given."""

    def __init__(self, port: int | None = None, home: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self._tmp = tempfile.TemporaryDirectory(prefix="vulnattest-prefect-") if home is None else None
        self.home = Path(self._tmp.name) if self._tmp is not None else Path(home or ".")
        self._process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        """Variables that point a Prefect client (or a `vulnattest` command) at this server."""
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}

    def start(self, timeout: float = 90.0) -> LocalPrefectServer:
        """Start the server and wait until its health endpoint answers."""
        env = {
            **os.environ, **self.environment(),
            "PREFECT_UI_API_URL": self.api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(self.port),
        }
        prefect = shutil.which("prefect") or sys.executable
        command = [prefect] if prefect != sys.executable else [prefect, "-m", "prefect"]
        log = (self.home / "server.log").open("wb")
        self._process = subprocess.Popen(
            [*command, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise VulnattestError(f"prefect server exited: {(self.home / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.stop()
        raise VulnattestError(f"prefect server did not answer on {self.url} within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the server (and remove its home if it made one)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalPrefectServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
