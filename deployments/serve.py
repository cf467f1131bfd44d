"""Both flows as deployments with their schedules, served from one process (``vulnattest serve``)."""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.check_freshness import check_freshness
from flows.scan_and_attest import scan_and_attest

SCAN_CRON = "23 1 * * *"  # daily at 01:23 UTC, as the CI recipe it replaces
CHECK_CRON = "7 * * * *"  # hourly
DEPLOYMENT_NAME = "fleet"
# A second run of the same flow waits for the first: runs never race each other on one fleet.
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def fleet_deployments(config_path: str, *, scan_cron: str = SCAN_CRON, check_cron: str = CHECK_CRON
                      ) -> list[RunnerDeployment]:
    """The scan-and-attest and check-freshness deployments for the fleet in `config_path`."""
    return [
        RunnerDeployment.from_flow(
            scan_and_attest, name=DEPLOYMENT_NAME, schedules=[Cron(scan_cron, timezone="UTC")],
            parameters={"config_path": config_path},
            concurrency_limit=ONE_AT_A_TIME, tags=["vulnattest"],
            description="Rescan every image of the fleet and replace its signed vuln attestation.",
        ),
        RunnerDeployment.from_flow(
            check_freshness, name=DEPLOYMENT_NAME, schedules=[Cron(check_cron, timezone="UTC")],
            parameters={"config_path": config_path}, concurrency_limit=ONE_AT_A_TIME, tags=["vulnattest"],
            description="Check every image's attestation as admission will; alert on-call before it goes stale.",
        ),
    ]


def serve_fleet(config_path: str, *, limit: int | None = None) -> None:
    """Register both deployments and run their scheduled and manual runs until interrupted."""
    serve(*fleet_deployments(config_path), limit=limit)
