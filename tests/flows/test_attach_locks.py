"""Writers in different processes serialise on the Prefect server's global concurrency limits."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    assert shard_limit("a") == shard_limit("a")
