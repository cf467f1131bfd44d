"""Fixtures the flow tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.server import LocalPrefectServer
from flows.local import drain_prefect_workers
from tests.integration.test_freshness import Attester
from vulnattest.demo.registry import LocalRegistry
from vulnattest.signing.keyfile import KeyFileSigner


@pytest.fixture(scope="module")
def attester(registry: LocalRegistry, keypair: tuple[Path, Path]) -> Attester:
    """Attests images in the session's registry with the session's key, as scan-and-attest would."""
    return Attester(registry.client(), KeyFileSigner.from_file(keypair[0]))


@contextmanager
def pointed_at(server: LocalPrefectServer) -> Iterator[None]:
    """This process's Prefect client, and its event and log workers, on `server` for a while."""
    drain_prefect_workers()  # a worker started earlier would keep sending to the server it first knew
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        try:
            yield
        finally:
            drain_prefect_workers(timeout=30)
