"""Writers in different processes serialise on the Prefect server's global concurrency limits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prefect import flow

from tasks.locks import ATTACH_LIMIT_PREFIX, SHARDS, PrefectAttachLocks, ensure_attach_limits, shard_limit
from tests.integration.test_cosign_layout import race_writers
from vulnattest.attestations import VULN_PREDICATE_TYPE
from vulnattest.attestations.cosign import CosignAttacher
from vulnattest.demo.registry import LocalRegistry


@pytest.mark.usefixtures("prefect_server")
def test_attachers_that_share_nothing_but_the_prefect_server_lose_nothing(
    registry: LocalRegistry, keypair: tuple[Path, Path]
):
    ensure_attach_limits()
    ensure_attach_limits()  # idempotent
    # one PrefectAttachLocks each: no in-process lock is shared, as between separate workers
    attachers = [CosignAttacher(lock=PrefectAttachLocks()) for _ in range(6)]
    left = race_writers(registry, keypair[0], "locks/race", attachers)
    assert left == sorted([VULN_PREDICATE_TYPE] + [f"https://example.com/type-{i}" for i in (1, 3, 5)])


def test_keys_spread_over_a_fixed_set_of_limits():
    names = {shard_limit(f"127.0.0.1:5000/app@sha256:{i:064x}") for i in range(500)}
    assert len(names) == SHARDS
    assert all(n.startswith(ATTACH_LIMIT_PREFIX) for n in names)
    # every worker must name the same limit for a key: a hash salted per process (Python's hash()) would not
    other = subprocess.run([sys.executable, "-c", "from tasks.locks import shard_limit; print(shard_limit('a'))"],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    assert other.stdout.strip() == shard_limit("a")


@pytest.mark.usefixtures("prefect_server")
def test_a_release_the_server_never_hears_of_fails_nothing_done_under_the_lock(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    ensure_attach_limits()
    locks = PrefectAttachLocks()
    client = locks._client  # the one client the locks hold: its release fails
    release, leases = client.release_concurrency_slots_with_lease, []

    def unreachable(lease_id: object) -> None:
        leases.append(lease_id)
        raise httpx.ConnectError("connection refused")

    @flow
    def attach_under_the_lock() -> str:
        with locks("127.0.0.1:5000/app@sha256:" + "d" * 64):
            return "attached"

    monkeypatch.setattr(client, "release_concurrency_slots_with_lease", unreachable)
    try:
        assert attach_under_the_lock() == "attached"
    finally:
        for lease in leases:  # released after all, so no later test waits for the lease to run out
            release(lease)
        locks.close()
    assert "could not release the attach lock" in caplog.text
    assert "its lease frees it within 300 s" in caplog.text
