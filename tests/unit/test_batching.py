"""How the flows cut a fleet into task runs, and into batch flow runs."""

from __future__ import annotations

import importlib
import inspect
import threading
from pathlib import Path

import pytest
import yaml

from flows.batching import MAX_BATCH, BatchPlan, run_batches
from flows.fleet_batches import plan_batches
from vulnattest.images import ImageRef


def _sizes(plan: BatchPlan[int]) -> list[int]:
    sizes = []
    while (batch := plan.take()) is not None:
        sizes.append(len(batch))
    return sizes


def test_guided_batches_shrink_to_single_items_and_hand_out_everything_once():
    sizes = _sizes(BatchPlan(list(range(200)), workers=4))
    assert sum(sizes) == 200
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == 50 and sizes[-3:] == [1, 1, 1]  # a quarter of the fleet each to start, single images to end
    assert len(sizes) == 16  # not one task run per image


def test_batches_stay_within_their_bounds_and_a_fixed_size_is_kept():
    assert max(_sizes(BatchPlan(list(range(10_000)), workers=4))) == MAX_BATCH
    assert min(_sizes(BatchPlan(list(range(1000)), workers=4, smallest=20, largest=250))[:-1]) == 20
    assert _sizes(BatchPlan(list(range(7)), workers=4, size=3)) == [3, 3, 1]
    assert _sizes(BatchPlan([], workers=4)) == []
    with pytest.raises(ValueError, match="at least 1"):
        BatchPlan([1], workers=1, size=0)


def test_run_batches_gives_every_item_to_exactly_one_thread():
    seen: list[int] = []
    threads: set[str] = set()
    lock = threading.Lock()

    def handle(batch: list[int]) -> None:
        with lock:
            seen.extend(batch)
            threads.add(threading.current_thread().name)

    run_batches(BatchPlan(list(range(500)), workers=4), 4, handle, "test")
    assert sorted(seen) == list(range(500))
    assert all(name.startswith("test") for name in threads)


def test_fleet_batches_hold_one_registry_each_in_fleet_order():
    refs = [ImageRef.parse(text) for text in
            ["a.example/x:1", "b.example/y:1", "a.example/z:1", "a.example/w:1", "b.example/v:1"]]
    batches = plan_batches(refs, batch_size=2, concurrency=4)
    assert [(b.host, b.images, b.slots) for b in batches] == [
        ("a.example", ["a.example/x:1", "a.example/z:1"], 2),
        ("a.example", ["a.example/w:1"], 1),
        ("b.example", ["b.example/y:1", "b.example/v:1"], 2),
    ]
    assert [b.index for b in batches] == [0, 1, 2]


def test_batch_deployments_point_at_real_flows_with_real_parameters():
    spec = yaml.safe_load((Path(__file__).parents[2] / "deployments" / "batches.yaml").read_text())
    found = {}
    for deployment in spec["deployments"]:
        module, _, name = deployment["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
        assert deployment["work_pool"]["name"] == "vulnattest"
        found[f"{flow.name}/{deployment['name']}"] = deployment
    parent, batch = found["scan-fleet-in-batches/fleet"], found["scan-and-attest/batch"]
    assert parent["parameters"]["deployment"] == "scan-and-attest/batch"
    assert parent["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    # batches run side by side: no schedule of their own and no one-at-a-time limit
    assert "schedules" not in batch and "concurrency_limit" not in batch
