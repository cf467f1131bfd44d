"""Retries where the fault is: one request (a registry call, an S3 object, a webhook POST, a Fulcio or Rekor call)
tried again on its own, with exponential backoff, jitter and the server's ``Retry-After``, and never past a deadline.

A failure is retried only when it is a `TransientError` (the clients decide that from HTTP statuses and exception
types, `vulnattest.errors`). A per-image deadline (`deadline`) bounds every request made for that image, whichever
thread makes it, so retries can never keep an image busy longer than the run allows it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from vulnattest.errors import TransientError

log = logging.getLogger(__name__)
R = TypeVar("R")

_DEADLINE: ContextVar[float | None] = ContextVar("vulnattest_deadline", default=None)


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Within this block, no retry waits past `at` (seconds since the epoch, as `time.time()`); None: no deadline.

    An outer, earlier deadline stays in force."""
    outer = _DEADLINE.get()
    effective = at if outer is None else outer if at is None else min(at, outer)
    token = _DEADLINE.set(effective)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def time_left() -> float | None:
    """Seconds until the current deadline (negative when past), or None without one."""
    at = _DEADLINE.get()
    return None if at is None else at - time.time()


@dataclass(frozen=True)
class RetryPolicy:
    """How one request is retried: up to `attempts` tries within `budget` seconds (and the deadline), waiting
    `first_delay` * 2**n (at most `max_delay`, with jitter) between tries, or longer when the server says so."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 15.0
    budget: float = 90.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """How long to wait after failed try number `attempt` (1-based): half the backoff plus a random share of
        the other half, and never less than the server's ``Retry-After``."""
        backoff = min(self.max_delay, self.first_delay * 2 ** (attempt - 1))
        jittered = backoff / 2 + random.uniform(0, backoff / 2)  # noqa: S311 - jitter, not a secret
        return float(max(jittered, retry_after or 0.0))

    def call(self, request: Callable[[], R], what: str, *, sleep: Callable[[float], None] = time.sleep) -> R:
        """Run `request`, trying again on a TransientError while tries, budget and deadline allow; the last error
        is raised as it was (a TransientError, so a caller may still decide to retry later)."""
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                return request()
            except TransientError as e:
                wait = self.delay(attempt, e.retry_after)
                left = self.budget - (time.monotonic() - started)
                until_deadline = time_left()
                if until_deadline is not None:
                    left = min(left, until_deadline)
                if attempt >= self.attempts or wait > left:
                    if attempt > 1:
                        e.add_note(f"(gave up after {attempt} tries in {time.monotonic() - started:.1f} s)")
                    raise
                log.info("%s: %s; try %d of %d in %.1f s", what, e, attempt + 1, self.attempts, wait)
                sleep(wait)
                attempt += 1


REQUEST_RETRIES = RetryPolicy()
"""The default for one request: five tries within 90 s."""

NO_RETRY = RetryPolicy(attempts=1)
"""One try only: for callers that retry at a higher level, and for tests."""
