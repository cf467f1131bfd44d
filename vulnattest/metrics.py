"""Prometheus metrics of the fleet, pushed to a Pushgateway after each run: per image, its verdict, the deadline from
which admission refuses its Pods and when its last scan finished; per flow, when it last completed (a dead man's
switch for Prometheus) and what it did. `deployments/prometheus-rules.yaml` alerts on them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from urllib.error import URLError

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from vulnattest.config import MetricsSettings
from vulnattest.errors import VulnattestError
from vulnattest.freshness import ImageVerdict, Verdict
from vulnattest.outcomes import ImageOutcome

__all__ = ["MetricsError", "push_outcomes", "push_verdicts"]


class MetricsError(VulnattestError):
    """The Pushgateway did not take the metrics."""


def push_verdicts(settings: MetricsSettings, verdicts: Sequence[ImageVerdict], now: datetime) -> None:
    """Push a whole fleet's check (its series replace the previous check's: an image gone from the fleet drops)."""
    registry = CollectorRegistry()
    verdict = Gauge("vulnattest_image_verdict", "1 for the image's current verdict", ["image", "verdict"],
                    registry=registry)
    deadline = Gauge("vulnattest_attestation_deadline_timestamp_seconds",
                     "when admission starts refusing the image's Pods (its scan finished + max_age)", ["image"],
                     registry=registry)
    finished = Gauge("vulnattest_scan_finished_timestamp_seconds", "when the image's attested scan finished",
                     ["image"], registry=registry)
    images = Gauge("vulnattest_images", "images of the fleet by verdict", ["verdict"], registry=registry)
    completed = Gauge("vulnattest_check_completed_timestamp_seconds", "when check-freshness last completed",
                      registry=registry)
    for v in verdicts:
        verdict.labels(v.image, v.verdict.value).set(1)
        if v.deadline is not None:
            deadline.labels(v.image).set(v.deadline.timestamp())
        if v.scan_finished is not None:
            finished.labels(v.image).set(v.scan_finished.timestamp())
    counts = Counter(v.verdict for v in verdicts)
    for kind in Verdict:
        images.labels(kind.value).set(counts[kind])
    completed.set(now.timestamp())
    _push(settings, registry, "check-freshness")


def push_outcomes(settings: MetricsSettings, outcomes: Sequence[ImageOutcome], now: datetime) -> None:
    """Push what a scan-and-attest run did."""
    registry = CollectorRegistry()
    images = Gauge("vulnattest_scan_images", "images of the last scan-and-attest run by result", ["result"],
                   registry=registry)
    completed = Gauge("vulnattest_scan_completed_timestamp_seconds", "when scan-and-attest last completed",
                      registry=registry)
    attested = sum(o.ok for o in outcomes)
    images.labels("attested").set(attested)
    images.labels("failed").set(len(outcomes) - attested)
    completed.set(now.timestamp())
    _push(settings, registry, "scan-and-attest")


def _push(settings: MetricsSettings, registry: CollectorRegistry, flow: str) -> None:
    if settings.pushgateway is None:
        return
    try:
        push_to_gateway(settings.pushgateway, job=settings.job, registry=registry, grouping_key={"flow": flow},
                        timeout=settings.timeout.total_seconds())
    except (URLError, OSError) as e:  # HTTPError is a URLError; the URL holds no secret (no credentials in it)
        raise MetricsError(f"the Pushgateway at {settings.pushgateway} did not take the {flow} metrics "
                           f"({getattr(e, 'reason', e)}); check metrics.pushgateway") from None
