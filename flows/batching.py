"""How the flows hand a fleet to their threads: in batches, one task run each, sized so that few task runs carry many
images and no thread sits idle at the end."""

from __future__ import annotations

import contextvars
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_BATCH = 50
"""By default no task run takes more items than this, so a huge fleet still shows progress and a crash loses little."""


class BatchPlan(Generic[T]):
    """Hands out `items` in batches to whichever thread asks next (thread-safe).

    With a fixed `size`, every batch has that many items. Without, batches follow guided self-scheduling: each takes
    ``1 / workers`` of what is left, between `smallest` and `largest` items, so 200 images at 4 workers take 16 task
    runs instead of 200, and the batches shrink as the fleet runs out, so every thread finishes at about the same
    time. A Prefect server records some 25 task runs per second on SQLite and spends ~40-50 ms of CPU on each:
    per-item task runs would cost more than the work on a fleet of small images. Callers whose items take
    milliseconds raise `smallest` so a task run never costs more than the work it carries.
    """

    def __init__(self, items: Sequence[T], workers: int, size: int | None = None, *, smallest: int = 1,
                 largest: int = MAX_BATCH) -> None:
        if (size is not None and size < 1) or smallest < 1 or smallest > largest:
            raise ValueError(f"batch sizes must be at least 1 and smallest <= largest, not {size}, {smallest}, "
                             f"{largest}")
        self._items = list(items)
        self._next = 0
        self._workers = max(workers, 1)
        self._size = size
        self._smallest, self._largest = smallest, largest
        self._lock = threading.Lock()

    def take(self) -> list[T] | None:
        """The next batch, or None when every item has been handed out."""
        with self._lock:
            left = len(self._items) - self._next
            if left <= 0:
                return None
            size = self._size or min(max(math.ceil(left / self._workers), self._smallest), self._largest)
            batch = self._items[self._next:self._next + size]
            self._next += len(batch)
            return batch


def run_batches(plan: BatchPlan[T], workers: int, handle: Callable[[list[T]], None], thread_name: str) -> None:
    """Run `handle` on every batch of `plan` on `workers` threads, each in a copy of the caller's context (so the
    task runs it starts belong to the caller's flow run); `handle` must not raise for a batch's own failures."""

    def work() -> None:
        while (batch := plan.take()) is not None:
            handle(batch)

    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix=thread_name) as pool:
        futures = [pool.submit(contextvars.copy_context().run, work) for _ in range(max(workers, 1))]
        for future in futures:
            future.result()
