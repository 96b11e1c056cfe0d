"""Keep CPython's cyclic collector off the data set: freeze the heap as it grows.

The store is millions of long-lived container objects (sessions, their data dicts, skip list
runs) without reference cycles; reference counting frees them. The cyclic collector has nothing
to find there, but a full collection walks every tracked object that is not frozen, with the
loop stopped: ~0.5 us an object on the 2-core dev VM, so 250k new sessions (~750k objects)
cost a 330-700 ms stall -- whether the collector decides to run by itself (its "old generation
grew by 25%" rule) or someone calls ``gc.collect()``. ``gc.freeze()`` moves every object to a
permanent generation that no collection walks; it costs microseconds (a list splice).

    recover()      gc off while loading, then freeze the loaded heap (persistence.py)
    grow_frozen()  every CHECK seconds: count the old generation's unfrozen objects; past
                   BUDGET, collect (a full collection now walks only those) and freeze

So a collection never walks more than about BUDGET objects plus CHECK seconds of growth:
measured in loadtest/RESULTS.md ("GC stall"), through periodic snapshots with 250k and 1M
new sessions between two of them. The collector's own automatic runs are bounded the same way,
since they too skip frozen objects.

What freezing costs: an object frozen while alive and later dropped inside a reference cycle
is never reclaimed (reference counting still frees everything else). Freezes come once per
BUDGET long-lived objects, not on a clock, so a server whose data does not grow never freezes
and its transient garbage is collected as usual; a growing one freezes, with its data, only
the requests in flight at those instants. The collection before each freeze keeps garbage that
already exists from being frozen.

Before this module the service ran ``gc.collect(); gc.freeze()`` after every periodic snapshot:
the same idea on a clock, one full collection over a whole interval's new objects (the stall
above), and the automatic collections in between still walked the growing old generation.
"""

import asyncio
import gc
import logging
import time

log = logging.getLogger("rankd.heap")

CHECK = 0.1  # seconds between looks at the old generation
BUDGET = 10_000  # unfrozen old objects that trigger collect + freeze (~5 ms to walk)


def old_unfrozen() -> int:
    """Objects in the oldest generation that are not frozen. O(that number), ~20 ns each."""
    return len(gc.get_objects(generation=2))


def collect_and_freeze() -> float:
    """Full collection (it walks only what is not frozen yet), then freeze the survivors.
    Returns the seconds it took."""
    began = time.perf_counter()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - began


async def grow_frozen(check: float = CHECK, budget: int = BUDGET) -> None:
    """Run forever on the event loop: freeze the heap whenever BUDGET old objects piled up."""
    while True:
        await asyncio.sleep(check)
        if gc.isenabled() and old_unfrozen() > budget:
            took = collect_and_freeze()
            if took > 0.05:
                log.warning("heap freeze took %.0f ms (budget %d objects)", took * 1e3, budget)
