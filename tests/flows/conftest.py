"""Fixtures the flow tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_freshness import Attester
from vulnattest.demo.registry import LocalRegistry
from vulnattest.signing.keyfile import KeyFileSigner


@pytest.fixture(scope="module")
def attester(registry: LocalRegistry, keypair: tuple[Path, Path]) -> Attester:
    """Attests images in the session's registry with the session's key, as scan-and-attest would."""
    return Attester(registry.client(), KeyFileSigner.from_file(keypair[0]))
