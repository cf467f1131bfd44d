"""Prefect flows: composition, fan-out, summaries and artifacts."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import State

from vulnattest.errors import VulnattestError


def results_of(state: State[Any]) -> list[Any]:
    """The per-image results of a flow run; a Failed run still carries them (it failed because of some images)."""
    result = state.result(raise_on_failure=False)
    if not isinstance(result, list):
        raise VulnattestError(f"the flow run did not finish: {state.message or result}")
    return result
