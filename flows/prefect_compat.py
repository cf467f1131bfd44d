"""Prefect names the flows need beyond its documented API (tested with Prefect 3.9)."""

from __future__ import annotations

from prefect.blocks.system import Secret

__all__ = ["load_secret"]


def load_secret(name: str) -> Secret[str]:
    """The Secret block `name`, loaded synchronously whatever the caller's event loop (``_sync``, which Prefect's
    ``async_dispatch`` adds to `Block.load`); ValueError when there is none."""
    secret: Secret[str] = Secret.load(name, _sync=True)  # type: ignore[call-arg,assignment]
    return secret
