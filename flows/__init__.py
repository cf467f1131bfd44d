"""Prefect flows: composition, fan-out, summaries and artifacts."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

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
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception as e:  # noqa: BLE001 - the API is down or refusing: the results still go to the caller
        _warn_unpublished(key, e)


def publish_table(key: str, rows: list[dict[str, str]], description: str) -> None:
    """Create a table artifact of this flow run; like `publish_markdown`, never fatal."""
    from prefect.artifacts import create_table_artifact

    try:
        create_table_artifact(key=key, table=rows, description=description)
    except Exception as e:  # noqa: BLE001 - the API is down or refusing: the results still go to the caller
        _warn_unpublished(key, e)


class ProgressArtifact:
    """A progress artifact of this flow run, moved on as images finish: at most one API call every `interval`
    seconds (and the last), none at all once the API has refused one: like `publish_markdown`, never fatal."""

    def __init__(self, key: str, total: int, interval: float = 2.0) -> None:
        from prefect.artifacts import create_progress_artifact

        self.total, self.done, self.failed = total, 0, 0
        self._interval, self._last = interval, 0.0
        self._id: UUID | None = None
        try:
            # synchronous here (no event loop runs in a flow's thread): its UUID, not a coroutine
            self._id = cast(UUID, create_progress_artifact(progress=0.0, key=key, description=self._text()))
        except Exception as e:  # noqa: BLE001 - the API is down or refusing: the work goes on
            _warn_unpublished(key, e)

    def _text(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.done} of {self.total} image(s) done{failed}"

    def finished(self, ok: bool) -> None:
        """One more image is done (`ok`: without failing)."""
        from prefect.artifacts import update_progress_artifact

        self.done += 1
        self.failed += not ok
        now = time.monotonic()
        if self._id is None or (now - self._last < self._interval and self.done < self.total):
            return
        self._last = now
        try:
            update_progress_artifact(self._id, progress=100.0 * self.done / max(self.total, 1),
                                     description=self._text())
        except Exception as e:  # noqa: BLE001 - as at creation
            _warn_unpublished("progress", e)
            self._id = None


def _warn_unpublished(key: str, error: BaseException) -> None:
    from prefect import get_run_logger

    get_run_logger().warning("could not publish the %s artifact (%s: %s)", key, type(error).__name__, error)


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
