"""Which failures are worth retrying."""

from __future__ import annotations

from vulnattest.errors import NotFoundError, TamperError, TransientRegistryError, TransientStoreError, is_transient


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
