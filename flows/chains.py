"""Run many chains of dependent task runs (one chain per image) with a bounded number in flight.

A chain is a generator: it submits a task, yields the future, and gets the task's result back (or its exception
thrown in) when the task run ends; then it submits the next task. Only finished futures are passed downstream, so
no worker thread ever blocks waiting for an upstream task, and at most `limit` chains hold a task run at once, so
a chain's large intermediate values (a scan report) live only while it runs.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Generator, Iterable
from typing import Any, Generic, TypeVar

from prefect.futures import PrefectFuture

R = TypeVar("R")
K = TypeVar("K")

Chain = Generator[PrefectFuture[Any], Any, R]


class ChainRunner(Generic[K, R]):
    """Runs chains, keyed by an item, at most `limit` at once and at most `per_group[group(key)]` of one group."""

    def __init__(self, limit: int, group: Callable[[K], str] = str, per_group: dict[str, int] | None = None) -> None:
        if limit < 1:
            raise ValueError(f"at least one chain must run at a time, not {limit}")
        self.limit = limit
        self._group = group
        self._per_group = dict(per_group or {})
        self._running: dict[str, int] = {}
        self._done: queue.Queue[tuple[int, PrefectFuture[Any]]] = queue.Queue()

    def run(self, items: Iterable[tuple[K, Chain[R]]], on_result: Callable[[R], None] | None = None) -> list[R]:
        """Run every chain to its end; return what each returned, in the order of `items`. `on_result` hears of
        each as it ends (in this thread)."""
        pending = deque(enumerate(items))
        running: dict[int, tuple[K, Chain[R]]] = {}
        results: dict[int, R] = {}

        def advance(index: int, send: Callable[[Chain[R]], PrefectFuture[Any]]) -> None:
            key, chain = running[index]
            try:
                future = send(chain)
            except StopIteration as stop:
                results[index] = stop.value
                del running[index]
                self._running[self._group(key)] -= 1
                if on_result is not None:
                    on_result(stop.value)
                return
            future.add_done_callback(lambda f: self._done.put((index, f)))

        while pending or running:
            while len(running) < self.limit and (admitted := self._admit(pending)) is not None:
                running[admitted[0]] = admitted[1]
                advance(admitted[0], next)
            if not running:
                if pending:
                    raise ValueError("no chain may start: every group left has a limit of 0")
                break
            index, future = self._done.get()
            try:
                value = future.result()
            except Exception as e:  # noqa: BLE001 - the chain decides what a failed task means for it
                advance(index, _throwing(e))
            else:
                advance(index, _sending(value))
        return [results[index] for index in sorted(results)]

    def _admit(self, pending: deque[tuple[int, tuple[K, Chain[R]]]]) -> tuple[int, tuple[K, Chain[R]]] | None:
        """Take the first pending chain whose group has room (None when none has), and count it as running."""
        for position, (index, (key, chain)) in enumerate(pending):
            group = self._group(key)
            if self._running.get(group, 0) < self._per_group.get(group, self.limit):
                del pending[position]
                self._running[group] = self._running.get(group, 0) + 1
                return index, (key, chain)
        return None


def _sending(value: Any) -> Callable[[Chain[Any]], PrefectFuture[Any]]:
    return lambda chain: chain.send(value)


def _throwing(error: BaseException) -> Callable[[Chain[Any]], PrefectFuture[Any]]:
    return lambda chain: chain.throw(error)
