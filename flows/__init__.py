"""Prefect flows: composition, fan-out, summaries and artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import State

from vulnattest.config import FleetConfig, load_config
from vulnattest.errors import VulnattestError


def fleet_config(config_path: str | None, images: list[str] | None) -> FleetConfig:
    """Load the config file (or defaults); when `images` is given, only those (validated like the file's list)."""
    config = load_config(Path(config_path)) if config_path else FleetConfig().resolved_against(Path.cwd())
    if images:
        config = config.with_images(images)
    if not config.images:
        raise VulnattestError("no images: list them under `images:` in the config, or name them (--image)")
    return config


def results_of(state: State[Any]) -> list[Any]:
    """The per-image results of a flow run; a Failed run still carries them (it failed because of some images)."""
    result = state.result(raise_on_failure=False)
    if not isinstance(result, list):
        raise VulnattestError(f"the flow run did not finish: {state.message or result}")
    return result
