"""Session store side by side: two rankd source trees (e.g. main and a branch), interleaved.

For a change to store/ttl.py or store/sessions.py that must not cost the hot paths (issue #10:
the sharded maps must stay within ~10% of main on create and purge). Each round runs one
process per tree (``PYTHONPATH=<tree>``, so its own ``store`` loads), alternating who goes
first; each process measures, in its own CPU time, with the cyclic collector off (the server
keeps its data frozen, service/backend/heap.py):

    create      SessionStore.create filling to n (five sessions per user, as bench_sessions)
    worst       the slowest single one of those creates (CPU ms)
    get+touch   100k SessionStore.get of random live ids
    purge ss    SessionStore.purge(max_items=1000) of all n, due at once
    purge 1 s   TTLMap.purge(1000) of n keys due within the same second (insertion order)
    purge 30 s  TTLMap.purge(1000) of n keys with deadlines spread at random over 30 s

Printed: the median of each figure per tree over --rounds, and the ratio B / A (for create,
worst and get+touch lower is better; for the purges, M/s, higher is better).

    git archive main store | tar -x -C /tmp/rankd-main
    .venv/bin/python loadtest/bench_ttl_ab.py --a /tmp/rankd-main --b . --n 1000000 --rounds 3
"""

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

GETS = 100_000
BATCH = 1000  # the server's purge batch


class _Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


def _purge_rate(purge: object, size: object) -> float:
    n = size()  # type: ignore[operator]
    t = time.process_time()
    while size():  # type: ignore[operator]
        purge()  # type: ignore[operator]
    return n / (time.process_time() - t) / 1e6


def worker(n: int) -> dict[str, float]:
    from store.sessions import SessionStore
    from store.ttl import TTLMap

    gc.disable()
    rng = random.Random(1234)
    clock = _Clock()
    store = SessionStore(clock, default_ttl=1800, max_sessions_per_user=1000)
    users = [f"user{i}" for i in range(max(1, n // 5))]
    data = {"cart": [1, 2, 3], "theme": "dark"}
    create, cpu = store.create, time.thread_time_ns
    worst = 0
    ids = []
    t0 = cpu()
    for i in range(n):
        c0 = cpu()
        ids.append(create(user=users[i % len(users)], data=data).id)
        worst = max(worst, cpu() - c0)
    create_us = (cpu() - t0) / n / 1e3  # includes the timer calls, the same in both trees
    sample = rng.sample(ids, min(GETS, n))
    del ids
    get = store.get
    t = time.process_time()
    for sid in sample:
        get(sid)
    get_us = (time.process_time() - t) / len(sample) * 1e6
    clock.offset += 7 * 86400 + 1
    purge_ss = _purge_rate(lambda: store.purge(max_items=BATCH), store.__len__)

    now = time.time()
    same: TTLMap[str, int] = TTLMap(on_expire=lambda items: None)
    for i in range(n):
        same.set(f"{i:032x}", i, now + 0.5 + i / (2 * n))
    purge_1s = _purge_rate(lambda: same.purge(now + 2, BATCH), same.__len__)
    spread: TTLMap[str, int] = TTLMap(on_expire=lambda items: None)
    for i in range(n):
        spread.set(f"{i:032x}", i, now + rng.random() * 30)
    purge_30s = _purge_rate(lambda: spread.purge(now + 31, BATCH), spread.__len__)
    return {
        "create us": create_us,
        "worst create ms": worst / 1e6,
        "get+touch us": get_us,
        "purge ss M/s": purge_ss,
        "purge 1 s M/s": purge_1s,
        "purge 30 s M/s": purge_30s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--a", type=Path, help="baseline source tree")
    ap.add_argument("--b", type=Path, help="changed source tree")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.n)))
        return
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
            env = {**os.environ, "PYTHONPATH": str(trees[name])}
            out = subprocess.run(
                [sys.executable, __file__, "--worker", "--n", str(args.n)],
                env=env, cwd=trees[name], check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            results[name].append(json.loads(out))
            print(f"round {r + 1} {name}: {out.strip()}", flush=True)
        load.append(os.getloadavg()[0])
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"A = {trees['A']}, B = {trees['B']}; load average {load[0]:.1f} -> {load[-1]:.1f}")
    print(f"| median of {args.rounds}, n = {args.n:,} | A | B | B / A |")
    print("| --- | ---: | ---: | ---: |")
    for key in results["A"][0]:
        a = statistics.median(x[key] for x in results["A"])
        b = statistics.median(x[key] for x in results["B"])
        print(f"| {key} | {a:.2f} | {b:.2f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
