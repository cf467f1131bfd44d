"""Running a flow from the command line: against PREFECT_API_URL or a local server started for the command, with a
bounded wait when the API is lost mid-run, and never leaving a server behind."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prefect.client.schemas.objects import State

API_RETRIES = 3
"""Requests to the Prefect API a command makes are retried this often (Prefect's default, 5 with backoff, kept a
command waiting minutes for an API that had gone)."""
API_TIMEOUT = 20.0


@contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API this process talks to: PREFECT_API_URL, or else a local Prefect server started for the block
    (its database in PREFECT_HOME, so the runs stay in its history) and stopped after it, or by Linux if this
    process is killed; yields the API URL. Prefect's own temporary server would outlive a killed command."""
    from prefect.settings import (
        PREFECT_API_REQUEST_TIMEOUT,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        PREFECT_HOME,
        temporary_settings,
    )

    from deployments.server import LocalPrefectServer

    bounded = {PREFECT_CLIENT_MAX_RETRIES: API_RETRIES, PREFECT_API_REQUEST_TIMEOUT: API_TIMEOUT}
    url = PREFECT_API_URL.value()
    with _api_failures_in_one_line():
        if url:
            with temporary_settings(updates=bounded):
                yield str(url)
            return
        with LocalPrefectServer(home=Path(PREFECT_HOME.value())) as server, \
                temporary_settings(updates={**bounded, PREFECT_API_URL: server.api_url}):
            yield server.api_url


class _NoTransportTracebacks(logging.Filter):
    """Keeps a log record's message but drops its traceback when what failed is the connection to the API: the
    command says so itself, in a sentence."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, httpx.TransportError):
            record.exc_info, record.exc_text = None, None
        return True


@contextmanager
def _api_failures_in_one_line() -> Iterator[None]:
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    keep = _NoTransportTracebacks()
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


@dataclass(frozen=True)
class FlowCall:
    """What calling a flow came to: its final state, when it has one, and why the API's record of it is not to be
    trusted (`lost`), when the API failed under it."""

    state: State[Any] | None
    lost: str | None
    started: float


def call_flow(call: Callable[[], State[Any]]) -> FlowCall:
    """Call a flow (with ``return_state=True``) and check the server recorded how it ended; a Prefect API that failed
    under it is reported in `lost`, never raised (the work the flow did is in the registry and the store)."""
    from vulnattest.errors import VulnattestError

    started = time.time()
    try:
        state = call()
    except VulnattestError:
        raise
    except Exception as e:  # noqa: BLE001 - the Prefect API failed under the flow: say so, never a traceback
        return FlowCall(None, f"{type(e).__name__}: {e}", started)
    return FlowCall(state, _unrecorded(state), started)


def _unrecorded(state: State[Any]) -> str | None:
    """None when the server holds the run's final state, else why the record cannot be trusted."""
    from prefect.client.orchestration import get_client

    run_id = state.state_details.flow_run_id
    if run_id is None:
        return None
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
    except Exception as e:  # noqa: BLE001 - any failure to read it back means the record is not known
        return f"cannot read the run back ({type(e).__name__})"
    if run.state is None or not run.state.is_final():
        return f"the server holds the run as {run.state.name if run.state else 'without a state'}"
    return None


def drain_prefect_workers(timeout: float = 5.0) -> None:
    """Send what Prefect's log and event workers still queue, for at most `timeout` seconds each, and stop them (the
    next use makes new ones, for the API configured then): at exit they would otherwise retry a lost API for
    minutes. In a thread that runs an event loop (a browser driver's) they are stopped without waiting."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (EventsWorker, APILogWorker):
        waiting = worker.drain_all(timeout=timeout)
        if inspect.iscoroutine(waiting):  # Prefect hands back the wait to await: nothing here can
            waiting.close()
