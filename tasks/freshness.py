"""The freshness steps as Prefect tasks (probe, check, alert state, delivery), Prefect notification blocks as an
alert channel, and Prefect events for each change of verdict."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prefect import get_run_logger
from prefect.blocks.abstract import NotificationBlock, NotificationError
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.events import emit_event

from tasks.batching import Batch
from tasks.retry import step
from vulnattest import freshness
from vulnattest.alerts import (
    WEBHOOK_RETRIES,
    AlertChannel,
    AlertError,
    AlertmanagerChannel,
    AlertState,
    Message,
    Notice,
    PagerDutyChannel,
    TransientAlertError,
    VerdictChange,
    WebhookChannel,
    load_state,
    save_state,
)
from vulnattest.config import AlertChannelSettings, channel_id
from vulnattest.errors import TransientError, VulnattestError, is_transient_status
from vulnattest.freshness import FreshnessChecker, ImageVerdict, counts_text
from vulnattest.images import ImageRef
from vulnattest.services import Services
from vulnattest.storage import StoredObject
from vulnattest.text import rfc3339

EVENT_PREFIX = "vulnattest.image"


@step("probe-registry", "probe {host}")
def probe_registry(host: str, services: Services) -> None:
    """Check that `host` answers the registry API, so an outage costs one retried request, not one per image."""
    freshness.probe_registry(services.registries.for_host(host))
    get_run_logger().info("registry %s answers", host)


class ImageCheck:
    """One image's check, kept across task retries: a retry checks again only the images whose registry failed in a
    way worth retrying; every other verdict stands."""

    def __init__(self, ref: ImageRef) -> None:
        self.ref = ref
        self.verdict: ImageVerdict | None = None
        self.error: BaseException | None = None

    def __str__(self) -> str:
        return str(self.ref)

    def final(self, checker: FreshnessChecker) -> ImageVerdict:
        """The verdict; `unreachable` (with the last error) when the check never got one."""
        if self.verdict is not None:
            return self.verdict
        return checker.unreachable(self.ref, self.error or VulnattestError("not checked"), datetime.now(UTC))


class TransientCheckError(TransientError):
    """Some images of a batch could not be checked for a reason that may pass; a retry checks only those."""


@step("check-images", "check {batch}")
def check_images(batch: Batch[ImageCheck], checker: FreshnessChecker, services: Services) -> int:
    """Read, verify and judge each image's vuln attestations; return how many got a verdict.

    A registry failure worth retrying fails the task run, so Prefect retries it, checking only the images that
    failed; any other failure is that image's `unreachable` verdict.
    """
    logger = get_run_logger()
    for check in batch:
        if check.verdict is not None:
            continue
        now = datetime.now(UTC)
        try:
            check.verdict = checker.check(services.registries.for_image(check.ref), check.ref, now)
        except TransientError as e:
            check.error = e
            continue
        except VulnattestError as e:
            check.verdict = checker.unreachable(check.ref, e, now)
        except Exception as e:  # a bug checking one image must not hide the others (logged with its traceback)
            logger.exception("checking %s crashed", check.ref)
            check.verdict = checker.unreachable(check.ref, e, now, hint="this is a vulnattest bug: report it")
        if not check.verdict.ok:
            logger.info("%s is %s: %s", check.ref, check.verdict.verdict.value, check.verdict.reason)
    judged = [c.verdict for c in batch.items if c.verdict is not None]
    logger.info("%s", counts_text(judged))
    failed = [c for c in batch.items if c.verdict is None]
    if failed:
        raise TransientCheckError(f"{len(failed)} of {len(batch.items)} image(s) could not be checked "
                                  f"(first: {failed[0]}: {failed[0].error}); a retry checks only those")
    return len(judged)


@step("load-alert-state", "load alert state")
def load_alert_state(services: Services) -> AlertState:
    """Read what every channel was last told, from the report store."""
    state = load_state(services.store)
    get_run_logger().info("alert state holds %d image(s)", len(state.images))
    return state


@step("save-alert-state", "save alert state")
def save_alert_state(state: AlertState, base: AlertState, services: Services) -> StoredObject:
    """Write the alert state back, merged with any run that saved since `base` was read."""
    stored = save_state(services.store, state, base)
    get_run_logger().info("saved the alert state of %d image(s) to %s", len(state.images), stored.uri)
    return stored


@step("send-alert", "alert {message.channel}: {message.kind}", retries=0)
def send_alert(message: Message, channel: AlertChannel) -> None:
    """Deliver one message to one channel. The channel retries its request; what fails past that is told on the
    next check (the alert state keeps it), so the task itself is not retried: each try may reach the receiver."""
    channel.send(message)
    get_run_logger().info("told %s: %s", channel.id, message.subject())


def emit_change_event(change: VerdictChange) -> None:
    """Emit ``vulnattest.image.<verdict>`` about the image, for Prefect Automations to act on."""
    verdict = change.verdict
    payload: dict[str, Any] = {**verdict.to_json(), "previous": change.previous.value if change.previous else None}
    resource = {"prefect.resource.id": f"{EVENT_PREFIX}.{verdict.image}", "prefect.resource.name": verdict.image,
                "vulnattest.verdict": verdict.verdict.value}
    if verdict.digest:
        resource["vulnattest.digest"] = verdict.digest
    if verdict.deadline:
        resource["vulnattest.deadline"] = rfc3339(verdict.deadline)
    emit_event(event=f"{EVENT_PREFIX}.{verdict.verdict.value}", resource=resource, payload=payload)


@dataclass(frozen=True)
class PrefectBlockChannel:
    """Sends through a Prefect notification block saved under `block` (Slack, Teams, PagerDuty, email, webhook, …).

    `block` is ``<block-type-slug>/<name>`` as ``prefect block ls`` shows it, or a bare name when one notification
    block has it.
    """

    block: str
    name: str | None = None

    @property
    def id(self) -> str:
        """The configured name, else ``prefect-block:<block>`` (`channel_id`); the block keeps its secrets."""
        return channel_id(self.name, block=self.block)

    def send(self, message: Notice) -> None:
        """Load the block and notify, retrying while it fails transiently (no connection, 408, 429, 5xx)."""
        notifier = self._load()
        WEBHOOK_RETRIES.call(lambda: self._notify(notifier, message), f"alert to {self.id}")

    def _notify(self, notifier: NotificationBlock, message: Notice) -> None:
        try:
            with notifier.raise_on_failure():
                # Prefect's blocks notify synchronously outside an event loop; a block written async-only
                # returns a coroutine, which this worker thread (it has no loop) can run to completion
                outcome = notifier.notify(body=message.text(), subject=message.subject())
                if inspect.iscoroutine(outcome):
                    asyncio.run(outcome)
        except httpx.HTTPStatusError as e:
            status = e.response.status_code
            # the exception text names the URL, which may hold a token: only the status is kept
            if is_transient_status(status):
                raise TransientAlertError(f"{self.id}: the receiver answered {status}; retry later") from None
            raise AlertError(f"{self.id}: the receiver refused the alert ({status}); check the block") from None
        except (httpx.TransportError, NotificationError) as e:
            raise TransientAlertError(f"{self.id}: notify failed ({type(e).__name__}); see the worker's log") from None

    def slug(self) -> str:
        """The block as ``<block-type-slug>/<name>``: a bare name is looked up among the notification blocks."""
        return self.block if "/" in self.block else self._find_slug()

    def _load(self) -> NotificationBlock:
        slug = self.slug()
        try:
            loaded = Block.load(slug)
        except ValueError as e:
            raise AlertError(f"{self.id}: no block {slug!r}; create it in the Prefect UI or fix "
                             "`alerts[].prefect_block` in the config") from e
        except httpx.TransportError as e:
            raise TransientAlertError(f"{self.id}: cannot reach the Prefect API to load the block") from e
        if not isinstance(loaded, NotificationBlock):
            raise AlertError(f"{self.id}: block {slug!r} is a {type(loaded).__name__}, not a notification block")
        return loaded

    def _find_slug(self) -> str:
        with get_client(sync_client=True) as client:
            documents = client.read_block_documents(include_secrets=False)
        slugs = sorted({f"{d.block_type.slug}/{d.name}" for d in documents
                        if d.name == self.block and d.block_type is not None
                        and "notify" in (d.block_schema.capabilities if d.block_schema else [])})
        if len(slugs) != 1:
            found = ", ".join(slugs) or "none"
            raise AlertError(f"{self.id}: {len(slugs)} notification blocks are named {self.block!r} ({found}); "
                             "write `prefect_block: <type-slug>/<name>` in the config")
        return slugs[0]


def alert_channels(settings: tuple[AlertChannelSettings, ...],
                   remind_every: timedelta) -> list[AlertChannel]:
    """The channels the config lists, in order (`remind_every`: how long an Alertmanager alert lasts unrenewed is
    twice that)."""
    channels: list[AlertChannel] = []
    for channel in settings:
        timeout = channel.timeout.total_seconds()
        if channel.webhook is not None:
            channels.append(WebhookChannel(channel.webhook, channel.name, timeout))
        elif channel.prefect_block is not None:
            channels.append(PrefectBlockChannel(channel.prefect_block, channel.name))
        elif channel.pagerduty is not None:
            channels.append(PagerDutyChannel(channel.pagerduty, channel.name, timeout, channel.pagerduty_url))
        elif channel.alertmanager is not None:
            channels.append(AlertmanagerChannel(channel.alertmanager, remind_every, channel.name, timeout))
    return channels
