"""How the flows hand a fleet to their threads: in batches, one task run each, that pull their items from one shared
queue as they go, so few task runs carry many items and no thread sits idle while another still has a backlog."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_BATCH = 50
"""By default no task run takes more items than this, so a huge fleet still shows progress and a crash loses little."""


class BatchPlan(Generic[T]):
    """Hands out `items` in fleet order, one at a time, to the batches of whichever thread asks next (thread-safe).

    A batch starts with one item and pulls the next each time it finishes one, until it holds `size` items or the
    fleet runs out. So a fleet of N items takes about N / `size` task runs (never fewer than one per thread that found
    work), every thread stays busy until the last item is handed out, and none is left with a backlog while
    others idle, however unequal the items. A Prefect server spends ~40-50 ms of CPU recording a task run: per-item
    task runs would cost more than the work on a fleet of small images.
    """

    def __init__(self, items: Sequence[T], size: int | None = None) -> None:
        size = MAX_BATCH if size is None else size
        if size < 1:
            raise ValueError(f"a batch holds at least 1 item, not {size}")
        self.size = size
        self._items = list(items)
        self._next = 0
        self._lock = threading.Lock()

    def batch(self) -> Batch[T] | None:
        """A new batch holding the next item, or None when every item has been handed out."""
        first = self.next()
        return None if first is None else Batch([first], self)

    def next(self) -> T | None:
        """The next item, or None when every item has been handed out."""
        with self._lock:
            if self._next == len(self._items):
                return None
            self._next += 1
            return self._items[self._next - 1]

    @property
    def left(self) -> int:
        """How many items are still to be handed out."""
        return len(self._items) - self._next


class Batch(Generic[T]):
    """The items one task run takes. Iterating yields the items it holds, then pulls more from its plan until it
    holds the plan's size; a retried task run iterates again over what it holds and goes on pulling if there is room.
    A batch without a plan holds exactly its items."""

    def __init__(self, items: Sequence[T], plan: BatchPlan[T] | None = None) -> None:
        self.items = list(items)
        self._plan = plan

    def __iter__(self) -> Iterator[T]:
        index = 0
        while index < len(self.items) or self._pull():
            yield self.items[index]
            index += 1

    def _pull(self) -> bool:
        if self._plan is None or len(self.items) >= self._plan.size:
            return False
        item = self._plan.next()
        if item is None:
            return False
        self.items.append(item)
        return True

    def __str__(self) -> str:
        """The batch as a task run names it when it starts: ``a``, ``a and 3 more``, or ``a and up to 49 more``."""
        if not self.items:
            return "nothing"
        room = 0 if self._plan is None else min(self._plan.size - len(self.items), self._plan.left)
        if room > 0:
            return f"{self.items[0]} and up to {len(self.items) - 1 + room} more"
        return f"{self.items[0]} and {len(self.items) - 1} more" if len(self.items) > 1 else str(self.items[0])


def run_batches(plan: BatchPlan[T], workers: int, handle: Callable[[Batch[T]], None], thread_name: str) -> None:
    """Run `handle` on every batch of `plan` on `workers` threads, each in a copy of the caller's context (so the
    task runs it starts belong to the caller's flow run); `handle` must not raise for a batch's own failures."""

    def work() -> None:
        while (batch := plan.batch()) is not None:
            handle(batch)

    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix=thread_name) as pool:
        futures = [pool.submit(contextvars.copy_context().run, work) for _ in range(max(workers, 1))]
        for future in futures:
            future.result()
