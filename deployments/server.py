"""A local Prefect server with its UI, started for `vulnattest serve --ui`, the demo and the tests."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from vulnattest.localservice import LocalService


class LocalPrefectServer(LocalService):
    """``prefect server start`` on a loopback port, with its own home (database) unless one is given."""

    name = "prefect-server"

    def __init__(self, port: int | None = None, home: Path | None = None) -> None:
        super().__init__(home, port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"

    @property
    def home(self) -> Path:
        """The server's PREFECT_HOME (its database and log)."""
        return self.directory

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
        prefect = shutil.which("prefect")
        command = [prefect] if prefect else [sys.executable, "-m", "prefect"]
        self._launch([*command, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                     f"{self.api_url}/health", timeout, env)
        return self

    def stop(self) -> None:
        """Deliver what this process still queues for the server, then stop it.

        Prefect's events and log workers are per-process singletons that keep the server they first spoke to: left
        running, they would lose what later runs emit against another server, and stall at exit retrying this one.
        """
        if self.process is not None and self.process.poll() is None:
            from flows.local import drain_prefect_workers

            drain_prefect_workers(timeout=30)
        super().stop()
