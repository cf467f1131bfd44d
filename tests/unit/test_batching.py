"""How the flows cut a fleet into task runs, and into batch flow runs."""

from __future__ import annotations

import importlib
import inspect
import threading
import time
from pathlib import Path

import pytest
import yaml

from flows.fleet_batches import plan_batches
from tasks.batching import MAX_BATCH, Batch, BatchPlan, run_batches
from vulnattest.images import ImageRef


def test_a_batch_pulls_the_next_item_as_it_goes_up_to_its_size():
    assert str(BatchPlan([0, 1], size=3).batch()) == "0 and up to 1 more"  # no more than the fleet has left
    plan = BatchPlan(list(range(7)), size=3)
    first = plan.batch()
    assert first is not None and first.items == [0] and str(first) == "0 and up to 2 more"
    second = plan.batch()
    assert second is not None
    assert [next(iter(first)), *list(second)] == [0, 1, 2, 3]  # each takes the next one when it asks
    assert list(first) == [0, 4, 5] and str(first) == "0 and 2 more"
    assert list(first) == [0, 4, 5]  # a retry walks what it holds, and it is full
    assert second.items == [1, 2, 3]
    third = plan.batch()
    assert third is not None and list(third) == [6] and plan.batch() is None


def test_batches_default_to_at_most_max_batch_and_refuse_empty_ones():
    plan = BatchPlan(list(range(10_000)))
    batch = plan.batch()
    assert batch is not None and len(list(batch)) == MAX_BATCH
    assert BatchPlan([]).batch() is None
    assert str(Batch(["a"])) == "a" and str(Batch(["a", "b"])) == "a and 1 more" and str(Batch([])) == "nothing"
    with pytest.raises(ValueError, match="at least 1"):
        BatchPlan([1], size=0)


def test_run_batches_gives_every_item_to_exactly_one_thread_and_few_task_runs():
    seen: list[int] = []
    threads: set[str] = set()
    batches: list[int] = []
    lock = threading.Lock()

    def handle(batch: Batch[int]) -> None:
        for item in batch:
            with lock:
                seen.append(item)
                threads.add(threading.current_thread().name)
        batches.append(len(batch.items))

    run_batches(BatchPlan(list(range(500)), size=50), 4, handle, "test")
    assert sorted(seen) == list(range(500))
    assert all(name.startswith("test") for name in threads)
    assert sum(batches) == 500 and max(batches) == 50 and len(batches) <= 10 + 4


def test_threads_finish_together_when_items_are_unequal():
    """A thread that drew slow items is not left with a backlog of them: the others take what is left."""
    done: dict[str, int] = {}
    lock = threading.Lock()

    def handle(batch: Batch[float]) -> None:
        for seconds in batch:
            time.sleep(seconds)
            with lock:
                done[threading.current_thread().name] = done.get(threading.current_thread().name, 0) + 1

    # one slow item among many quick ones, and batches large enough to hold the whole fleet
    run_batches(BatchPlan([0.5] + [0.005] * 20, size=100), 2, handle, "test")
    assert sorted(done.values())[0] == 1  # the thread with the slow item took nothing else meanwhile


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
