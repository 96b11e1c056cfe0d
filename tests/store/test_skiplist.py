"""SkipList against its oracle, sortedcontainers.SortedList: same results, same errors.

Tiny ``load`` values force a split or a merge every few operations, so the rebalancing paths
run thousands of times; ``_check()`` runs after every mutation there.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from sortedcontainers import SortedList

from store.skiplist import DEFAULT_LOAD, SkipList

TINY_LOADS = (1, 2, 3, 4, 8)


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """The result of ``fn()`` or its exception as (type name, message), for comparing."""
    try:
        result = fn()
    except (IndexError, ValueError, TypeError) as exc:
        return type(exc).__name__, str(exc)
    return "ok", list(result) if hasattr(result, "__next__") else result


def same(s: SkipList[Any], o: SortedList, fn: Callable[[Any], Any]) -> Any:
    got, want = outcome(lambda: fn(s)), outcome(lambda: fn(o))
    assert got == want
    return got


def pair(values: list[Any], load: int = 4) -> tuple[SkipList[Any], SortedList]:
    s = SkipList(values, load=load)
    s._check()
    return s, SortedList(values)


# -- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize("load", [1, 2, 3, 5, 16, DEFAULT_LOAD])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 1000, 5001])
def test_build_from_sorted_and_unsorted(load: int, n: int) -> None:
    values = [random.Random(n).randrange(n // 2 + 1) for _ in range(n)]
    for source in (sorted(values), values, iter(values)):
        s = SkipList(source, load=load)
        s._check()
        assert list(s) == sorted(values)
        assert len(s) == n


def test_default_and_none_iterable() -> None:
    assert list(SkipList()) == [] == list(SkipList(None))
    assert repr(SkipList([3, 1, 2])) == "SkipList([1, 2, 3])"
    assert repr(SkipList()) == "SkipList([])"


@pytest.mark.parametrize("load", [0, -1])
def test_load_must_be_positive(load: int) -> None:
    with pytest.raises(ValueError, match="load must be a positive int, but got"):
        SkipList(load=load)


def test_build_balances_the_tower() -> None:
    s = SkipList(range(4**5 * 10), load=10)
    # 1024 evenly filled nodes of 10 keys: heights 1..6 in a perfectly balanced tower.
    assert len(s._levels) == 6
    s._check()


# -- empty and single ------------------------------------------------------------------------


def test_empty() -> None:
    s, o = pair([])
    assert len(s) == 0 and list(s) == [] and list(reversed(s)) == []
    assert 1 not in s
    for fn in (
        lambda x: x[0],
        lambda x: x[-1],
        lambda x: x[:],
        lambda x: x[::-1],
        lambda x: x.index(1),
        lambda x: x.remove(1),
        lambda x: x.bisect_left(1),
        lambda x: x.bisect_right(1),
        lambda x: x.irange(),
        lambda x: x.irange(0, 5, reverse=True),
    ):
        same(s, o, fn)
    s.discard(1)
    for index in (0, -1, 5):
        with pytest.raises(IndexError, match=r"^list index out of range$"):
            del s[index]
    del s[:]
    s._check()


def test_single_and_back_to_empty() -> None:
    for load in TINY_LOADS:
        s = SkipList(load=load)
        s.add("a")
        s._check()
        assert s[0] == s[-1] == "a" and s[:] == ["a"] and "a" in s and s.index("a") == 0
        s.remove("a")
        s._check()
        assert len(s) == 0 and "a" not in s
        s.add("b")
        del s[-1]
        s._check()
        s.update(["c", "b"])
        assert list(s) == ["b", "c"]
        s.clear()
        s._check()
        assert list(s) == []


# -- errors match SortedList -----------------------------------------------------------------


def test_remove_and_index_of_absent_key() -> None:
    s, o = pair([1, 3, 3, 5])
    for key in (0, 2, 4, 6):
        assert same(s, o, lambda x, key=key: x.remove(key)) == ("ValueError", f"{key} not in list")
        assert same(s, o, lambda x, key=key: x.index(key)) == (
            "ValueError",
            f"{key} is not in list",
        )
    s.discard(2)
    s._check()
    assert list(s) == [1, 3, 3, 5]


def test_out_of_range_indexes() -> None:
    s, o = pair(list(range(10)))
    for index in (10, 11, -11, -100, 10**20):
        assert same(s, o, lambda x, index=index: x[index]) == (
            "IndexError",
            "list index out of range",
        )
        with pytest.raises(IndexError, match=r"^list index out of range$"):
            del s[index]
    s._check()
    assert list(s) == list(range(10))


def test_incomparable_key_leaves_the_list_intact() -> None:
    s, o = pair([1, 2, 3, 4, 5, 6, 7], load=1)
    for fn in (
        lambda x: x.add("x"),
        lambda x: x.remove("x"),
        lambda x: x.bisect_left("x"),
        lambda x: x.index("x"),
    ):
        assert same(s, o, fn)[0] == "TypeError"
        s._check()
    assert list(s) == list(o)
    with pytest.raises(ValueError, match="slice step cannot be zero"):
        s[::0]


class Tripwire:
    """Orders like ``value`` among ints, but its ``trip``-th comparison raises."""

    def __init__(self, value: int, trip: int) -> None:
        self.value, self.left = value, trip

    def _cmp(self, other: int | Tripwire) -> int:
        self.left -= 1
        if not self.left:
            raise TypeError("tripwire")
        return self.value - (other.value if isinstance(other, Tripwire) else other)

    def __lt__(self, other: int | Tripwire) -> bool:
        return self._cmp(other) < 0

    def __gt__(self, other: int | Tripwire) -> bool:
        return self._cmp(other) > 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, int | Tripwire) and self._cmp(other) == 0

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("method", ["add", "remove", "discard", "index", "__contains__"])
def test_comparison_raising_mid_walk_leaves_the_list_intact(method: str) -> None:
    # The walks count spans on the way down; a comparison that raises halfway must not
    # leave those counts behind. Every trip point along the walk is tried.
    values = list(range(0, 400, 2))
    s = SkipList(values, load=1)
    tripped = 0
    for trip in range(1, 40):
        wire = Tripwire(201, trip)
        try:
            getattr(s, method)(wire)
        except TypeError:
            tripped += 1
        except ValueError:  # remove / index of the absent key, walked without tripping
            pass
        wire.left = -1  # disarmed: it now compares like 201
        if method == "add" and wire in s:
            s.remove(wire)  # type: ignore[arg-type]
        s._check()
        assert list(s) == values
    assert tripped >= 10, "the walks compared too few times to test anything"


# -- positions -------------------------------------------------------------------------------


SLICE_BOUNDS = [None, *range(-9, 10)]


@pytest.mark.parametrize("load", [1, 3, DEFAULT_LOAD])
def test_every_small_slice(load: int) -> None:
    values = [0, 1, 1, 2, 3, 3, 3, 4]
    s, o = pair(values, load)
    for i in range(-10, 10):
        same(s, o, lambda x, i=i: x[i])
    for start in SLICE_BOUNDS:
        for stop in SLICE_BOUNDS:
            for step in (None, 1, 2, 3, 7, -1, -2, -3, -8):
                sl = slice(start, stop, step)
                assert s[sl] == o[sl], sl


def test_sparse_step_slice() -> None:
    s, o = pair(list(range(5000)), load=7)
    for sl in (slice(None, None, 100), slice(-3, 5, -97), slice(13, 4999, 250)):
        assert s[sl] == o[sl]


@pytest.mark.parametrize("load", [1, 2, 4])
def test_every_small_del_slice(load: int) -> None:
    values = list(range(12))
    for start in SLICE_BOUNDS[::2]:
        for stop in SLICE_BOUNDS[::3]:
            for step in (None, 1, 2, -1, -3):
                s, o = pair(values, load)
                sl = slice(start, stop, step)
                del s[sl]
                del o[sl]
                s._check()
                assert list(s) == list(o), sl


def test_del_slice_rebuild_and_piecewise() -> None:
    s, o = pair(list(range(1000)), load=5)
    for sl in (slice(10, 20), slice(-50, None), slice(100, 900), slice(None, None, 7)):
        del s[sl]
        del o[sl]
        s._check()
        assert list(s) == list(o)


def test_index_with_start_and_stop() -> None:
    values = [1, 2, 2, 2, 3, 5, 5, 8]
    s, o = pair(values, load=1)
    for key in (0, 1, 2, 3, 4, 5, 8, 9):
        for start in SLICE_BOUNDS:
            for stop in SLICE_BOUNDS:
                same(s, o, lambda x, k=key, a=start, b=stop: x.index(k, a, b))


# -- keys ------------------------------------------------------------------------------------


def test_bisect_and_contains_around_every_key() -> None:
    values = [1, 3, 3, 3, 5, 7, 7, 9]
    for load in (*TINY_LOADS, DEFAULT_LOAD):
        s, o = pair(values, load)
        for key in range(11):
            for fn in (
                lambda x, k=key: x.bisect_left(k),
                lambda x, k=key: x.bisect_right(k),
                lambda x, k=key: k in x,
            ):
                same(s, o, fn)


def test_irange_every_combination() -> None:
    values = [1, 3, 3, 3, 5, 7, 7, 9]
    bounds = [None, *range(11)]
    for load in (1, 3, DEFAULT_LOAD):
        s, o = pair(values, load)
        for lo in bounds:
            for hi in bounds:
                for inclusive in ((True, True), (True, False), (False, True), (False, False)):
                    for reverse in (False, True):
                        same(
                            s, o, lambda x, a=lo, b=hi, i=inclusive, r=reverse: x.irange(a, b, i, r)
                        )


def test_duplicates() -> None:
    s, o = pair([], load=2)
    for value in [5] * 20 + [4] * 3 + [6] * 3:
        s.add(value)
        o.add(value)
        s._check()
    assert list(s) == list(o)
    assert s.index(5) == 3 and s.bisect_right(5) == 23 and s.index(6) == 23
    while 5 in o:
        s.remove(5)
        o.remove(5)
        s._check()
        assert list(s) == list(o)


def test_equal_but_distinct_keys_keep_sortedlist_order() -> None:
    # 1 == 1.0 == True: add goes right of equals, remove takes the leftmost, update keeps
    # existing before new. Types show the order, which compares equal either way.
    s, o = pair([], load=1)
    for value in (1, 1.0, True, 0, 2, 1.0):
        s.add(value)
        o.add(value)
    s.update([True, 1])
    o.update([True, 1])
    assert [type(v) for v in s] == [type(v) for v in o]
    s.remove(True)
    o.remove(True)
    s.discard(1)
    o.discard(1)
    s._check()
    assert [type(v) for v in s] == [type(v) for v in o]
    s.update([1.0] * 20)  # large enough to rebuild
    o.update([1.0] * 20)
    assert [type(v) for v in s] == [type(v) for v in o]


def test_leaderboard_keys() -> None:
    rnd = random.Random(7)
    keys = [(-rnd.randrange(100), seq, f"m{seq}") for seq in range(3000)]
    s, o = pair(keys, load=32)
    assert list(s) == list(o)
    top = s[:10]
    assert top == o[:10] and [s.index(k) for k in top] == list(range(10))
    probe = (-50, 10**9, "")
    assert s.bisect_left(probe) == o.bisect_left(probe)


def test_update_small_batches_and_rebuilds() -> None:
    for load in (1, 4, DEFAULT_LOAD):
        rnd = random.Random(load)
        s, o = pair([], load)
        for size in (0, 1, 5, 2, 50, 3, 400, 7, 2000):
            batch = [rnd.randrange(500) for _ in range(size)]
            s.update(batch)
            o.update(batch)
            s._check()
            assert list(s) == list(o)


def test_reversed_and_iter() -> None:
    values = [random.Random(3).randrange(100) for _ in range(500)]
    for load in (1, 5, DEFAULT_LOAD):
        s, o = pair(values, load)
        assert list(s) == list(o)
        assert list(reversed(s)) == list(reversed(o))


def test_check_catches_corruption() -> None:
    s = SkipList(range(100), load=4)
    node = s._head.nxt[0]
    assert node is not None
    node.span[0] += 1
    with pytest.raises(AssertionError, match="span"):
        s._check()
    node.span[0] -= 1
    node.keys.reverse()
    with pytest.raises(AssertionError):
        s._check()


# -- seeded stress against the oracle --------------------------------------------------------


def call(s: SkipList[Any], o: SortedList, name: str, *args: Any) -> Any:
    """``same`` for a method call: both must return (or raise) the same."""
    got = outcome(lambda: getattr(s, name)(*args))
    assert got == outcome(lambda: getattr(o, name)(*args)), (name, args)
    return got


def stress(seed: int, load: int, steps: int, keyspace: int, cap: int, check_every: int) -> None:
    """Random operations compared one by one; ``cap`` bounds the size so _check stays cheap."""
    rnd = random.Random(seed)
    s, o = pair([rnd.randrange(keyspace) for _ in range(rnd.randrange(4 * load))], load)
    for step in range(steps):
        n = len(o)
        key = rnd.randrange(keyspace)
        op = rnd.randrange(16) if n < cap else 8  # over the cap: delete by position
        if op < 4:
            o.add(key)
            assert s.add(key) == o.bisect_right(key) - 1  # add returns where the key landed
        elif op < 5:
            call(s, o, "remove", key)
        elif op < 6:
            expected = o.index(key) if key in o else None
            if expected is None:
                with pytest.raises(ValueError, match="not in list"):
                    s.index_remove(key)
            else:
                o.remove(key)
                assert s.index_remove(key) == expected
        elif op == 6:
            s.discard(key)
            o.discard(key)
        elif op == 7:
            batch = [rnd.randrange(keyspace) for _ in range(rnd.choice((0, 1, 3, 10, n // 3)))]
            s.update(batch)
            o.update(batch)
        elif op == 8:
            call(s, o, "__delitem__", rnd.randrange(-n - 2, n + 2))
            if rnd.random() < 0.05:
                sl = slice(rnd.randrange(-n - 1, n + 1), rnd.randrange(-n - 1, n + 1))
                del s[sl]
                del o[sl]
        elif op == 9:
            call(s, o, "__getitem__", rnd.randrange(-n - 2, n + 2))
        elif op == 10:
            sl = slice(
                rnd.choice((None, rnd.randrange(-n - 2, n + 2))),
                rnd.choice((None, rnd.randrange(-n - 2, n + 2))),
                rnd.choice((None, 1, 2, 3, -1, -2)),
            )
            assert s[sl] == o[sl]
        elif op == 11:
            call(s, o, "index", key)
        elif op == 12:
            for name in ("bisect_left", "bisect_right", "__contains__"):
                call(s, o, name, key)
        elif op == 13:
            lo = rnd.choice((None, rnd.randrange(keyspace)))
            hi = rnd.choice((None, rnd.randrange(keyspace)))
            inclusive = (rnd.random() < 0.5, rnd.random() < 0.5)
            call(s, o, "irange", lo, hi, inclusive, rnd.random() < 0.5)
        elif op == 14:
            call(s, o, "index", key, rnd.randrange(-n - 1, n + 1), rnd.randrange(-n - 1, n + 1))
        else:
            assert list(s) == list(o) and list(reversed(s)) == list(reversed(o))
        if op <= 8 and step % check_every == 0:
            s._check()
        assert len(s) == len(o)
    s._check()
    assert list(s) == list(o)


@pytest.mark.parametrize("load", TINY_LOADS)
@pytest.mark.parametrize("seed", range(3))
def test_stress_tiny_loads(seed: int, load: int) -> None:
    # 15 runs x 4000 steps, _check after every mutation.
    stress(seed, load, steps=4000, keyspace=60 * load, cap=40 * load, check_every=1)


@pytest.mark.parametrize("load", [16, 100])
@pytest.mark.parametrize("seed", range(2))
def test_stress_medium_loads(seed: int, load: int) -> None:
    stress(seed, load, steps=8000, keyspace=5000, cap=30 * load, check_every=50)


def test_stress_default_load_many_nodes() -> None:
    # Enough keys at the real load factor for a multi-level tower that splits and merges.
    rnd = random.Random(99)
    keys = [(-rnd.randrange(10**6), seq, f"m{seq}") for seq in range(20_000)]
    s, o = pair(keys, DEFAULT_LOAD)
    for step in range(4000):
        r = rnd.random()
        if r < 0.6:
            old = o[rnd.randrange(len(o))]
            assert s.index_remove(old) == o.index(old)
            o.remove(old)
            new = (old[0] - rnd.randrange(1000), old[1], old[2])
            o.add(new)
            assert s.add(new) == o.index(new)
        elif r < 0.61:
            # Drain a region so nodes underflow and merge, then refill it so they split.
            start = rnd.randrange(len(o))
            gone = o[start : start + 1200]
            for _ in gone:
                assert s[start] == o[start]
                del s[start]
                del o[start]
            for score, seq, member in gone:
                s.add((score - 1, seq, member))
                o.add((score - 1, seq, member))
        else:
            i = rnd.randrange(len(o))
            assert s[i] == o[i] and s.index(o[i]) == o.index(o[i])
            assert s[i : i + 10] == o[i : i + 10]
        if step % 400 == 0:
            s._check()
    s._check()
    assert list(s) == list(o)


# -- hypothesis: rule-based model check ------------------------------------------------------


class SkipListMachine(RuleBasedStateMachine):
    keys = st.integers(-20, 20)

    @initialize(load=st.sampled_from([1, 2, 3, 4, 8, 1000]), values=st.lists(keys))
    def build(self, load: int, values: list[int]) -> None:
        self.s = SkipList(values, load=load)
        self.o = SortedList(values)

    @rule(key=keys)
    def add(self, key: int) -> None:
        self.s.add(key)
        self.o.add(key)

    @rule(values=st.lists(keys, max_size=30))
    def update(self, values: list[int]) -> None:
        self.s.update(values)
        self.o.update(values)

    @rule(key=keys)
    def remove(self, key: int) -> None:
        same(self.s, self.o, lambda x: x.remove(key))

    @rule(key=keys)
    def discard(self, key: int) -> None:
        self.s.discard(key)
        self.o.discard(key)

    @rule(index=st.integers(-40, 40))
    def delete(self, index: int) -> None:
        same(self.s, self.o, lambda x: x.__delitem__(index))

    @precondition(lambda self: len(self.o) > 0)
    @rule(data=st.data())
    def delete_slice(self, data: st.DataObject) -> None:
        n = len(self.o)
        sl = slice(
            data.draw(st.none() | st.integers(-n - 1, n + 1)),
            data.draw(st.none() | st.integers(-n - 1, n + 1)),
            data.draw(st.sampled_from([None, 1, 2, -1, -3])),
        )
        del self.s[sl]
        del self.o[sl]

    @rule(
        index=st.integers(-40, 40), stop=st.none() | st.integers(-40, 40), step=st.integers(-3, 3)
    )
    def positions(self, index: int, stop: int | None, step: int) -> None:
        same(self.s, self.o, lambda x: x[index])
        sl = slice(index, stop, step or None)
        assert self.s[sl] == self.o[sl]

    @rule(key=keys, start=st.none() | st.integers(-30, 30), stop=st.none() | st.integers(-30, 30))
    def lookups(self, key: int, start: int | None, stop: int | None) -> None:
        same(self.s, self.o, lambda x: x.index(key, start, stop))
        same(self.s, self.o, lambda x: (x.bisect_left(key), x.bisect_right(key), key in x))

    @rule(
        lo=st.none() | keys,
        hi=st.none() | keys,
        inclusive=st.tuples(st.booleans(), st.booleans()),
        reverse=st.booleans(),
    )
    def irange(self, lo: int | None, hi: int | None, inclusive: Any, reverse: bool) -> None:
        same(self.s, self.o, lambda x: x.irange(lo, hi, inclusive, reverse))

    @invariant()
    def agrees(self) -> None:
        self.s._check()
        assert list(self.s) == list(self.o)
        assert list(reversed(self.s)) == list(reversed(self.o))


SkipListMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_skiplist_machine = SkipListMachine.TestCase
