"""The worst single insert into the session store as it grows (issue #10, item 7).

Run: .venv/bin/python loadtest/bench_insert.py [n] [--users] [--ttl-map]

Creates ``n`` sessions (default 2.5M) one at a time with ``SessionStore.create`` on the wall
clock (so the deadline buckets fill at the rate this process can create), timing each call in
wall and in the thread's CPU time, and prints the slowest calls with the store size at which
they happened. ``--users`` gives every session its own user (the per-user index grows as the
map does); ``--ttl-map`` times ``TTLMap.set`` alone instead. The cyclic collector is off while
timing: its stalls are service/heap.py's business, this measures the store's own structures
(a CPython dict doubling rehashes every key in one insert).
"""

import argparse
import gc
import heapq
import time

from store.sessions import SessionStore
from store.ttl import TTLMap

WORST = 8  # slowest calls reported


class _Clock:
    def now(self) -> float:
        return time.time()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=2_500_000)
    ap.add_argument("--users", action="store_true", help="one user per session")
    ap.add_argument("--ttl-map", action="store_true", help="time TTLMap.set alone")
    args = ap.parse_args()
    data = {"cart": [1, 2, 3], "theme": "dark"}
    store = SessionStore(_Clock(), max_anonymous_sessions=0)
    ttl: TTLMap[str, int] = TTLMap()
    # min-heaps of the slowest calls: (cpu ns, wall ns, size before) and (wall ns, cpu ns, size)
    worst_cpu: list[tuple[int, int, int]] = []
    worst_wall: list[tuple[int, int, int]] = []
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    slow = 0  # calls over 1 ms
    gc.disable()
    t_start = time.perf_counter()
    for i in range(args.n):
        if args.ttl_map:
            key = f"{i:043x}"
            w0, c0 = wall(), cpu()
            ttl.set(key, i, 1e9 + i / 100_000)
            c1, w1 = cpu(), wall()
        else:
            user = f"user{i}" if args.users else None
            w0, c0 = wall(), cpu()
            store.create(user=user, data=data)
            c1, w1 = cpu(), wall()
        c, w = c1 - c0, w1 - w0
        if c > 1_000_000:
            slow += 1
        for heap, row in ((worst_cpu, (c, w, i)), (worst_wall, (w, c, i))):
            if len(heap) < WORST:
                heapq.heappush(heap, row)
            elif row > heap[0]:
                heapq.heapreplace(heap, row)
    total = time.perf_counter() - t_start
    gc.enable()
    what = "TTLMap.set" if args.ttl_map else "SessionStore.create"
    users = ", one user each" if args.users and not args.ttl_map else ""
    print(f"{what}: {args.n:,} inserts{users}, {total:.1f} s, {slow} over 1 ms of CPU")
    print("  slowest in CPU time (the loop thread's own work):")
    for c, w, i in sorted(worst_cpu, reverse=True):
        print(f"  {c / 1e6:7.2f} ms cpu {w / 1e6:7.2f} ms wall   at size {i:,}")
    print("  slowest in wall time (includes time descheduled by other load on the box):")
    for w, c, i in sorted(worst_wall, reverse=True):
        print(f"  {c / 1e6:7.2f} ms cpu {w / 1e6:7.2f} ms wall   at size {i:,}")


if __name__ == "__main__":
    main()
