"""A lock per image digest shared by every process talking to one Prefect server, on global concurrency limits."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from vulnattest.errors import TransientError
from vulnattest.locks import ThreadLocks, shard_of

ATTACH_LIMIT_PREFIX = "vulnattest-attach-"
SHARDS = 32
LEASE_SECONDS = 60  # the server's minimum; an attach takes well under a second
ACQUIRE_TIMEOUT_SECONDS = 120


def shard_limit(key: str) -> str:
    """The name of the global concurrency limit (of one slot) that guards `key`."""
    return f"{ATTACH_LIMIT_PREFIX}{shard_of(key, SHARDS):02d}"


def ensure_attach_limits() -> None:
    """Create the one-slot limits the attach locks use, where they do not exist yet (one read, few writes)."""
    with get_client(sync_client=True) as client:
        existing = {limit.name for limit in client.read_global_concurrency_limits(limit=200)}
        for shard in range(SHARDS):
            name = f"{ATTACH_LIMIT_PREFIX}{shard:02d}"
            if name not in existing:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


class PrefectAttachLocks:
    """Serialises writers of one image's ``.att`` tag across threads, processes and workers on many hosts.

    Each acquisition is a write to the server's database: cheap on PostgreSQL, slow (about a second under load) on
    the SQLite of an embedded server, which is why file locks are the default (config ``attach_lock``).

    Digests are spread over a fixed set of one-slot limits so the server holds a few dozen limits, not one per image.
    The in-process lock per shard keeps this process's threads from queueing at the server against each other.
    """

    def __init__(self) -> None:
        self._local = ThreadLocks()
        self._client = get_client(sync_client=True)
        self._client.__enter__()

    def close(self) -> None:
        """Close the API client."""
        self._client.__exit__(None, None, None)

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        name = shard_limit(key)
        with self._local(name):
            lease_id = _acquire(self._client, name)
            try:
                yield
            finally:
                self._client.release_concurrency_slots_with_lease(lease_id)


def _acquire(client: SyncPrefectClient, name: str) -> UUID:
    """Take the one slot of `name` on a lease (so a crashed holder frees it), waiting as the server advises.

    A plain lease request, not `prefect.concurrency.sync.concurrency`: an attach holds the slot for a fraction of a
    second, far shorter than that helper's lease-renewal machinery costs to start and stop.
    """
    deadline = time.monotonic() + ACQUIRE_TIMEOUT_SECONDS
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS
            )
            return UUID(response.json()["lease_id"])
        except httpx.HTTPStatusError as e:
            if e.response.status_code != 423 or time.monotonic() > deadline:
                raise TransientError(f"could not take the attach lock {name}: {e.response.status_code}") from e
            time.sleep(min(float(e.response.headers.get("Retry-After", "0.1")), 1.0) * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
