"""Task-level retries: only for transient failures that outlasted the per-request retries of the clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import exponential_backoff

from vulnattest.errors import is_transient

P = ParamSpec("P")
R = TypeVar("R")


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry when the failure is a TransientError (or caused by one)."""
    try:
        state.result(raise_on_failure=True)
    except Exception as e:  # noqa: BLE001 - the state's exception is what we classify
        return is_transient(e)
    return False


def step(name: str, run_name: str, *, retries: int = 3, backoff: float = 2.0) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A task with effects: retried with exponential backoff (`backoff` seconds, doubling) and jitter on transient
    errors only; never cached and its result never persisted (a scan report is large, and a rerun must redo it)."""
    return task(
        name=name, task_run_name=run_name, retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=backoff) if retries else 0,
        retry_jitter_factor=0.5, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE, persist_result=False,
    )
