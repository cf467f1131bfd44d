"""sigstore-python names vulnattest needs that it does not export (tested with sigstore 4.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sigstore._internal.fulcio import ExpiredCertificate

if TYPE_CHECKING:
    from sigstore.models import TrustedRoot

__all__ = ["ExpiredCertificate", "trusted_root_json"]


def trusted_root_json(trusted_root: TrustedRoot) -> bytes:
    """`trusted_root` as trusted_root.json: sigstore-python has no serialiser for it, its inner protobuf-specs model
    has one."""
    data = trusted_root._inner.to_json()
    return data.encode() if isinstance(data, str) else bytes(data)
