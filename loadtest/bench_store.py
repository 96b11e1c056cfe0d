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

Section "board": a ``store.boards.Board`` at the largest size: bytes per member in total
(process RSS delta in a fresh interpreter, 8-12 character member ids, integer scores, no
metadata) against the textbook Python board (dict member -> (-score, seq, member) tuple plus a
SortedList of the tuples), and the cost of a changed write, an unchanged write, ``entry``
(rank lookup) and ``around`` on random members.

Section "sessions": ``loadtest/bench_sessions.py`` at the largest size (create, get+touch,
patch, delete, purge throughput).

Adding a section: write ``def bench_<name>(opts: Options) -> list[Row]`` and register it in
``SECTIONS``.
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


def _members(count: int, rnd: random.Random) -> list[str]:
    """Distinct 8-12 character ids, as game clients send them."""
    return [f"p{i:0{rnd.randint(7, 11)}d}" for i in range(count)]


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_board(count: int, kind: str, seed: int) -> float:
    """Bytes per member of a ``kind`` board filled with ``count`` members (run in a fresh
    process: RSS never shrinks back, so earlier work would hide the growth)."""
    from store.keyspace import Keyspace

    rnd = random.Random(seed)
    gc.collect()
    before = _rss()
    if kind == "rankd":
        board = Keyspace().board_for_write("b")
        for member in _members(count, rnd):
            board.write(member, rnd.randint(0, 10**9))
    elif kind.startswith("windows="):  # e.g. "windows=all,week,day" (bench_windows.py)
        board, _ = Keyspace().configure("b", {"windows": kind[8:].split(",")})
        for member in _members(count, rnd):
            board.write(member, rnd.randint(0, 10**9))
    else:
        keys: dict[str, tuple[int, int, str]] = {}
        index: SortedList = SortedList()
        for seq, member in enumerate(_members(count, rnd)):
            key = (-rnd.randint(0, 10**9), seq, member)
            keys[member] = key
            index.add(key)
    gc.collect()
    return (_rss() - before) / count


def _board_bytes(count: int, kind: str, seed: int) -> float:
    root = Path(__file__).resolve().parent.parent
    code = (
        "from loadtest.bench_store import measure_board; "
        f"print(measure_board({count}, {kind!r}, {seed}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip())


def bench_board(opts: Options) -> list[Row]:
    from store.keyspace import Keyspace

    size = max(opts.sizes)
    ours = _board_bytes(size, "rankd", opts.seed)
    base = _board_bytes(size, "tuples", opts.seed)
    rows = [Row("bytes per member", size, base, ours, ours / base, "B")]
    rnd = random.Random(opts.seed)
    members = _members(size, rnd)
    board = Keyspace().board_for_write("b")
    for member in members:
        board.write(member, rnd.randint(0, 10**9))
    times: dict[str, list[float]] = {
        "write (changed)": [],
        "write (unchanged)": [],
        "entry": [],
        "around r=5": [],
    }
    for _ in range(opts.repeat):
        pick = [rnd.choice(members) for _ in range(opts.ops)]
        better = [board.entry(m)["score"] + rnd.randint(1, 1000) for m in pick]
        worse = [s - 2000 for s in better]

        def changed(pick: list[str] = pick, better: list[int] = better) -> None:
            for m, s in zip(pick, better, strict=True):
                board.write(m, s)

        def unchanged(pick: list[str] = pick, worse: list[int] = worse) -> None:
            for m, s in zip(pick, worse, strict=True):
                board.write(m, s)

        def entry(pick: list[str] = pick) -> None:
            for m in pick:
                board.entry(m)

        def around(pick: list[str] = pick) -> None:
            for m in pick:
                board.around(m, 5)

        for name, fn in (
            ("write (changed)", changed),
            ("write (unchanged)", unchanged),
            ("entry", entry),
            ("around r=5", around),
        ):
            times[name].append(_timed(fn, opts.ops, opts.clock))
    for name, samples in times.items():
        t = statistics.median(samples)
        rows.append(Row(name, size, float("nan"), t, float("nan")))
    return rows


def bench_sessions_section(opts: Options) -> list[Row]:
    from loadtest.bench_sessions import bench_sessions

    print()
    bench_sessions(max(opts.sizes), opts.repeat)
    return []


SECTIONS: dict[str, Callable[[Options], list[Row]]] = {
    "skiplist": bench_skiplist,
    "board": bench_board,
    "sessions": bench_sessions_section,
}


def print_table(section: str, rows: list[Row]) -> None:
    if not rows:
        return
    base_name, ours_name = {
        "skiplist": ("SortedList", "SkipList"),
        "board": ("dict+SortedList of tuples", "Board"),
    }.get(section, ("baseline", "rankd"))
    print(f"\n## {section}\n")
    print(f"| op | size | {base_name} | {ours_name} | unit | ratio |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for row in rows:
        base = "—" if row.base != row.base else f"{row.base:,.0f}"  # NaN: no baseline
        ratio = "—" if row.ratio != row.ratio else f"{row.ratio:.2f}"
        print(f"| {row.op} | {row.size:,} | {base} | {row.ours:,.0f} | {row.unit} | {ratio} |")
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
