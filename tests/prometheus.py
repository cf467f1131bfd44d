"""Debian's Prometheus-project daemons (Alertmanager, Pushgateway) on loopback ports, for the tests that use them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Self, TypeVar

from tests.conftest import missing
from vulnattest.localservice import LocalService


class PrometheusDaemon(LocalService):
    """A Prometheus-project program listening on a loopback port, ready once its ``/-/ready`` answers."""

    program = ""

    def arguments(self) -> list[str]:
        """What the program needs besides its listen address."""
        return []

    def start(self, timeout: float = 30.0) -> Self:
        self._launch([self.program, *self.arguments(), f"--web.listen-address=127.0.0.1:{self.port}",
                      "--log.level=warn"], f"{self.url}/-/ready", timeout)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


D = TypeVar("D", bound=PrometheusDaemon)


def running(kind: type[D]) -> Iterator[D]:
    """For a fixture: the daemon, started, until the fixture ends; `missing` when Debian's package is not installed."""
    if shutil.which(kind.program) is None:
        missing(f"install Debian's {kind.name}: `apt-get install {kind.program}`")
    with kind() as daemon:
        yield daemon
