"""Alerts on-call can trust: one per image per change of verdict, reminders while it stays bad, a resolve message when
it is fresh again, and one digest message when many images change at once.

What each channel was last told lives in the report store (``state/alerts.json``), so it survives restarts and is
shared by every run and worker. A channel that fails keeps its old entry, so the next run tells it again: verdicts
are never lost, and channels that did work are not told twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from vulnattest import __version__
from vulnattest.config import PAGERDUTY_EVENTS_URL, channel_id, format_duration
from vulnattest.errors import TransientError, VulnattestError, is_transient_status, retry_after_seconds
from vulnattest.freshness import ImageVerdict, OnCallCommands, Verdict, worst_first
from vulnattest.retrying import RetryPolicy
from vulnattest.storage.interface import ObjectKey, ReportStore, StoredObject
from vulnattest.text import rfc3339

log = logging.getLogger(__name__)

WEBHOOK_RETRIES = RetryPolicy(attempts=3, budget=60)
"""A receiver that is down for longer is told on the next check (the alert state keeps what it was not told)."""
STATE_KEY = ObjectKey("state/alerts.json")
STATE_VERSION = 1
_DIGEST_LINES = 50  # a digest names this many images, then points at `vulnattest status`


class AlertError(VulnattestError):
    """An alert channel refused a message or could not be reached."""


class TransientAlertError(AlertError, TransientError):
    """An alert channel failed in a way that may pass (timeout, 429, 5xx)."""


class AlertKind(StrEnum):
    """Why a message about an image is sent."""

    ALERT = "alert"
    REMINDER = "reminder"
    RESOLVED = "resolved"


# -- state ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """The last verdict one channel was told about one image, and when."""

    verdict: Verdict
    at: datetime


@dataclass(frozen=True)
class ImageState:
    """An image's last observed verdict, since when it has had it, and what each channel was last told."""

    verdict: Verdict
    since: datetime
    checked: datetime
    digest: str | None = None
    delivered: Mapping[str, Delivered] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertState:
    """Every image's `ImageState`, keyed by the image reference as the config lists it."""

    images: Mapping[str, ImageState] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Serialise (stable key order, so equal states give equal bytes)."""
        return json.dumps({
            "version": STATE_VERSION,
            "images": {
                image: {
                    "verdict": s.verdict.value, "since": rfc3339(s.since), "checked": rfc3339(s.checked),
                    "digest": s.digest,
                    "delivered": {ch: {"verdict": d.verdict.value, "at": rfc3339(d.at)}
                                  for ch, d in sorted(s.delivered.items())},
                }
                for image, s in sorted(self.images.items())
            },
        }, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> AlertState:
        """Parse a state document; raise AlertError naming `where` when it does not parse."""
        try:
            wire = _WireState.model_validate_json(data)
        except ValidationError as e:
            raise AlertError(f"{where}: not an alert state document ({e.error_count()} problem(s), first: "
                             f"{e.errors()[0]['msg']} at {'.'.join(str(p) for p in e.errors()[0]['loc'])})") from e
        if wire.version != STATE_VERSION:
            raise AlertError(f"{where}: alert state version {wire.version} is not {STATE_VERSION}")
        return cls({
            image: ImageState(
                verdict=s.verdict, since=_aware(s.since), checked=_aware(s.checked), digest=s.digest,
                delivered={ch: Delivered(d.verdict, _aware(d.at)) for ch, d in s.delivered.items()},
            )
            for image, s in wire.images.items()
        })

    def merged(self, base: AlertState, theirs: AlertState) -> AlertState:
        """Three-way merge of this state with `theirs`, both made from `base` (another run saved meanwhile).

        An image only one side changed takes that side; one both changed takes the later observation and, per
        channel, the later delivery.
        """
        merged: dict[str, ImageState] = {}
        for image in {*self.images, *theirs.images, *base.images}:
            ours, other, old = self.images.get(image), theirs.images.get(image), base.images.get(image)
            if other == old:
                chosen = ours
            elif ours == old:
                chosen = other
            else:
                chosen = _newer(ours, other)
            if chosen is not None:
                merged[image] = chosen
        return AlertState(merged)


class _WireDelivered(BaseModel):
    verdict: Verdict
    at: datetime


class _WireImage(BaseModel):
    verdict: Verdict
    since: datetime
    checked: datetime
    digest: str | None = None
    delivered: dict[str, _WireDelivered] = {}


class _WireState(BaseModel):
    version: int
    images: dict[str, _WireImage] = {}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _newer(ours: ImageState | None, theirs: ImageState | None) -> ImageState | None:
    if ours is None or theirs is None:
        return ours or theirs
    latest = ours if ours.checked >= theirs.checked else theirs
    delivered = dict(theirs.delivered)
    for channel, told in ours.delivered.items():
        if channel not in delivered or told.at >= delivered[channel].at:
            delivered[channel] = told
    return replace(latest, delivered=delivered)


def load_state(store: ReportStore) -> AlertState:
    """Read the alert state; a missing one is empty, and so is an unreadable one (which then alerts again)."""
    data = store.get(STATE_KEY)
    if data is None:
        return AlertState()
    try:
        return AlertState.from_json(data, STATE_KEY.path)
    except AlertError as e:
        # starting over repeats alerts, which is better than staying silent about images that are bad
        log.warning("%s; starting from an empty alert state, so every bad image alerts again", e)
        return AlertState()


def save_state(store: ReportStore, state: AlertState, base: AlertState) -> StoredObject:
    """Write `state`, merged with whatever another run saved since `base` was loaded."""
    current = load_state(store)
    if current != base:
        log.info("the alert state changed since this run read it; merging")
        state = state.merged(base, current)
    body = state.to_json()
    return store.put(STATE_KEY, body, hashlib.sha256(body).hexdigest())


# -- what to send ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One image's news for one channel."""

    kind: AlertKind
    verdict: ImageVerdict
    previous: Verdict | None
    since: datetime
    told_at: datetime | None = None
    """When the channel was last told about this image (what a reminder follows)."""

    def identity(self, channel: str) -> str:
        """What makes this news this news, the same every time it is sent again (a retry, or the next run after a
        failed delivery), and different for the next reminder."""
        told = rfc3339(self.told_at) if self.told_at else "-"
        return "|".join([channel, self.kind.value, self.verdict.image, self.verdict.verdict.value,
                         rfc3339(self.since), told])

    def subject(self) -> str:
        """A short subject line."""
        v = self.verdict
        if self.kind is AlertKind.RESOLVED:
            return f"[vulnattest] resolved: {v.image} is fresh again"
        prefix = "reminder: still " if self.kind is AlertKind.REMINDER else ""
        return f"[vulnattest] {prefix}{v.verdict.value}: {v.image}"

    def text(self) -> str:
        """What broke, by when, and what to run: the message body on-call reads."""
        v = self.verdict
        if self.kind is AlertKind.RESOLVED:
            was = f" (was {self.previous.value})" if self.previous else ""
            lines = [f"RESOLVED {v.image}{was}: {v.reason}"]
        else:
            head = "REMINDER: still " if self.kind is AlertKind.REMINDER else ""
            was = f" (was {self.previous.value})" if self.previous and self.kind is AlertKind.ALERT else ""
            lines = [
                f"{head}{v.verdict.value.upper()} {v.image}{was}",
                f"What broke: {v.reason}",
                _deadline_line(v),
                f"Run: {v.action}",
                f"Bad since: {rfc3339(self.since)} ({format_duration(v.checked_at - self.since)})",
            ]
        if v.digest:
            lines.append(f"Digest: {v.digest}")
        if v.last_scan:
            lines.append(f"Last scan: {v.last_scan.describe()}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The verdict's fields plus the alert's kind, the previous verdict and since when."""
        return {"kind": self.kind.value, **self.verdict.to_json(),
                "previous": self.previous.value if self.previous else None, "since": rfc3339(self.since)}


@dataclass(frozen=True)
class Message:
    """What one channel receives in one go: one alert, or a digest of many."""

    channel: str
    alerts: tuple[Alert, ...]
    digest: bool = False
    fleet_status: str = "vulnattest status"

    @property
    def kind(self) -> str:
        """``digest``, or the single alert's kind."""
        return "digest" if self.digest else self.alerts[0].kind.value

    def subject(self) -> str:
        """A short subject line."""
        if not self.digest:
            return self.alerts[0].subject()
        return f"[vulnattest] {len(self.alerts)} image(s) changed: {self._counts_text()}"

    def text(self) -> str:
        """The body."""
        if not self.digest:
            return self.alerts[0].text()
        lines = [self.subject().removeprefix("[vulnattest] ")]
        for alert in self.alerts[:_DIGEST_LINES]:
            v = alert.verdict
            if alert.kind is AlertKind.RESOLVED:
                lines.append(f"- resolved {v.image}")
            else:
                still = "still " if alert.kind is AlertKind.REMINDER else ""
                lines.append(f"- {still}{v.verdict.value.upper()} {v.image}: {v.reason} | deadline "
                             f"{v.deadline_text()} | run: {v.action}")
        if len(self.alerts) > _DIGEST_LINES:
            lines.append(f"... and {len(self.alerts) - _DIGEST_LINES} more")
        lines.append(f"Every image: {self.fleet_status}")
        return "\n".join(lines)

    @property
    def idempotency_key(self) -> str:
        """A key that is the same each time this message is sent again, so a receiver that got it once (but whose
        answer was lost) can drop the copy: sent as the ``Idempotency-Key`` header and in the JSON."""
        identities = "\n".join(sorted(alert.identity(self.channel) for alert in self.alerts))
        return hashlib.sha256(identities.encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        """The JSON a webhook receives."""
        return {
            "source": "vulnattest", "version": __version__, "idempotency_key": self.idempotency_key,
            "kind": self.kind, "subject": self.subject(),
            "text": self.text(), "count": len(self.alerts), "counts": self._counts(),
            "alerts": [a.to_json() for a in self.alerts],
        }

    def _counts(self) -> dict[str, int]:
        return dict(Counter("resolved" if a.kind is AlertKind.RESOLVED else a.verdict.verdict.value
                            for a in self.alerts))

    def _counts_text(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in self._counts().items())


@dataclass(frozen=True)
class VerdictChange:
    """An image whose verdict differs from the last one observed (`previous` is None the first time)."""

    verdict: ImageVerdict
    previous: Verdict | None


@dataclass(frozen=True)
class AlertPlan:
    """What one run sends, which verdicts changed, and the state before any delivery is recorded."""

    messages: tuple[Message, ...]
    changes: tuple[VerdictChange, ...]
    observed: AlertState

    def state_after(self, delivered: Iterable[Message], now: datetime) -> AlertState:
        """The state once `delivered` reached their channels; undelivered news stays pending for the next run."""
        images = dict(self.observed.images)
        for message in delivered:
            for alert in message.alerts:
                current = images[alert.verdict.image]
                told = {**current.delivered, message.channel: Delivered(alert.verdict.verdict, now)}
                images[alert.verdict.image] = replace(current, delivered=told)
        return AlertState(images)


def plan_alerts(
    state: AlertState,
    verdicts: Sequence[ImageVerdict],
    channels: Sequence[str],
    now: datetime,
    *,
    remind_every: timedelta,
    digest_threshold: int,
    commands: OnCallCommands | None = None,
    fleet: Collection[str] | None = None,
) -> AlertPlan:
    """Decide what each channel is told about `verdicts`, given what it was told before (`state`).

    Per image and channel: a bad verdict it was not told is an alert; one told at least `remind_every` ago is a
    reminder; fresh after a bad verdict it was told is a resolve. A channel with more than `digest_threshold` news
    gets them as one digest message. When `fleet` is given, state of images outside it is dropped; channels no
    longer configured are forgotten.
    """
    commands = commands or OnCallCommands()
    images = {image: s for image, s in state.images.items() if fleet is None or image in fleet}
    changes: list[VerdictChange] = []
    pending: dict[str, list[Alert]] = {channel: [] for channel in channels}
    for verdict in worst_first(verdicts):
        before = images.get(verdict.image)
        if before is None or before.verdict is not verdict.verdict:
            changes.append(VerdictChange(verdict, before.verdict if before else None))
            since = now
        else:
            since = before.since
        delivered = {ch: d for ch, d in (before.delivered if before else {}).items() if ch in channels}
        images[verdict.image] = ImageState(verdict.verdict, since, verdict.checked_at, verdict.digest, delivered)
        for channel in channels:
            told = delivered.get(channel)
            kind = _news(verdict.verdict, told, now, remind_every)
            if kind is not None:
                pending[channel].append(Alert(kind, verdict, told.verdict if told else None, since,
                                              told.at if told else None))
    messages: list[Message] = []
    status = commands.fleet_status()
    for channel, alerts in pending.items():
        if len(alerts) > digest_threshold:
            messages.append(Message(channel, tuple(alerts), digest=True, fleet_status=status))
        else:
            messages.extend(Message(channel, (alert,), fleet_status=status) for alert in alerts)
    return AlertPlan(tuple(messages), tuple(changes), AlertState(images))


def _news(verdict: Verdict, told: Delivered | None, now: datetime, remind_every: timedelta) -> AlertKind | None:
    if verdict.ok:
        return AlertKind.RESOLVED if told is not None and not told.verdict.ok else None
    if told is None or told.verdict is not verdict:
        return AlertKind.ALERT
    return AlertKind.REMINDER if now - told.at >= remind_every else None


# -- channels ----------------------------------------------------------------------------------------------------


class Notice(Protocol):
    """What a webhook or a Prefect block sends: a `Message` (verdicts), or news of changed findings."""

    def subject(self) -> str:
        """A short subject line."""
        ...

    def text(self) -> str:
        """The body."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The JSON a webhook receives."""
        ...

    @property
    def idempotency_key(self) -> str:
        """The same each time this notice is sent again."""
        ...


class AlertChannel(Protocol):
    """Somewhere alerts go."""

    @property
    def id(self) -> str:
        """A stable name for the channel that holds no secret (state and logs use it)."""
        ...

    def send(self, message: Message) -> None:
        """Deliver `message`; raise TransientAlertError when worth retrying, AlertError otherwise."""
        ...


@dataclass(frozen=True)
class WebhookChannel:
    """POSTs each message as JSON to a URL; the URL may hold a token, so only its host is ever shown."""

    url: SecretStr = field(repr=False)
    name: str | None = None
    timeout: float = 10.0
    transport: httpx.BaseTransport | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        """The configured name, else ``webhook:<host>#<hash of the URL>`` (`channel_id`)."""
        return channel_id(self.name, webhook=self.url)

    @property
    def redacted_url(self) -> str:
        """Scheme and host only, e.g. ``https://hooks.example.com/…``."""
        return f"{_origin(self.url.get_secret_value())}/…"

    def send(self, message: Notice) -> None:
        """POST the message's JSON (with its idempotency key), retrying the request on its own while the receiver
        fails transiently (408, 429, 5xx, no connection), as `Retry-After` advises; other answers fail at once."""
        _redact_in_httpx_log(self.url.get_secret_value(), self.redacted_url)
        _post_json(self.id, self.url.get_secret_value(), self.redacted_url, message.to_json(), self.timeout,
                   self.transport, {"Idempotency-Key": message.idempotency_key}, "check the webhook URL")

    def __str__(self) -> str:
        return f"{self.id} ({self.redacted_url})"


@dataclass(frozen=True)
class PagerDutyChannel:
    """PagerDuty's Events API v2: one incident per image (its reference is the dedup key), triggered on news and
    reminders, resolved when the image is fresh again, so on-call's incident closes itself."""

    routing_key: SecretStr = field(repr=False)
    name: str | None = None
    timeout: float = 10.0
    url: str = PAGERDUTY_EVENTS_URL
    transport: httpx.BaseTransport | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        """The configured name, else ``pagerduty#<hash of the routing key>`` (`channel_id`)."""
        return channel_id(self.name, pagerduty=self.routing_key)

    def send(self, message: Message) -> None:
        """One event per image of the message (a digest is many images), each retried on its own."""
        for alert in message.alerts:
            _post_json(self.id, self.url, self.url, self.event(alert), self.timeout, self.transport, {},
                       "check the routing key (alerts[].pagerduty)")

    def event(self, alert: Alert) -> dict[str, Any]:
        """The Events v2 body for `alert`."""
        v = alert.verdict
        body: dict[str, Any] = {"routing_key": self.routing_key.get_secret_value(), "dedup_key": dedup_key(v.image)}
        if alert.kind is AlertKind.RESOLVED:
            return {**body, "event_action": "resolve"}
        return {**body, "event_action": "trigger", "payload": {
            "summary": alert.subject().removeprefix("[vulnattest] ")[:1024],
            "source": v.image, "severity": _severity(v.verdict), "timestamp": rfc3339(v.checked_at),
            "component": v.image.rsplit("@", 1)[0], "group": "vulnattest", "class": v.verdict.value,
            "custom_details": {"text": alert.text(), **alert.to_json()},
        }}


@dataclass(frozen=True)
class AlertmanagerChannel:
    """Prometheus Alertmanager (API v2): one alert per image, labelled ``alertname="VulnattestImageNotFresh"`` and
    ``image``, so Alertmanager groups, routes, silences and resolves it like any other; the verdict and severity are
    annotations (a label would make an expiring image that goes stale a second alert). A bad image's alert lasts
    twice `remind_every` (each reminder renews it); a fresh one ends it."""

    url: str
    remind_every: timedelta = timedelta(hours=24)
    name: str | None = None
    timeout: float = 10.0
    transport: httpx.BaseTransport | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        """The configured name, else ``alertmanager:<host>`` (`channel_id`)."""
        return channel_id(self.name, alertmanager=self.url)

    def send(self, message: Message) -> None:
        """POST every image's alert of the message to ``/api/v2/alerts`` at once."""
        _post_json(self.id, self.url.rstrip("/") + "/api/v2/alerts", _origin(self.url), self.alerts(message),
                   self.timeout, self.transport, {}, "check alerts[].alertmanager")

    def alerts(self, message: Message) -> list[dict[str, Any]]:
        """The API v2 body for `message`: a list of postable alerts."""
        out = []
        for alert in message.alerts:
            v = alert.verdict
            resolved = alert.kind is AlertKind.RESOLVED
            out.append({
                "labels": {"alertname": "VulnattestImageNotFresh", "image": v.image},
                "annotations": {"summary": alert.subject().removeprefix("[vulnattest] "), "description": alert.text(),
                                "verdict": v.verdict.value, "severity": _severity(v.verdict),
                                "deadline": v.deadline_text(), "run": v.action},
                # Alertmanager refuses an alert that ends before it starts: a resolve's `since` (when the image
                # became fresh) can be a moment after its check
                "startsAt": rfc3339(min(alert.since, v.checked_at)),
                "endsAt": rfc3339(v.checked_at if resolved else v.checked_at + 2 * self.remind_every),
            })
        return out


def dedup_key(image: str) -> str:
    """What on-call tools know an image's incident by, whatever its verdict: ``vulnattest:<image>``."""
    return f"vulnattest:{image}"


def _severity(verdict: Verdict) -> str:
    """PagerDuty's severities: refused now is critical, about to be refused a warning, unknown an error."""
    if verdict.refused_now:
        return "critical"
    return "warning" if verdict is Verdict.EXPIRING else "error" if verdict is Verdict.UNREACHABLE else "info"


def _origin(url: str) -> str:
    """Scheme and host of `url`, without user info: what may be shown of an endpoint that could hold a secret."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}"


def _post_json(channel: str, url: str, shown: str, body: object, timeout: float,
               transport: httpx.BaseTransport | None, headers: dict[str, str], hint: str) -> None:
    """POST `body` as JSON, retrying on its own while the receiver fails transiently (408, 429, 5xx, no
    connection), as `Retry-After` advises; other answers fail at once. Messages show `shown`, never `url`."""
    def post() -> None:
        try:
            response = client.post(url, json=body)
        except httpx.TransportError as e:
            # the exception text may repeat the URL, so only its type is reported
            raise TransientAlertError(f"{channel}: cannot reach {shown} ({type(e).__name__})") from None
        status = response.status_code
        if is_transient_status(status):
            raise TransientAlertError(f"{channel}: {shown} answered {status}; retry later",
                                      retry_after=retry_after_seconds(response.headers.get("retry-after")))
        if status >= 300:
            raise AlertError(f"{channel}: {shown} refused the alert ({status}); {hint}")

    with httpx.Client(timeout=timeout, transport=transport, follow_redirects=False,
                      headers={"User-Agent": f"vulnattest/{__version__}", **headers}) as client:
        WEBHOOK_RETRIES.call(post, f"alert to {channel}")


class _RedactUrls(logging.Filter):
    """Replaces secret URLs in httpx's request log lines (``HTTP Request: POST <url> …``, logged at INFO)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and self.secrets:
            record.args = tuple(self.secrets.get(str(arg), arg) if isinstance(arg, httpx.URL | str) else arg
                                for arg in record.args)
        return True


_HTTPX_REDACTION = _RedactUrls()


def _redact_in_httpx_log(url: str, shown: str) -> None:
    _HTTPX_REDACTION.secrets[str(httpx.URL(url))] = shown
    _HTTPX_REDACTION.secrets[url] = shown
    logging.getLogger("httpx").addFilter(_HTTPX_REDACTION)  # adding it again is a no-op


def _deadline_line(v: ImageVerdict) -> str:
    """When admission refuses the image's Pods: already (stale, invalid, missing, policy), or from the deadline."""
    if v.verdict.refused_now:
        return "Deadline: passed - admission refuses its Pods now"
    return f"Deadline: {v.deadline_text()}" + (" - admission refuses Pods from then" if v.deadline else "")
