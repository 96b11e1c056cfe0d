"""Side-by-side benchmarks of the store, one section per structure.

    .venv/bin/python loadtest/bench_store.py [--sizes 10000,100000,1000000] [--repeat 5]
        [--ops 5000] [--clock cpu|wall] [--keys tuple|bytes] [--section skiplist]

Section "skiplist": ``store.skiplist.SkipList`` against ``sortedcontainers.SortedList`` on
leaderboard-shaped keys ``(-score, seq, member)`` (``--keys bytes``: the same keys encoded as
a board stores them, see store.sortkey), both built from the same sorted keys and
alive in the same process. Each timed round runs ``--ops`` operations on one structure and
then the same operations on the other (which goes first alternates), so a noisy neighbour
hits both. The table shows, per op, the median over ``--repeat`` rounds of ns per operation
for each, and the median of the per-round ratios (SkipList / SortedList: below 1 means
SkipList is faster). ``--clock cpu`` (default) times this process's CPU time, so time slices
lost to other processes on a shared machine are not charged; ``--clock wall`` is elapsed time.

Adding a section: write ``def bench_<name>(opts: Options) -> list[Row]`` and register it in
``SECTIONS`` (see the hook there). Planned: "board" (bytes per leaderboard member at 1M keys,
from the process RSS delta) and "sessions".
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from sortedcontainers import SortedList

from store.skiplist import SkipList
from store.sortkey import decode_num, encode_num, make_key

Key = tuple[int, int, str]


@dataclass
class Options:
    sizes: list[int]
    repeat: int
    ops: int
    seed: int
    clock: Callable[[], int] = time.process_time_ns
    shape: Callable[[list[Key]], list[Any]] = list  # tuple keys as generated, or _as_bytes


@dataclass
class Row:
    op: str
    size: int
    base: float  # baseline: ns per op (or another unit, see ``unit``)
    ours: float
    ratio: float  # ours / base, median of per-round ratios
    unit: str = "ns/op"


def _keys(count: int, rnd: random.Random, first_seq: int = 0) -> list[Key]:
    """Leaderboard sort keys: descending score (negated), then arrival order, then member."""
    return [
        (-rnd.randrange(1_000_000_000), seq, f"player:{seq}")
        for seq in range(first_seq, first_seq + count)
    ]


def _as_bytes(keys: list[Key]) -> list[Any]:
    """The same keys as a board stores them: one order-preserving ``bytes`` (store.sortkey)."""
    return [make_key(encode_num(neg), seq, member, neg) for neg, seq, member in keys]


def _nearby(key: Any, rnd: random.Random) -> Any:
    """The key of the same member after a small score change (same seq, so still unique)."""
    if isinstance(key, bytes):
        return encode_num(decode_num(key, False) - rnd.randrange(1, 1000)) + key[10:]
    neg, seq, member = key
    return (neg - rnd.randrange(1, 1000), seq, member)


def bench_skiplist(opts: Options) -> list[Row]:
    rows: list[Row] = []
    for size in opts.sizes:
        rnd = random.Random(opts.seed)
        keys = sorted(opts.shape(_keys(size, rnd)))
        rows.append(_build(size, keys, opts))
        pair = (SortedList(keys), SkipList(keys))
        rows.extend(_mutations(size, pair, opts, rnd))
        rows.extend(_queries(size, pair, opts, rnd))
        del pair, keys
        gc.collect()
    return rows


def _build(size: int, keys: list[Any], opts: Options) -> Row:
    """Bulk build from sorted input, in ns per key (the table also prints keys/s)."""
    times: list[list[float]] = [[], []]
    for r in range(opts.repeat):
        for which in (0, 1) if r % 2 == 0 else (1, 0):
            cls = (SortedList, SkipList)[which]
            gc.collect()
            start = opts.clock()
            built = cls(keys)
            times[which].append((opts.clock() - start) / size)
            del built
    return _row("build (sorted)", size, times, "ns/key")


def _mutations(size: int, pair: tuple[Any, Any], opts: Options, rnd: random.Random) -> list[Row]:
    """add, remove, update (remove + add of a nearby key) and update+index (the same, then
    the new rank, as a leaderboard write does). Every round leaves the size at ``size``;
    update+index moves the keys back, so rounds also start from the same content."""
    ops = min(opts.ops, size)
    add_t: list[list[float]] = [[], []]
    rem_t: list[list[float]] = [[], []]
    upd_t: list[list[float]] = [[], []]
    rank_t: list[list[float]] = [[], []]
    for r in range(opts.repeat):
        batch = opts.shape(_keys(ops, rnd, first_seq=size + r * ops))
        gone = batch[:]
        rnd.shuffle(gone)
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for which in order:
            add_t[which].append(_timed(_adder(pair[which], batch), ops, opts.clock))
        for which in order:
            rem_t[which].append(_timed(_remover(pair[which], gone), ops, opts.clock))
        # A leaderboard write: the member's key moves to a nearby score.
        old = [pair[0][p] for p in rnd.sample(range(size), ops)]
        moved = [_nearby(key, rnd) for key in old]
        for which in order:
            upd_t[which].append(_timed(_mover(pair[which], old, moved), ops, opts.clock))
        # The whole leaderboard write: move the key, then read the member's new rank.
        for which in order:
            rank_t[which].append(
                _timed(_mover(pair[which], moved, old, rank=True), ops, opts.clock)
            )
    return [
        _row("add", size, add_t),
        _row("remove", size, rem_t),
        _row("update", size, upd_t),
        _row("update+index", size, rank_t),
    ]


def _adder(s: Any, batch: list[Any]) -> Callable[[], None]:
    def run() -> None:
        add = s.add
        for key in batch:
            add(key)

    return run


def _remover(s: Any, batch: list[Any]) -> Callable[[], None]:
    def run() -> None:
        remove = s.remove
        for key in batch:
            remove(key)

    return run


def _mover(s: Any, old: list[Any], new: list[Any], rank: bool = False) -> Callable[[], None]:
    def run() -> None:
        remove, add = s.remove, s.add
        for before, after in zip(old, new, strict=True):
            remove(before)
            add(after)

    def run_and_rank() -> None:
        remove, add, index = s.remove, s.add, s.index
        for before, after in zip(old, new, strict=True):
            remove(before)
            add(after)
            index(after)

    return run_and_rank if rank else run


def _queries(size: int, pair: tuple[Any, Any], opts: Options, rnd: random.Random) -> list[Row]:
    """index(key), s[i] and s[i:i+10] at uniformly random keys and positions."""
    ops = min(opts.ops, size)
    idx_t: list[list[float]] = [[], []]
    get_t: list[list[float]] = [[], []]
    sli_t: list[list[float]] = [[], []]
    for r in range(opts.repeat):
        at = [rnd.randrange(size) for _ in range(ops)]
        probe = [pair[0][p] for p in at]
        rnd.shuffle(at)
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for which in order:
            idx_t[which].append(_timed(_indexer(pair[which], probe), ops, opts.clock))
        for which in order:
            get_t[which].append(_timed(_getter(pair[which], at), ops, opts.clock))
        for which in order:
            sli_t[which].append(_timed(_slicer(pair[which], at), ops, opts.clock))
    return [_row("index", size, idx_t), _row("s[i]", size, get_t), _row("s[i:i+10]", size, sli_t)]


def _indexer(s: Any, probe: list[Any]) -> Callable[[], None]:
    def run() -> None:
        index = s.index
        for key in probe:
            index(key)

    return run


def _getter(s: Any, at: list[int]) -> Callable[[], None]:
    def run() -> None:
        for i in at:
            s[i]

    return run


def _slicer(s: Any, at: list[int]) -> Callable[[], None]:
    def run() -> None:
        for i in at:
            s[i : i + 10]

    return run


def _timed(fn: Callable[[], None], ops: int, clock: Callable[[], int]) -> float:
    """ns per op; the collector is paused so a gen-2 pass over ~1M tuples lands on neither."""
    gc.disable()
    try:
        start = clock()
        fn()
        return (clock() - start) / ops
    finally:
        gc.enable()


def _row(op: str, size: int, times: list[list[float]], unit: str = "ns/op") -> Row:
    ratios = [ours / base for base, ours in zip(times[0], times[1], strict=True)]
    return Row(
        op,
        size,
        statistics.median(times[0]),
        statistics.median(times[1]),
        statistics.median(ratios),
        unit,
    )


# One function per section. Hook for the lead: register "board" (bytes per leaderboard
# member at 1M keys, measured as the process RSS delta) and "sessions" here, each a
# ``Callable[[Options], list[Row]]``; ``main`` and ``print_table`` need no change.
SECTIONS: dict[str, Callable[[Options], list[Row]]] = {
    "skiplist": bench_skiplist,
}


def print_table(section: str, rows: list[Row]) -> None:
    base_name, ours_name = {"skiplist": ("SortedList", "SkipList")}.get(
        section, ("baseline", "rankd")
    )
    print(f"\n## {section}\n")
    print(f"| op | size | {base_name} | {ours_name} | unit | ratio |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for row in rows:
        print(
            f"| {row.op} | {row.size:,} | {row.base:,.0f} | {row.ours:,.0f} | {row.unit} "
            f"| {row.ratio:.2f} |"
        )
    for row in rows:
        if row.unit == "ns/key":
            print(
                f"\n{row.op} at {row.size:,}: {base_name} {1e9 / row.base / 1e6:.2f}M keys/s, "
                f"{ours_name} {1e9 / row.ours / 1e6:.2f}M keys/s"
            )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            models = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = models[0] if models else cpu
    except OSError:
        pass
    return f"{os.cpu_count()} x {cpu}, Python {platform.python_version()} ({sys.platform})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per op (median)")
    parser.add_argument("--ops", type=int, default=5_000, help="operations per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument(
        "--keys",
        choices=["tuple", "bytes"],
        default="tuple",
        help="(-score, seq, member) tuples, or the board's byte keys (store.sortkey)",
    )
    parser.add_argument("--section", choices=sorted(SECTIONS), action="append")
    args = parser.parse_args(argv)
    opts = Options(
        sizes=[int(s) for s in args.sizes.split(",")],
        repeat=max(1, args.repeat),
        ops=max(1, args.ops),
        seed=args.seed,
        clock=time.process_time_ns if args.clock == "cpu" else time.perf_counter_ns,
        shape=_as_bytes if args.keys == "bytes" else list,
    )
    print(f"# {' '.join(sys.argv)}")
    print(f"# {machine()}; clock: {args.clock}; keys: {args.keys}")
    for section in args.section or list(SECTIONS):
        rows = SECTIONS[section](opts)
        print_table(section, rows)


if __name__ == "__main__":
    main()
