"""Which failures are worth retrying, and the hint each user-actionable kind of failure carries."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from vulnattest.errors import (
    ConfigError,
    KeyPasswordError,
    NotFoundError,
    RegistryAuthError,
    RegistryError,
    RegistryUnreachableError,
    SigningError,
    TamperError,
    TransientRegistryError,
    TransientStoreError,
    VulnattestError,
    is_transient,
)
from vulnattest.registry import RegistryClient
from vulnattest.retrying import RetryPolicy
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair, load_private_key


def test_transient_errors_and_what_they_cause_are_retried():
    assert is_transient(TransientRegistryError("503"))
    assert is_transient(TransientStoreError("slow down"))
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = TransientRegistryError("reset")
    assert is_transient(wrapped)


def test_permanent_errors_are_not_retried():
    assert not is_transient(NotFoundError("no such tag"))
    assert not is_transient(TamperError("hash mismatch"))
    assert not is_transient(ValueError("x"))


def test_each_actionable_cause_carries_its_hint_in_its_type():
    assert RegistryAuthError("x: 401", registry="ghcr.io").hint == "run `docker login ghcr.io`"
    unreachable = RegistryUnreachableError("x: refused", registry="127.0.0.1:5000")
    assert unreachable.hint == "check that 127.0.0.1:5000 is up and reachable from here"
    assert is_transient(unreachable) and isinstance(unreachable, RegistryError)
    assert "VULNATTEST_KEY_PASSWORD" in KeyPasswordError("x").hint
    assert isinstance(KeyPasswordError("x"), SigningError)
    assert "report store" in TamperError("x").hint
    assert "configuration" in ConfigError("x").hint


def test_a_message_that_names_a_cause_gives_no_hint_of_its_own():
    """The hint comes from the type alone: a message that mentions a login is not a login failure."""
    assert RegistryError("x: access denied (403); run `docker login ghcr.io`").hint == ""
    assert VulnattestError("wrong password").hint == ""


def test_a_wrong_key_password_is_its_own_error(tmp_path: Path):
    private, _ = generate_keypair(tmp_path, b"right")
    with pytest.raises(KeyPasswordError, match="wrong password") as caught:
        KeyFileSigner.from_file(private, b"wrong")
    assert "VULNATTEST_KEY_PASSWORD" in caught.value.hint
    with pytest.raises(KeyPasswordError, match="is encrypted"):
        load_private_key(private, environ={})


def test_a_registry_nobody_answers_at_is_unreachable_with_its_host_in_the_hint():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: connections are refused
        client = RegistryClient(host, insecure=True, timeout=2, retries=RetryPolicy(attempts=1))
        with pytest.raises(RegistryUnreachableError) as caught:
            client.get_manifest("x/y", "latest")
    assert caught.value.hint == f"check that {host} is up and reachable from here"
