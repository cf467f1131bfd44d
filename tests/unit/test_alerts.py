"""Alert planning (one per change, reminders, resolves, digests), the shared state, and the webhook channel."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from vulnattest.alerts import (
    STATE_KEY,
    AlertError,
    AlertKind,
    AlertPlan,
    AlertState,
    Delivered,
    ImageState,
    TransientAlertError,
    WebhookChannel,
    load_state,
    plan_alerts,
    save_state,
)
from vulnattest.freshness import ImageVerdict, LastScan, OnCallCommands, Verdict
from vulnattest.storage.local import LocalReportStore

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
REMIND = timedelta(hours=24)
SECRET_URL = "https://hooks.example.com/services/T000/B000/s3cr3t-t0ken"


def v(image: str, kind: Verdict, at: datetime = T0) -> ImageVerdict:
    deadline = at + timedelta(hours=10) if kind in (Verdict.FRESH, Verdict.EXPIRING) else None
    return ImageVerdict(
        image=image, verdict=kind, reason=f"{image} is {kind.value}", checked_at=at, digest="sha256:" + "d" * 64,
        action=f"vulnattest run --config fleet.yaml --image {image}", deadline=deadline,
        scan_finished=at - timedelta(hours=150) if deadline else None,
        last_scan=LastScan(at - timedelta(hours=150), "trivy 0.76.0", {"CRITICAL": 1}) if deadline else None,
    )


def plan(state: AlertState, verdicts: list[ImageVerdict], now: datetime, channels: tuple[str, ...] = ("hook",),
         threshold: int = 5, **extra: Any) -> AlertPlan:
    return plan_alerts(state, verdicts, channels, now, remind_every=REMIND, digest_threshold=threshold,
                       commands=OnCallCommands("fleet.yaml"), **extra)


def sent(p: AlertPlan) -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [(m.channel, m.kind, [(a.kind.value, a.verdict.image) for a in m.alerts]) for m in p.messages]


def run(state: AlertState, verdicts: list[ImageVerdict], now: datetime, **extra: Any) -> tuple[AlertPlan, AlertState]:
    """One run in which every message is delivered."""
    p = plan(state, verdicts, now, **extra)
    return p, p.state_after(p.messages, now)


def test_one_alert_per_change_then_silence_until_the_reminder_then_resolved():
    p1, s1 = run(AlertState(), [v("a", Verdict.FRESH), v("b", Verdict.STALE)], T0)
    assert sent(p1) == [("hook", "alert", [("alert", "b")])]

    p2, s2 = run(s1, [v("a", Verdict.FRESH), v("b", Verdict.STALE)], T0 + timedelta(hours=1))
    assert sent(p2) == []

    p3, s3 = run(s2, [v("a", Verdict.FRESH), v("b", Verdict.STALE)], T0 + REMIND - timedelta(seconds=1))
    assert sent(p3) == []

    p4, s4 = run(s3, [v("a", Verdict.FRESH), v("b", Verdict.STALE)], T0 + REMIND)
    assert sent(p4) == [("hook", "reminder", [("reminder", "b")])]
    assert p4.messages[0].alerts[0].since == T0  # bad since the first run

    p5, s5 = run(s4, [v("a", Verdict.FRESH), v("b", Verdict.STALE)], T0 + REMIND + timedelta(hours=23))
    assert sent(p5) == []  # the reminder clock restarted at the reminder

    p6, s6 = run(s5, [v("a", Verdict.FRESH), v("b", Verdict.FRESH)], T0 + REMIND * 2)
    assert sent(p6) == [("hook", "resolved", [("resolved", "b")])]

    p7, _ = run(s6, [v("a", Verdict.FRESH), v("b", Verdict.FRESH)], T0 + REMIND * 5)
    assert sent(p7) == []


def test_each_change_between_bad_verdicts_alerts_once():
    _, s1 = run(AlertState(), [v("a", Verdict.EXPIRING)], T0)
    p2, s2 = run(s1, [v("a", Verdict.STALE)], T0 + timedelta(hours=1))
    assert sent(p2) == [("hook", "alert", [("alert", "a")])]
    assert p2.messages[0].alerts[0].previous is Verdict.EXPIRING
    assert p2.messages[0].alerts[0].since == T0 + timedelta(hours=1)
    p3, _ = run(s2, [v("a", Verdict.STALE)], T0 + timedelta(hours=2))
    assert sent(p3) == []


def test_verdict_changes_are_reported_once_whatever_the_channels():
    p1, s1 = run(AlertState(), [v("a", Verdict.FRESH), v("b", Verdict.STALE)], T0, channels=("x", "y"))
    assert [(c.verdict.image, c.previous, c.verdict.verdict) for c in p1.changes] == [
        ("b", None, Verdict.STALE), ("a", None, Verdict.FRESH)]
    assert sent(p1) == [("x", "alert", [("alert", "b")]), ("y", "alert", [("alert", "b")])]
    p2, _ = run(s1, [v("a", Verdict.MISSING), v("b", Verdict.STALE)], T0, channels=("x", "y"))
    assert [(c.verdict.image, c.previous) for c in p2.changes] == [("a", Verdict.FRESH)]


def test_a_failed_channel_is_told_again_next_run_and_the_others_are_not():
    p1 = plan(AlertState(), [v("a", Verdict.STALE)], T0, channels=("ok", "down"))
    delivered = [m for m in p1.messages if m.channel == "ok"]
    s1 = p1.state_after(delivered, T0)
    assert s1.images["a"].verdict is Verdict.STALE  # the verdict is kept even though "down" missed it
    p2 = plan(s1, [v("a", Verdict.STALE)], T0 + timedelta(minutes=5), channels=("ok", "down"))
    assert sent(p2) == [("down", "alert", [("alert", "a")])]


def test_a_channel_that_missed_the_alert_is_not_sent_a_resolve_for_it():
    p1 = plan(AlertState(), [v("a", Verdict.STALE)], T0, channels=("down",))
    s1 = p1.state_after([], T0)
    p2, _ = run(s1, [v("a", Verdict.FRESH)], T0 + timedelta(hours=1), channels=("down",))
    assert sent(p2) == []


def test_a_new_channel_hears_about_every_bad_image_and_a_removed_one_is_forgotten():
    _, s1 = run(AlertState(), [v("a", Verdict.STALE), v("b", Verdict.FRESH)], T0, channels=("old",))
    p2, s2 = run(s1, [v("a", Verdict.STALE), v("b", Verdict.FRESH)], T0 + timedelta(hours=1), channels=("new",))
    assert sent(p2) == [("new", "alert", [("alert", "a")])]
    assert set(s2.images["a"].delivered) == {"new"}


def test_many_changes_for_one_channel_become_one_digest():
    verdicts = [v(f"img-{i}", Verdict.UNREACHABLE) for i in range(6)] + [v("ok", Verdict.FRESH)]
    p, s = run(AlertState(), verdicts, T0, threshold=5)
    assert [(m.channel, m.kind, len(m.alerts)) for m in p.messages] == [("hook", "digest", 6)]
    message = p.messages[0]
    assert message.subject() == "[vulnattest] 6 image(s) changed: 6 unreachable"
    assert message.text().splitlines()[-1] == "Every image: vulnattest status --config fleet.yaml"
    assert all(s.images[f"img-{i}"].delivered["hook"].verdict is Verdict.UNREACHABLE for i in range(6))
    payload = message.to_json()
    assert (payload["kind"], payload["count"], payload["counts"]) == ("digest", 6, {"unreachable": 6})
    recovered, _ = run(s, [v(f"img-{i}", Verdict.FRESH) for i in range(6)], T0 + timedelta(hours=1))
    assert [(m.kind, len(m.alerts)) for m in recovered.messages] == [("digest", 6)]
    assert recovered.messages[0].subject() == "[vulnattest] 6 image(s) changed: 6 resolved"


def test_up_to_the_threshold_each_alert_goes_alone():
    p = plan(AlertState(), [v(f"img-{i}", Verdict.STALE) for i in range(5)], T0, threshold=5)
    assert [m.kind for m in p.messages] == ["alert"] * 5


def test_a_digest_lists_fifty_images_then_points_at_status():
    p = plan(AlertState(), [v(f"img-{i:03}", Verdict.STALE) for i in range(60)], T0)
    lines = p.messages[0].text().splitlines()
    assert len([line for line in lines if line.startswith("- STALE")]) == 50
    assert "... and 10 more" in lines


def test_an_alert_says_what_broke_by_when_and_what_to_run():
    p = plan(AlertState(), [v("reg.example/app:1", Verdict.EXPIRING)], T0)
    message = p.messages[0]
    assert message.subject() == "[vulnattest] expiring: reg.example/app:1"
    text = message.text()
    assert "What broke: reg.example/app:1 is expiring" in text
    assert "Deadline: 2030-06-01T22:00:00Z (in 10h0m0s) - admission refuses Pods from then" in text
    assert "Run: vulnattest run --config fleet.yaml --image reg.example/app:1" in text
    assert "Last scan: scan finished 2030-05-26T06:00:00Z by trivy 0.76.0: C1" in text
    (alert,) = message.to_json()["alerts"]
    assert (alert["kind"], alert["verdict"], alert["previous"], alert["since"]) == (
        "alert", "expiring", None, "2030-06-01T12:00:00Z")


def test_an_image_refused_for_its_findings_is_refused_now_whatever_its_scans_deadline():
    # a policy verdict carries its scan's age deadline, days away: admission refuses the Pods on the findings now
    refused = dataclasses.replace(v("reg.example/app:1", Verdict.POLICY), deadline=T0 + timedelta(hours=160))
    text = plan(AlertState(), [refused], T0).messages[0].text()
    assert "Deadline: passed - admission refuses its Pods now" in text
    assert "in 160h" not in text
    digest = plan(AlertState(), [dataclasses.replace(refused, image=f"img-{i}") for i in range(6)], T0).messages[0]
    assert digest.kind == "digest"
    assert "| deadline now |" in digest.text() and "in 160h" not in digest.text()


def test_the_fleet_list_drops_state_of_images_no_longer_checked():
    _, s1 = run(AlertState(), [v("a", Verdict.STALE), v("gone", Verdict.STALE)], T0)
    subset, _ = run(s1, [v("a", Verdict.STALE)], T0)
    assert set(subset.observed.images) == {"a", "gone"}  # a run of some images keeps the others
    whole, _ = run(s1, [v("a", Verdict.STALE)], T0, fleet={"a"})
    assert set(whole.observed.images) == {"a"}


def state_of(verdict: Verdict, checked: datetime, **told: datetime) -> ImageState:
    return ImageState(verdict, since=checked, checked=checked, digest=None,
                      delivered={ch: Delivered(verdict, at) for ch, at in told.items()})


def test_state_round_trips_through_json():
    state = AlertState({"a": state_of(Verdict.STALE, T0, hook=T0), "b": state_of(Verdict.FRESH, T0)})
    assert AlertState.from_json(state.to_json(), "x") == state
    assert json.loads(state.to_json())["version"] == 1


@pytest.mark.parametrize("body", [b"{", b'{"version": 1, "images": {"a": {"verdict": "rotten"}}}',
                                  b'{"version": 99, "images": {}}'])
def test_an_unreadable_state_starts_over_rather_than_staying_silent(
    tmp_path: Path, body: bytes, caplog: pytest.LogCaptureFixture
):
    store = LocalReportStore(tmp_path)
    store.put(STATE_KEY, body, "0")
    with caplog.at_level(logging.WARNING):
        assert load_state(store) == AlertState()
    assert "every bad image alerts again" in caplog.text


def test_three_way_merge_keeps_what_each_run_changed():
    base = AlertState({"a": state_of(Verdict.STALE, T0, hook=T0), "b": state_of(Verdict.FRESH, T0)})
    later = T0 + timedelta(hours=1)
    ours = AlertState({**base.images, "a": state_of(Verdict.STALE, later, hook=later)})
    theirs = AlertState({**base.images, "b": state_of(Verdict.MISSING, later, mail=later),
                         "c": state_of(Verdict.FRESH, later)})
    merged = ours.merged(base, theirs)
    assert merged.images["a"] == ours.images["a"]
    assert merged.images["b"] == theirs.images["b"]
    assert "c" in merged.images
    # both changed one image: the later observation, and each channel's later delivery
    ours2 = AlertState({"a": state_of(Verdict.STALE, later, hook=later)})
    theirs2 = AlertState({"a": state_of(Verdict.INVALID, later + timedelta(minutes=1), mail=later)})
    both = ours2.merged(base, theirs2).images["a"]
    assert both.verdict is Verdict.INVALID
    assert set(both.delivered) == {"hook", "mail"}


def test_save_merges_with_a_run_that_saved_meanwhile(tmp_path: Path):
    store = LocalReportStore(tmp_path)
    base = load_state(store)
    theirs = AlertState({"b": state_of(Verdict.STALE, T0, hook=T0)})
    save_state(store, theirs, base)
    ours = AlertState({"a": state_of(Verdict.MISSING, T0, hook=T0)})
    stored = save_state(store, ours, base)
    assert set(load_state(store).images) == {"a", "b"}
    assert stored.uri.endswith("state/alerts.json")


# -- the webhook channel ---------------------------------------------------------------------------------------


def hook(handler: Any) -> WebhookChannel:
    return WebhookChannel(SecretStr(SECRET_URL), transport=httpx.MockTransport(handler))


def test_webhook_posts_the_message_json():
    received: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(204)

    message = plan(AlertState(), [v("a", Verdict.STALE)], T0).messages[0]
    hook(handler).send(message)
    (request,) = received
    assert (request.method, str(request.url)) == ("POST", SECRET_URL)
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert (body["source"], body["kind"], body["count"], body["alerts"][0]["image"]) == ("vulnattest", "alert", 1, "a")
    assert body["text"] == message.text()


@pytest.mark.parametrize(("answer", "error", "transient"), [
    (httpx.Response(503), "answered 503; retry later", True),
    (httpx.Response(429), "answered 429", True),
    (httpx.Response(404), "refused the alert (404); check the webhook URL", False),
    (httpx.ConnectError("[Errno 111] Connection refused for " + SECRET_URL), "cannot reach", True),
])
def test_webhook_failures_say_whether_to_retry_and_never_show_the_url(
    answer: httpx.Response | Exception, error: str, transient: bool
):
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    message = plan(AlertState(), [v("a", Verdict.STALE)], T0).messages[0]
    with pytest.raises(AlertError) as caught:
        hook(handler).send(message)
    assert isinstance(caught.value, TransientAlertError) is transient
    assert error in str(caught.value)
    assert "s3cr3t" not in str(caught.value) and caught.value.__cause__ is None
    assert "https://hooks.example.com/…" in str(caught.value)


def test_webhook_identity_and_text_forms_hold_no_secret():
    channel = hook(lambda r: httpx.Response(200))
    for text in (channel.id, str(channel), repr(channel), channel.redacted_url):
        assert "s3cr3t" not in text and "T000" not in text
    assert channel.id.startswith("webhook:hooks.example.com#")
    assert channel.id == hook(lambda r: httpx.Response(500)).id  # stable: state is keyed by it
    assert WebhookChannel(SecretStr(SECRET_URL), name="oncall").id == "oncall"


def test_httpx_request_log_shows_the_redacted_url(caplog: pytest.LogCaptureFixture):
    message = plan(AlertState(), [v("a", Verdict.STALE)], T0).messages[0]
    with caplog.at_level(logging.INFO, logger="httpx"):
        hook(lambda r: httpx.Response(200)).send(message)
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert requests and all("s3cr3t" not in line for line in requests)
    assert any("https://hooks.example.com/…" in line for line in requests)


def test_a_reminder_and_a_resolve_read_as_such():
    _, s1 = run(AlertState(), [v("a", Verdict.STALE)], T0)
    reminder = plan(s1, [v("a", Verdict.STALE, T0 + REMIND)], T0 + REMIND).messages[0]
    assert reminder.subject() == "[vulnattest] reminder: still stale: a"
    assert reminder.text().startswith("REMINDER: still STALE a\n")
    assert "Bad since: 2030-06-01T12:00:00Z (24h0m0s)" in reminder.text()
    resolved = plan(s1, [v("a", Verdict.FRESH)], T0 + timedelta(hours=2)).messages[0]
    assert resolved.alerts[0].kind is AlertKind.RESOLVED
    assert resolved.subject() == "[vulnattest] resolved: a is fresh again"
    assert resolved.text().startswith("RESOLVED a (was stale): a is fresh")
