"""Prefect global concurrency limits: a lock per image digest shared by every process talking to one Prefect
server, and the per-registry limits that keep many workers from overloading one registry."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, suppress
from datetime import timedelta
from uuid import UUID

import httpx
from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from vulnattest.errors import TransientError
from vulnattest.images import ImageRef
from vulnattest.locks import ThreadLocks, shard_of

ATTACH_LIMIT_PREFIX = "vulnattest-attach-"
SHARDS = 32
# an attach takes well under a second, but holds the lock over six or more registry requests, each allowed the
# client's 30 s timeouts: the lease is long enough that only a registry far slower than that outlives it
LEASE_SECONDS = 300
ACQUIRE_TIMEOUT_SECONDS = 360  # past a lease: a crashed holder's slot frees before a waiter gives up
REGISTRY_LIMIT_PREFIX = "registry:"
REGISTRY_SLOT_TIMEOUT = timedelta(hours=2)


def shard_limit(key: str) -> str:
    """The name of the global concurrency limit (of one slot) that guards `key`."""
    return _attach_limit(shard_of(key, SHARDS))


def _attach_limit(shard: int) -> str:
    return f"{ATTACH_LIMIT_PREFIX}{shard:02d}"


def ensure_limits(wanted: Mapping[str, int]) -> dict[str, int]:
    """Create each global concurrency limit of `wanted` (name: slots) that does not exist; return every one's slots.

    An existing limit is kept as it is (an operator's, or another run's); an inactive one counts as 0.
    """
    with get_client(sync_client=True) as client:
        existing = {limit.name: limit for limit in client.read_global_concurrency_limits(limit=200)}
        found: dict[str, int] = {}
        for name, slots in wanted.items():
            limit = existing.get(name)
            if limit is None:
                with suppress(ObjectAlreadyExists):  # another run made it meanwhile: its slot count stands
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
                limit = client.read_global_concurrency_limit_by_name(name)
            found[name] = limit.limit if limit.active else 0
        return found


def ensure_attach_limits() -> None:
    """Create the one-slot limits the attach locks use, where they do not exist yet."""
    ensure_limits({_attach_limit(shard): 1 for shard in range(SHARDS)})


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
                _release(self._client, name, lease_id)


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
        except httpx.TransportError as e:
            raise TransientError(f"could not take the attach lock {name}: the Prefect server did not answer "
                                 f"({type(e).__name__})") from e


def _release(client: SyncPrefectClient, name: str, lease_id: UUID) -> None:
    """Give the slot back. When the server cannot be told, the lease frees it when it runs out: what was done under
    the lock (an attestation written and read back) stands, and is not failed for it."""
    try:
        client.release_concurrency_slots_with_lease(lease_id)
    except httpx.HTTPError as e:
        get_run_logger().warning("could not release the attach lock %s (%s); its lease frees it within %d s", name,
                                 type(e).__name__, LEASE_SECONDS)


# -- per-registry concurrency limits -------------------------------------------------------------------------------


def registry_limit(host: str) -> str:
    """The name of the global concurrency limit that bounds concurrent image work against `host`."""
    return f"{REGISTRY_LIMIT_PREFIX}{host}"


class RegistrySlots:
    """Slots this run holds on ``registry:<host>`` global concurrency limits, and an in-process gate per host that keeps
    the run's threads within them.

    A slot stands for one image in flight against the registry (the scanner pulling it, the attestation being
    written). The run takes its slots once, for as long as it works, rather than per image: on a SQLite server each
    acquisition costs about as much as a task run, and a thousand workers asking per image would load the Prefect
    server as much as the registry. Hosts without a limit are not limited.
    """

    def __init__(self, held: dict[str, int] | None = None) -> None:
        self.held = dict(held or {})
        self._gates = {host: threading.BoundedSemaphore(n) for host, n in self.held.items()}

    def gate(self, host: str) -> AbstractContextManager[object]:
        """Wait for one of this run's slots for `host` (no wait when `host` has no limit)."""
        gate = self._gates.get(host)
        return gate if gate is not None else nullcontext()

    @classmethod
    @contextmanager
    def hold(cls, refs: Sequence[ImageRef], concurrency_per_run: int,
             timeout: timedelta = REGISTRY_SLOT_TIMEOUT) -> Iterator[RegistrySlots]:
        """Take, for each host of `refs` that has a ``registry:<host>`` limit, as many slots as this run can use
        (its concurrency, at most its images there, at most the limit); release them on exit.

        Limits are taken in host order, so two runs never each hold one and wait for the other's.
        """
        wanted: dict[str, int] = {}
        for ref in refs:
            wanted[ref.registry] = wanted.get(ref.registry, 0) + 1
        limits = _active_limits(sorted(wanted))
        held = {host: min(concurrency_per_run, wanted[host], limit) for host, limit in limits.items()}
        with ExitStack() as stack:
            for host in sorted(held):
                name = registry_limit(host)
                get_run_logger().info("taking %d slot(s) of %s (limit %d)", held[host], name, limits[host])
                try:
                    stack.enter_context(concurrency(name, occupy=held[host], timeout_seconds=timeout.total_seconds(),
                                                    strict=True))
                except TimeoutError as e:
                    raise TransientError(
                        f"waited {timeout} for {held[host]} slot(s) of {name} held by other runs; see "
                        f"`prefect global-concurrency-limit inspect {name}` or raise its limit"
                    ) from e
            yield cls(held)


def ensure_registry_limits(hosts: Sequence[str], slots: int) -> dict[str, int]:
    """Create a ``registry:<host>`` limit of `slots` for each host that has none; return every host's limit (an
    operator's existing limit is kept as it is, inactive ones count as 0)."""
    limits = ensure_limits({registry_limit(host): slots for host in hosts})
    return {host: limits[registry_limit(host)] for host in hosts}


def _active_limits(hosts: Sequence[str]) -> dict[str, int]:
    """The slot count of each active ``registry:<host>`` limit among `hosts` (one read per host)."""
    found: dict[str, int] = {}
    with get_client(sync_client=True) as client:
        for host in hosts:
            try:
                limit = client.read_global_concurrency_limit_by_name(registry_limit(host))
            except ObjectNotFound:
                continue
            if limit.active and limit.limit > 0:
                found[host] = limit.limit
    return found
