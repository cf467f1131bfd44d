"""The check-freshness flow: a verdict per image, alerts and events for what changed, and the fleet table."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from prefect import State, flow, get_run_logger
from prefect.states import Failed
from pydantic import BaseModel, Field

from flows import fleet_config, publish_markdown, publish_table, run_name
from tasks.batching import Batch, BatchPlan, run_batches
from tasks.freshness import (
    ImageCheck,
    alert_channels,
    check_images,
    emit_change_event,
    load_alert_state,
    probe_registry,
    save_alert_state,
    send_alert,
)
from vulnattest.alerts import AlertChannel, Message, plan_alerts
from vulnattest.config import DURATION_PATTERN, FleetConfig, parse_duration
from vulnattest.freshness import FreshnessChecker, ImageVerdict, counts_text, fleet_markdown, fleet_rows
from vulnattest.metrics import MetricsError, push_verdicts
from vulnattest.services import Services
from vulnattest.timeline import timeline_markdown

P = ParamSpec("P")
R = TypeVar("R")
ARTIFACT_KEY = "check-freshness"
WHAT_IF_ARTIFACT_KEY = "check-freshness-what-if"  # a what-if's verdicts are not the fleet's: kept apart in the UI
TABLE_ARTIFACT_KEY = "check-freshness-fleet"  # every image, worst first
TIMELINE_ARTIFACT_KEY = "check-freshness-timeline"  # the fleet table's rows as a picture over time
IMAGES_PER_THREAD = 20
MAX_CHECKS_PER_TASK = 250
"""A check costs milliseconds, a task run ~50 ms of Prefect server CPU: a small fleet gets a thread (and a task run)
per `IMAGES_PER_THREAD` images at most, and no task run takes more than `MAX_CHECKS_PER_TASK` (a second or two)."""


class CheckOptions(BaseModel):
    """What an operator may change for one run (the Prefect UI shows these fields as a form)."""

    max_age: str | None = Field(
        None, title="Max age", description="judge against this limit instead of freshness.max_age, e.g. 72h "
        "(a what-if: would these images pass a stricter policy? It sends no alert: admission has not changed)",
        pattern=DURATION_PATTERN,
    )
    send_alerts: bool = Field(
        True, title="Send alerts", description="off: tell no one, emit no events, and leave the alert state as it is",
    )


@flow(name="check-freshness", log_prints=False, flow_run_name=run_name("check"))
def check_freshness(
    config_path: str | None = None, images: list[str] | None = None, options: CheckOptions | None = None,
) -> list[ImageVerdict] | State[Any]:
    """Judge every image's vuln attestations as admission will, tell on-call what changed, publish the fleet table.

    Fails (still carrying every verdict) when an alert channel or the alert state could not be reached, so a
    silent channel shows in the UI; stale images themselves are a finding, not a failure of this flow.

    Args:
        config_path: the fleet configuration file, as the worker sees it (none: the built-in defaults, with
            `images` naming the images)
        images: only these images of the fleet (each as listed in the config); empty: all
        options: what-if and quiet runs: another max_age, or no alerts
    """
    logger = get_run_logger()
    options = options or CheckOptions()
    config = fleet_config(config_path, images)
    services = Services.for_checking(config)
    checker = FreshnessChecker.from_config(config, services.verifier(), config_path)
    send_alerts = options.send_alerts and not options.max_age
    if options.max_age:
        checker = checker.with_max_age(parse_duration(options.max_age))
        logger.info("judging against max_age %s for this run, a what-if: no alerts, no events, the alert state "
                    "left as it is", options.max_age)
    refs = config.image_refs()
    channels = alert_channels(config.alerts, config.freshness.remind_every) if send_alerts else []
    problems = list(checker.vex_problems)
    logger.info("checking %d image(s), %d at a time; %d alert channel(s)", len(refs), config.concurrency,
                len(channels))
    try:
        with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="freshness") as pool:
            hosts = sorted({ref.registry for ref in refs})
            down = dict(zip(hosts, _gather(pool, [(_probe, (host, services)) for host in hosts]), strict=True))
            checks = [ImageCheck(ref) for ref in refs]
            for check in checks:  # a registry that failed its probe costs no request per image
                if (error := down.get(check.ref.registry)) is not None:
                    check.verdict = checker.unreachable(check.ref, error, datetime.now(UTC))
            reachable = [check for check in checks if check.verdict is None]
            workers = min(config.concurrency, math.ceil(len(reachable) / IMAGES_PER_THREAD))
            run_batches(BatchPlan(reachable, MAX_CHECKS_PER_TASK), workers,
                        lambda batch: _check(batch, checker, services), "freshness")
            verdicts = [check.final(checker) for check in checks]
            try:
                if send_alerts:
                    problems += _alert(pool, config, verdicts, channels, checker, services, whole_fleet=not images)
            except Exception as e:  # the verdicts are published whatever alerting does
                logger.exception("alerting crashed")
                problems.append(f"alerting crashed ({type(e).__name__}: {e}); this is a vulnattest bug")
            if send_alerts and not images:  # a subset would replace the whole fleet's series
                try:
                    push_verdicts(config.metrics, verdicts, datetime.now(UTC))
                except MetricsError as e:
                    problems.append(str(e))
    finally:
        services.close()
    publish_markdown(key=WHAT_IF_ARTIFACT_KEY if options.max_age else ARTIFACT_KEY,
                             markdown=fleet_markdown(verdicts, problems=problems), description=counts_text(verdicts))
    if not options.max_age:
        publish_table(key=TABLE_ARTIFACT_KEY, rows=fleet_rows(verdicts), description=counts_text(verdicts))
        publish_markdown(key=TIMELINE_ARTIFACT_KEY, description=counts_text(verdicts),
                         markdown=timeline_markdown(verdicts, datetime.now(UTC), checker.rules.warn_before))
    logger.info("%s", counts_text(verdicts))
    if problems:
        message = f"{len(problems)} problem(s) this run: " + "; ".join(problems)
        logger.error("%s", message)
        return Failed(message=message, data=verdicts)
    return verdicts


def _alert(
    pool: ThreadPoolExecutor, config: FleetConfig, verdicts: list[ImageVerdict], channels: Sequence[AlertChannel],
    checker: FreshnessChecker, services: Services, *, whole_fleet: bool,
) -> list[str]:
    """Plan and send alerts, emit events, save the state; return what went wrong (never raises)."""
    logger = get_run_logger()
    try:
        base = load_alert_state(services)
    except Exception as e:  # noqa: BLE001 - without the state no change is known; the verdicts still stand
        return [f"cannot read the alert state, so no alert or event was sent: {e}"]
    now = datetime.now(UTC)
    plan = plan_alerts(
        base, verdicts, [c.id for c in channels], now, remind_every=config.freshness.remind_every,
        digest_threshold=config.freshness.digest_threshold, commands=checker.commands,
        fleet={str(ref) for ref in config.image_refs()} if whole_fleet else None,
    )
    for change in plan.changes:
        emit_change_event(change)
    by_id = {c.id: c for c in channels}
    outcomes = _gather(pool, [(_deliver, (message, by_id[message.channel])) for message in plan.messages])
    delivered = [m for m, error in zip(plan.messages, outcomes, strict=True) if error is None]
    problems = [error for error in outcomes if error is not None]
    logger.info("%d verdict change(s); %d of %d message(s) delivered", len(plan.changes), len(delivered),
                len(plan.messages))
    try:
        save_alert_state(plan.state_after(delivered, now), base, services)
    except Exception as e:  # noqa: BLE001 - the next run repeats what this one sent; report it
        problems.append(f"cannot save the alert state, so the next run repeats these alerts: {e}")
    return problems


def _probe(host: str, services: Services) -> BaseException | None:
    """None when `host` answers, else why not (after retries)."""
    try:
        probe_registry(host, services)
    except Exception as e:  # noqa: BLE001 - a host that cannot be probed makes its images unreachable, no more
        return e
    return None


def _check(batch: Batch[ImageCheck], checker: FreshnessChecker, services: Services) -> None:
    """Check one batch; never raises: an image left without a verdict (retries exhausted) is `unreachable`."""
    try:
        check_images(batch, checker, services)
    except Exception as e:  # noqa: BLE001 - the images carry their own verdicts or errors
        for check in batch.items:
            if check.verdict is None:
                check.error = check.error or e


def _deliver(message: Message, channel: AlertChannel) -> str | None:
    """None when delivered, else why not (after retries); channel errors never hold the secret URL."""
    try:
        send_alert(message, channel)
    except Exception as e:  # noqa: BLE001 - a channel failure is reported, never lets verdicts go
        return f"{message.kind} to {channel.id} not delivered: {e}"
    return None


def _gather(pool: ThreadPoolExecutor, calls: Sequence[tuple[Callable[..., R], tuple[object, ...]]]) -> list[R]:
    """Run `calls` on the pool, each in a copy of this flow run's context (so their task runs belong to it)."""
    futures: list[Future[R]] = [pool.submit(contextvars.copy_context().run, fn, *args) for fn, args in calls]
    return [f.result() for f in futures]
