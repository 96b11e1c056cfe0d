"""service/backend/heap.py: heap is frozen as it grows, garbage is collected before it is frozen,
and no single collection walks much more than the budget."""

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from service.backend import heap


@pytest.fixture
def clean_gc() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()  # leave the test process's collector as other tests expect it


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_growth_is_frozen_and_collections_stay_small(clean_gc: None) -> None:
    walks: list[tuple[int, float]] = []
    began = [0.0]

    def watch(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                walks.append((len(gc.get_objects(2)), time.perf_counter() - began[0]))

    async def main() -> None:
        frozen = gc.get_freeze_count()
        task = asyncio.create_task(heap.grow_frozen(check=0.001, budget=5_000))
        data = []
        for i in range(200):
            data += [{"n": [i, j]} for j in range(500)]  # long-lived, tracked containers
            await asyncio.sleep(0.001)
        task.cancel()
        # 200k objects; frozen as they grew (read before ``data`` is freed with this frame).
        assert gc.get_freeze_count() - frozen >= 150_000
        assert heap.old_unfrozen() < 50_000

    gc.callbacks.append(watch)
    try:
        asyncio.run(main())
    finally:
        gc.callbacks.remove(watch)
    # Without the freezer full collections walk up to 200k objects; with it they never walk
    # much more than the budget plus one check's growth.
    assert walks and max(n for n, _ in walks) < 50_000, walks


def test_garbage_is_collected_before_the_freeze(clean_gc: None) -> None:
    gc.disable()
    try:
        garbage = [Node() for _ in range(1000)]
        alive = weakref.WeakSet(garbage)
        del garbage
        assert len(alive) == 1000  # cycles: reference counting alone cannot free them
        heap.collect_and_freeze()
        assert len(alive) == 0  # collected, not frozen (frozen garbage would leak)
    finally:
        gc.enable()
