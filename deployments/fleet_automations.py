"""The Prefect Automations of deployments/automations/ (dead man's switches, rescans), created on the server with the
names in their files resolved to the ids Prefect wants (``vulnattest serve --automations``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
import yaml
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL
from pydantic import ValidationError

from tasks.freshness import PrefectBlockChannel
from vulnattest.config import FleetConfig
from vulnattest.errors import ConfigError, VulnattestError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

AUTOMATIONS_DIR = Path(__file__).parent / "automations"
ALERT_BLOCKS = "alerts[].prefect_block"
"""A `block_document_id` that stands for every notification block the fleet config's alert channels name."""
_ACTION_LISTS = ("actions", "actions_on_trigger", "actions_on_resolve")


def automation_files() -> list[Path]:
    """The automation files vulnattest ships, in name order."""
    return sorted(AUTOMATIONS_DIR.glob("*.yaml"))


def read_automations(path: Path) -> list[dict[str, Any]]:
    """The automations of one file, in any form ``prefect automation create --from-file`` takes: one automation, a
    list of them, or a list under ``automations:``."""
    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict) and "automations" in data:
        data = data["automations"]
    found = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in found):
        raise ConfigError(f"{path}: expected an automation (a mapping), a list of them, or `automations:`")
    return found


def resolved(automation: dict[str, Any], config: FleetConfig, client: SyncPrefectClient) -> AutomationCore:
    """`automation` with each action's deployment and block names replaced by their ids on the server:
    a `deployment_id` may be ``<flow>/<deployment>``, a `block_document_id` ``<block-type-slug>/<name>``, a bare
    block name, or `ALERT_BLOCKS` (one action per notification block the config's alerts name)."""
    lists = {key: [done for action in automation.get(key, []) for done in _resolved_action(action, config, client)]
             for key in _ACTION_LISTS if key in automation}
    try:
        return AutomationCore.model_validate({**automation, **lists})
    except ValidationError as e:
        raise ConfigError(f"automation {automation.get('name')!r} is not one Prefect takes: {e}") from e


def _resolved_action(action: dict[str, Any], config: FleetConfig,
                     client: SyncPrefectClient) -> list[dict[str, Any]]:
    deployment = action.get("deployment_id")
    if isinstance(deployment, str) and not _is_uuid(deployment):
        action = {**action, "deployment_id": str(_deployment_id(client, deployment))}
    block = action.get("block_document_id")
    if not isinstance(block, str) or _is_uuid(block):
        return [action]
    if block != ALERT_BLOCKS:
        return [{**action, "block_document_id": str(_block_id(client, block))}]
    blocks = [channel.prefect_block for channel in config.alerts if channel.prefect_block is not None]
    if not blocks:
        raise ConfigError("the automations notify on-call through the config's Prefect notification blocks, and "
                          "`alerts:` names none; add a channel `prefect_block: <block-type-slug>/<name>`")
    return [{**action, "block_document_id": str(_block_id(client, name))} for name in blocks]


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def _deployment_id(client: SyncPrefectClient, name: str) -> UUID:
    try:
        return client.read_deployment_by_name(name).id
    except (ObjectNotFound, ValueError):
        raise VulnattestError(f"no deployment {name!r} on the Prefect server: register it first (`vulnattest serve`, "
                              "or `prefect deploy --all` with deployments/prefect.yaml or prefect-kubernetes.yaml)"
                              ) from None


def _block_id(client: SyncPrefectClient, block: str) -> UUID:
    type_slug, _, name = PrefectBlockChannel(block).slug().partition("/")
    try:
        document = client.read_block_document_by_name(name, type_slug, include_secrets=False)
    except ObjectNotFound:
        raise VulnattestError(f"no block {type_slug}/{name} on the Prefect server: create the notification block "
                              "(Prefect UI, Blocks) or fix `alerts[].prefect_block` in the config") from None
    if document.block_schema is None or "notify" not in document.block_schema.capabilities:
        raise VulnattestError(f"block {type_slug}/{name} is not a notification block: name one that notifies "
                              "(Slack, Teams, email, custom webhook, …) in `alerts[].prefect_block`")
    return document.id


def apply_automations(config: FleetConfig, paths: list[Path] | None = None) -> list[tuple[str, bool]]:
    """Create or replace, by name, the automations of `paths` (default: all vulnattest ships); return each name and
    whether it replaced one. Every name is resolved before any is written: a missing block changes nothing."""
    try:
        with get_client(sync_client=True) as client:
            automations = [resolved(a, config, client) for path in paths or automation_files()
                           for a in read_automations(path)]
            return [(automation.name, _replace(client, automation)) for automation in automations]
    except (httpx.HTTPError, PrefectHTTPStatusError) as e:
        raise VulnattestError(f"the Prefect API at {PREFECT_API_URL.value()} failed while writing the automations "
                              f"({type(e).__name__}: {e}); check PREFECT_API_URL and that the server is up, then run "
                              "the command again (automations are replaced by name)") from None


def _replace(client: SyncPrefectClient, automation: AutomationCore) -> bool:
    """Update the automation of this name (dropping any duplicates), or create it; True when one was there."""
    existing = client.read_automations_by_name(automation.name)
    if not existing:
        client.create_automation(automation)
        return False
    keep, *duplicates = existing
    client.update_automation(keep.id, automation)
    for duplicate in duplicates:
        client.delete_automation(duplicate.id)
    return True
