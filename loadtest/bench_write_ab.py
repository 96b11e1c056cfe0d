"""The store's score write path in two source trees, side by side: is a change free for it?

    .venv/bin/python loadtest/bench_write_ab.py --a /work/main --b . [--size 200000]
        [--rounds 8] [--ops 20000]

Each round starts one fresh interpreter per tree (A then B, B then A on the next round, so
drift and noisy neighbours hit both alike) with ``PYTHONPATH`` set to that tree. The child
fills one default board (ordinal, desc, best, ties=first) with ``--size`` members (8-12
character ids, integer scores, fixed seed), then times in process CPU time, collector paused:
``--ops`` changed writes (a better score: remove + insert), ``--ops`` unchanged writes (a
worse score: one rank lookup), and ``--ops`` inserts of new members; and reports the RSS growth
per member of the fill. The table gives per tree the median over rounds and the median of the
per-round ratios B / A.

Results: loadtest/RESULTS.md, "Shared ranks".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import gc, json, os, random, sys, time
from store.keyspace import Keyspace

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

size, ops, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
members = [f"p{i:0{rnd.randint(7, 11)}d}" for i in range(size)]
scores = [rnd.randint(0, 10**9) for _ in range(size)]
gc.collect()
before = rss()
board = Keyspace().board_for_write("b")
for m, s in zip(members, scores):
    board.write(m, s)
gc.collect()
per_member = (rss() - before) / size
pick = [rnd.choice(members) for _ in range(ops)]
better = [board.entry(m)["score"] + rnd.randint(1, 1000) for m in pick]
worse = [s - 2000 for s in better]
fresh = [f"n{i:09d}" for i in range(ops)]
fresh_scores = [rnd.randint(0, 10**9) for _ in range(ops)]
out = {"bytes per member": per_member}
write = board.write
for name, items in (("write (changed)", zip(pick, better)), ("write (unchanged)",
                    zip(pick, worse)), ("write (insert)", zip(fresh, fresh_scores))):
    items = list(items)
    gc.disable()
    t = time.process_time_ns()
    for m, s in items:
        write(m, s)
    out[name] = (time.process_time_ns() - t) / ops
    gc.enable()
print(json.dumps(out))
"""


def _run(tree: Path, size: int, ops: int, seed: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(size), str(ops), str(seed)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the baseline tree")
    parser.add_argument("--b", type=Path, required=True, help="the changed tree")
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args()
    trees = {"A": opts.a.resolve(), "B": opts.b.resolve()}
    print(f"# A = {trees['A']}, B = {trees['B']}, size {opts.size:,}, {opts.rounds} rounds")
    print(f"# load average at start {os.getloadavg()[0]:.2f}")
    samples: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    for r in range(opts.rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        for side in order:
            for name, value in _run(trees[side], opts.size, opts.ops, opts.seed + r).items():
                samples[side].setdefault(name, []).append(value)
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    print()
    print("| measure | A (median) | B (median) | B ÷ A (median of rounds) | unit |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name in samples["A"]:
        a, b = samples["A"][name], samples["B"][name]
        ratio = statistics.median(y / x for x, y in zip(a, b, strict=True))
        unit = "B" if name.startswith("bytes") else "ns/op"
        print(
            f"| {name} | {statistics.median(a):,.1f} | {statistics.median(b):,.1f} | "
            f"{ratio:.3f} | {unit} |"
        )


if __name__ == "__main__":
    main()
