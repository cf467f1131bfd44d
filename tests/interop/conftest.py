"""The real readers, built from the Go module proxy once per machine (`python -m tests.oracles build`): in CI a
missing one fails the test (CI=true), on a developer's machine it is a skip that names the command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def oracle(name: str, binary: str | None = None) -> Path:
    """The built binary of tool `name` (tests/oracles.py), or a skip (a failure in CI) naming how to build it."""
    from tests.oracles import TOOLS, build_hint

    tool = TOOLS[name]
    if not tool.built:
        if os.environ.get("CI"):
            pytest.fail(build_hint(name), pytrace=False)
        pytest.skip(build_hint(name))
    return tool.path(binary)


@pytest.fixture(scope="session")
def cosign() -> Path:
    """cosign (sigstore/cosign v3)."""
    return oracle("cosign")


@pytest.fixture(scope="session")
def kyverno() -> Path:
    """Kyverno's CLI (kubectl-kyverno)."""
    return oracle("kyverno-cli")
