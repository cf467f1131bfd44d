"""Prefect flows: composition, fan-out, summaries and artifacts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import State

from vulnattest.config import FleetConfig, SigningSettings, load_config
from vulnattest.discovery import with_discovered
from vulnattest.errors import VulnattestError


def run_name(kind: str) -> Callable[[], str]:
    """A flow run name generator: `kind` and the UTC time the run started, e.g. ``scan-20261207-031900``."""
    return lambda: f"{kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def fleet_config(config_path: str | None, images: list[str] | None) -> FleetConfig:
    """Load the config file (or defaults); when `images` is given, only those (validated like the file's list)."""
    config = load_config(Path(config_path)) if config_path else FleetConfig().resolved_against(Path.cwd())
    config = config.with_images(images) if images else with_discovered(config)
    if not config.images:
        raise VulnattestError("no images: list them under `images:` in the config, or name them (--image)")
    return config


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """Create a markdown artifact of this flow run; a Prefect API that fails here is logged, never fatal: the run's
    results (what was attested, the verdicts) matter more than their page in the UI."""
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception as e:  # noqa: BLE001 - the API is down or refusing: the results still go to the caller
        get_run_logger().warning("could not publish the %s artifact (%s: %s)", key, type(e).__name__, e)


def results_of(state: State[Any]) -> list[Any]:
    """The per-image results of a flow run; a Failed run still carries them (it failed because of some images)."""
    result = state.result(raise_on_failure=False)
    if not isinstance(result, list):
        raise VulnattestError(f"the flow run did not finish: {state.message or result}")
    return result


def key_password(signing: SigningSettings) -> bytes | None:
    """The key file's password from the Prefect Secret block ``signing.password_secret`` names, if it names one."""
    if signing.password_secret is None:
        return None
    from flows.prefect_compat import load_secret

    try:
        secret = load_secret(signing.password_secret)
    except ValueError as e:
        raise VulnattestError(
            f"no Prefect Secret block named {signing.password_secret!r} (signing.password_secret): create it in the "
            "Prefect UI under Blocks, or with `Secret(value=...).save(name)`"
        ) from e
    # the value as stored: Secret.get() would decode JSON-looking text ("1.50" -> 1.5)
    value = secret.value.get_secret_value()
    if not isinstance(value, str):
        raise VulnattestError(f"the Secret block {signing.password_secret!r} holds a {type(value).__name__}, not the "
                              "key password as text")
    return value.encode()
