"""What shared ranks cost: the same board read under ordinal, competition and dense ranking.

    .venv/bin/python loadtest/bench_ranks.py [--size 1000000] [--repeat 5] [--ops 5000]
        [--scores wide|narrow]

One process builds three boards from the same members and scores (``--scores wide``: integers
in [0, 1e9], nearly all distinct -- the worst case for the dense index; ``narrow``: [0, 1000],
ties everywhere), one per ranking. Each timed round runs ``--ops`` of one operation on each
board, the boards' order rotating per round so a noisy neighbour hits all three; the table
shows the median ns per op (process CPU time, the collector paused) and the median per-round
ratio to the ordinal board. Operations: a changed write, an unchanged write, the member answer
(rank + percentile), top 10 at offset 0 and deep in the board, around r=5, rank for a score.

Bytes per member are the RSS growth of a fresh interpreter filling one board of each ranking
(store/ranks.py: only dense keeps a second index), and the time to switch a full board to
dense (building the distinct-score index) is timed once.

Results: loadtest/RESULTS.md, "Shared ranks".
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from store.boards import Board
from store.keyspace import Keyspace

RANKINGS = ("ordinal", "competition", "dense")


def _members(count: int, rnd: random.Random) -> list[str]:
    return [f"p{i:0{rnd.randint(7, 11)}d}" for i in range(count)]


def _scores(count: int, rnd: random.Random, kind: str) -> list[int]:
    top = 10**9 if kind == "wide" else 1000
    return [rnd.randint(0, top) for _ in range(count)]


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(count: int, ranking: str, scores: str, seed: int) -> float:
    """Bytes per member of a board with this ranking (run in a fresh interpreter)."""
    rnd = random.Random(seed)
    members, values = _members(count, rnd), _scores(count, rnd, scores)
    gc.collect()
    before = _rss()
    board, _ = Keyspace().configure("b", {"ranking": ranking})
    for member, score in zip(members, values, strict=True):
        board.write(member, score)
    gc.collect()
    return (_rss() - before) / count


def _bytes(count: int, ranking: str, scores: str, seed: int) -> float:
    code = (
        "from loadtest.bench_ranks import measure; "
        f"print(measure({count}, {ranking!r}, {scores!r}, {seed}))"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip())


def _timed(fn: Callable[[], None], ops: int) -> float:
    gc.disable()
    try:
        start = time.process_time_ns()
        fn()
        return (time.process_time_ns() - start) / ops
    finally:
        gc.enable()


def _ops(
    board: Board, pick: list[str], better: list[int], rnd: random.Random
) -> dict[str, Callable[[], None]]:
    worse = [s - 2_000_000_000 for s in better]
    deep = [rnd.randrange(len(board) - 10) for _ in pick]
    probes = [rnd.randint(0, 10**9) for _ in pick]

    def changed() -> None:
        for m, s in zip(pick, better, strict=True):
            board.write(m, s)

    def unchanged() -> None:
        for m, s in zip(pick, worse, strict=True):
            board.write(m, s)

    def member() -> None:
        for m in pick:
            board.member(m)

    def top() -> None:
        for _ in pick:
            board._page(0, 10)  # uncached: the cost a page pays when the top changed

    def deep_page() -> None:
        for offset in deep:
            board.top(offset, 10)

    def around() -> None:
        for m in pick:
            board.around(m, 5)

    def rank() -> None:
        for s in probes:
            board.rank_for_score(s)

    return {
        "write (changed)": changed,
        "write (unchanged)": unchanged,
        "member (rank + percentile)": member,
        "top 10, offset 0 (uncached)": top,
        "top 10, random offset": deep_page,
        "around r=5": around,
        "rank for a score": rank,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ops", type=int, default=5_000)
    parser.add_argument("--scores", choices=["wide", "narrow"], default="wide")
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args()
    print(
        f"# python {platform.python_version()}, {platform.machine()}, load average "
        f"{os.getloadavg()[0]:.2f}, size {opts.size:,}, scores {opts.scores}, "
        f"{opts.repeat} rounds x {opts.ops} ops, process CPU time"
    )
    sizes = {r: _bytes(opts.size, r, opts.scores, opts.seed) for r in RANKINGS}
    rnd = random.Random(opts.seed)
    members, values = _members(opts.size, rnd), _scores(opts.size, rnd, opts.scores)
    ks = Keyspace()
    boards: dict[str, Board] = {}
    for ranking in RANKINGS:
        board, _ = ks.configure(ranking, {"ranking": "ordinal"})
        for member, score in zip(members, values, strict=True):
            board.write(member, score)
        boards[ranking] = board
    start = time.process_time()
    ks.configure("competition", {"ranking": "competition"})
    to_competition = time.process_time() - start
    start = time.process_time()
    ks.configure("dense", {"ranking": "dense"})
    to_dense = time.process_time() - start
    times: dict[str, dict[str, list[float]]] = {}
    for rnd_round in range(opts.repeat):
        pick = [rnd.choice(members) for _ in range(opts.ops)]
        # Each board gets the same writes, so the three stay identical but for their ranking.
        better = [boards["ordinal"].entry(m)["score"] + rnd.randint(1, 1000) for m in pick]
        order = RANKINGS[rnd_round % 3 :] + RANKINGS[: rnd_round % 3]
        for ranking in order:
            ops = _ops(boards[ranking], pick, better, random.Random(rnd_round))
            for name, fn in ops.items():
                times.setdefault(name, {}).setdefault(ranking, []).append(_timed(fn, opts.ops))
    print()
    print("| op | ordinal | competition | dense | competition ÷ ordinal | dense ÷ ordinal |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    b = sizes
    print(
        f"| bytes per member | {b['ordinal']:.0f} | {b['competition']:.0f} | {b['dense']:.0f} "
        f"| {b['competition'] / b['ordinal']:.2f} | {b['dense'] / b['ordinal']:.2f} |"
    )
    for name, per in times.items():
        med = {r: statistics.median(per[r]) for r in RANKINGS}
        ratio = {
            r: statistics.median(x / o for x, o in zip(per[r], per["ordinal"], strict=True))
            for r in RANKINGS
        }
        print(
            f"| {name} (ns) | {med['ordinal']:,.0f} | {med['competition']:,.0f} | "
            f"{med['dense']:,.0f} | {ratio['competition']:.2f} | {ratio['dense']:.2f} |"
        )
    print()
    print(
        f"switching a full board (CPU): to competition {to_competition * 1000:.1f} ms, "
        f"to dense (builds the distinct-score index) {to_dense * 1000:.0f} ms"
    )
    start = time.process_time()
    ks.configure("dense", {"ranking": "ordinal"})
    back = time.process_time() - start
    print(f"and back from dense to ordinal (copies the index) {back * 1000:.0f} ms")


if __name__ == "__main__":
    main()
