"""What windows cost: bytes per member and CPU per write, by number of windows, side by side.

    git archive main | tar -x -C /tmp/rankd-main
    .venv/bin/python -m loadtest.bench_windows --a /tmp/rankd-main --b . [--members 200000]
        [--rounds 5] [--ops 20000]

1. Bytes per member of a one-window board (``["all"]``, the default) in tree A (the baseline,
   e.g. main) and tree B, each measured by that tree's own ``loadtest/bench_store.py
   measure_board`` in a fresh interpreter (process RSS delta; 8-12 character members, integer
   scores, no metadata), A and B alternating for --rounds rounds; medians and B / A.
2. In tree B: bytes per member for ``["all"]``, ``["all","week"]``, ``["all","week","day"]``
   and ``["all","week","day","hour"]``: the cost of each extra window.
3. In tree B: CPU µs per changed ``Board.write`` by the same window lists (a write to k
   windows touches k indexes), each the median of --rounds rounds of --ops writes.

Results: loadtest/RESULTS.md, "Windows and periods".
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

WINDOWS = ["all", "all,week", "all,week,day", "all,week,day,hour"]


def _bytes(tree: Path, count: int, kind: str, seed: int) -> float:
    code = (
        "from loadtest.bench_store import measure_board; "
        f"print(measure_board({count}, {kind!r}, {seed}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip())


def _write_cost(windows: str, members: int, ops: int, rounds: int) -> float:
    from store.keyspace import Keyspace

    rnd = random.Random(7)
    board, _ = Keyspace().configure("b", {"windows": windows.split(",")})
    names = [f"member-{i:07d}" for i in range(members)]
    for name in names:
        board.write(name, rnd.randint(0, 10**9))
    samples = []
    for _ in range(rounds):
        pick = [(rnd.choice(names), 10**9 + rnd.randint(0, 10**9)) for _ in range(ops)]
        began = time.process_time()
        for member, score in pick:
            board.write(member, score)
        samples.append((time.process_time() - began) / ops * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_windows", description=__doc__)
    p.add_argument("--a", type=Path, required=True, help="baseline source tree")
    p.add_argument("--b", type=Path, required=True, help="changed source tree")
    p.add_argument("--members", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ops", type=int, default=20_000)
    args = p.parse_args(argv)
    a, b = args.a.resolve(), args.b.resolve()
    got: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(args.rounds):
        order = [("A", a), ("B", b)] if r % 2 == 0 else [("B", b), ("A", a)]
        for name, tree in order:
            got[name].append(_bytes(tree, args.members, "rankd", 1000 + r))
    ma, mb = statistics.median(got["A"]), statistics.median(got["B"])
    print(f"## one-window board, {args.members:,} members, {args.rounds} rounds\n")
    print("| tree | bytes per member (median) | all rounds |")
    print("| --- | ---: | --- |")
    print(f"| A {a} | {ma:.1f} | {', '.join(f'{x:.1f}' for x in got['A'])} |")
    print(f"| B {b} | {mb:.1f} | {', '.join(f'{x:.1f}' for x in got['B'])} |")
    print(f"\nB / A = {mb / ma:.3f}\n")
    print(f"## tree B by windows, {args.members:,} members\n")
    print("| windows | bytes per member | + per extra window | CPU µs per changed write |")
    print("| --- | ---: | ---: | ---: |")
    base = None
    for windows in WINDOWS:
        sizes = [_bytes(b, args.members, "windows=" + windows, 2000 + r) for r in range(3)]
        size = statistics.median(sizes)
        extra = windows.count(",")
        if base is None:
            base = size
        step = "—" if not extra else f"{(size - base) / extra:.1f}"
        cost = _write_cost(windows, args.members // 4, args.ops, args.rounds)
        print(f"| {windows} | {size:.1f} | {step} | {cost:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
