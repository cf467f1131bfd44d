"""Retry only what is worth retrying: timeouts, throttling, 5xx and dropped connections."""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from vulnattest.errors import is_transient


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry when the failure is a TransientError (or caused by one)."""
    try:
        state.result(raise_on_failure=True)
    except Exception as e:  # noqa: BLE001 - the state's exception is what we classify
        return is_transient(e)
    return False
