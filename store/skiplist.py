"""SkipList: an unrolled, indexable skip list; the ordered index behind every leaderboard.

Structure
---------
A skip list (Pugh 1990) whose nodes are not single keys but sorted *runs* of keys (Python
lists of ``load`` to ``2 * load`` keys). The skip list orders and indexes the nodes; inside
a node all work on keys is C-speed ``bisect``/``list.insert``. A node of height ``h`` is
linked at levels ``0 .. h-1``; the head node has no keys and is linked at every level::

    level 2   HEAD ------------------------------> [F G H] -> None
    level 1   HEAD ------------> [C D] ----------> [F G H] -> None
    level 0   HEAD -> [A B] ---> [C D] -> [E] ---> [F G H] -> None

Each node caches ``min`` (its first key): searches compare the key against the *next*
node's ``min`` and step forward while the key belongs at or after it, exactly as Redis's
zslInsert compares against ``x->level[i].forward``.

Span rule
---------
Every link carries a span: the number of keys from the start of the node that owns the link
to the start of the node it points at (to the end of the list for a link to None). A level-0
span is therefore the node's own size, and the spans along any level sum to ``len(s)``.
For the drawing above (HEAD owns no keys, so its spans count the keys it skips)::

    level 2   HEAD -5------------------------------> [F G H] -3-> None   5 + 3 = 8
    level 1   HEAD -2--------------> [C D] -3--------> [F G H] -3-> None   2 + 3 + 3 = 8
    level 0   HEAD -0-> [A B] -2-> [C D] -2-> [E] -1-> [F G H] -3-> None   0+2+2+1+3 = 8

So the rank of a node's first key is the sum of the spans crossed to reach it, and the
rank of any key is that sum plus its ``bisect`` position inside the node.

Traced ``index("E")`` (walk while the next node's ``min < key``, summing spans crossed)::

    level 2  at HEAD, next [F G H]: F < E? no              -> down     rank 0
    level 1  at HEAD, next [C D]:   C < E? yes, cross 2    -> [C D]    rank 2
             at [C D], next [F G H]: F < E? no             -> down
    level 0  at [C D], next [E]:    E < E? no              -> stop
    rank 2 + bisect_left([C D], E) = 2 + 2 = 4             (A B C D E: E is at 4)

A key equal to the next run's ``min`` lands one past the end of the current run, which is
the same position, so no second probe is needed. ``s[i]`` walks the same tower but steps
forward while ``i >= span``, subtracting each span it crosses.

Departures from Pugh / Redis
----------------------------
* Unrolled: a node holds a run of keys, so at 1M keys there are 700-1000 nodes, 5 levels
  and a Python-level walk of ~12 steps over hot nodes; the per-key rest is C. A run that
  grows past ``2 * load`` splits in two (the new half gets a random height); one that
  shrinks below ``load // 2`` absorbs its successor (the last run is absorbed by its
  predecessor instead), then re-splits if too big. No empty node is ever left linked.
* Spans count keys, not nodes, and level-0 spans are kept too, so one walk updates every
  level: ``add``/``remove`` adjust spans on the way down instead of in a second loop over
  the path, and recount them all (rare, O(n / load)) if a user comparison raises midway.
* No backward pointers: ``reversed`` collects the (few) runs first. Heights use p = 1/4
  (fewer levels to update per write than 1/2, same expected comparisons); a bulk build gives
  a perfectly balanced tower (node j gets one extra level per factor of 4 dividing j).
* Duplicates are allowed and ordered as ``sortedcontainers.SortedList`` orders them
  (``add`` goes right of equal keys, ``remove`` takes the leftmost); results, errors and
  messages match ``SortedList`` for the methods below, which is what the tests check.

Not thread-safe; the service runs it on one event loop. Iterating while mutating is
undefined (as for ``SortedList``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from itertools import chain
from random import Random
from typing import Any, Generic, Protocol, TypeVar, overload

__all__ = ["DEFAULT_LOAD", "SkipList"]

DEFAULT_LOAD = 1000
_MAX_LEVEL = 24  # p = 1/4: enough for 4**24 nodes
# Heights only shape the tower, never results; a private seeded generator keeps the shape
# (and so benchmark timings) reproducible run to run.
_heights = Random(0x5EED)


class _Comparable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=_Comparable)


class _Node(Generic[K]):
    __slots__ = ("keys", "min", "nxt", "span")

    def __init__(self, keys: list[K], height: int) -> None:
        self.keys = keys
        self.min: K = keys[0] if keys else None  # type: ignore[assignment]  # head: never read
        self.nxt: list[_Node[K] | None] = [None] * height
        self.span: list[int] = [0] * height


def _tower(j: int) -> int:
    """Height of node j (1-based) in a perfectly balanced p = 1/4 build."""
    h = 1
    while not j & 3 and h < _MAX_LEVEL:
        j >>= 2
        h += 1
    return h


class SkipList(Generic[K]):
    """Sorted multiset with O(log n) insert, delete, rank and select; see the module doc."""

    __slots__ = ("_half", "_head", "_len", "_levels", "_load", "_max", "_path")

    def __init__(self, iterable: Iterable[K] | None = (), *, load: int = DEFAULT_LOAD) -> None:
        if load < 1:
            raise ValueError(f"load must be a positive int, but got {load!r}")
        self._load = load
        self._max = 2 * load
        self._half = max(1, load >> 1)
        self._path_init()
        self._build(sorted(iterable) if iterable is not None else [])

    def _path_init(self) -> None:
        self._head: _Node[K] = _Node([], _MAX_LEVEL)
        # Scratch list of the nodes a walk passed at each level: reused to avoid an allocation
        # per call. Safe because nothing re-enters the list mid-operation.
        self._path: list[_Node[K]] = [self._head] * _MAX_LEVEL

    def _set_top(self, top: int) -> None:
        self._levels: tuple[int, ...] = tuple(range(top - 1, -1, -1))

    def _build(self, keys: list[K]) -> None:
        """Link sorted ``keys`` into evenly filled runs under a balanced tower, in O(n)."""
        head = self._head
        n = self._len = len(keys)
        count = -(-n // self._load)
        last: list[_Node[K]] = [head] * _MAX_LEVEL  # last node linked at each level
        start = [0] * _MAX_LEVEL  # rank of that node's first key
        top = 1
        for j in range(count):
            lo, hi = n * j // count, n * (j + 1) // count
            node: _Node[K] = _Node(keys[lo:hi], _tower(j + 1))
            for lvl in range(len(node.nxt)):
                prev = last[lvl]
                prev.nxt[lvl] = node
                prev.span[lvl] = lo - start[lvl]
                last[lvl] = node
                start[lvl] = lo
            top = max(top, len(node.nxt))
        for lvl in range(_MAX_LEVEL):
            last[lvl].nxt[lvl] = None
            last[lvl].span[lvl] = n - start[lvl]
        self._set_top(top)

    def clear(self) -> None:
        """Remove every key. Runtime complexity: O(1) (the old nodes go to the GC)."""
        self._path_init()
        self._build([])

    def __len__(self) -> int:
        """Runtime complexity: O(1)."""
        return self._len

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"

    # -- mutation ------------------------------------------------------------------------

    def add(self, key: K) -> int:
        """Insert ``key``, after any equal keys; return the position it landed at (SortedList
        returns None: the position is free here, summed from the spans crossed on the way
        down, and saves a leaderboard the second search for its new rank).
        Runtime complexity: O(log n)."""
        path = self._path
        node = self._head
        rank = 0
        try:
            for lvl in self._levels:
                nxt = node.nxt[lvl]
                while nxt is not None and not key < nxt.min:
                    rank += node.span[lvl]
                    node = nxt
                    nxt = node.nxt[lvl]
                path[lvl] = node
                # Counted on the way down (the key will land under this link) rather than in
                # a second loop over ``path``: one pass per level instead of two.
                node.span[lvl] += 1
            keys = node.keys
            if keys:
                idx = bisect_right(keys, key)
                keys.insert(idx, key)
                rank += idx
        except BaseException:  # a comparison raised: nothing was inserted
            self._respan()
            raise
        if not keys:  # key sorts before every run: it opens the first one
            if nxt is None:  # or starts the list
                self._link_first(_Node([key], self._height()))
                return 0
            node = nxt
            keys = node.keys
            keys.insert(0, key)
            node.min = key
            head = self._head
            for lvl in range(len(node.nxt)):  # the key sits under node's links, not head's
                head.span[lvl] -= 1
                node.span[lvl] += 1
                path[lvl] = node
        self._len += 1
        if len(keys) > self._max:
            self._split(node)
        return rank

    def update(self, iterable: Iterable[K]) -> None:
        """Add every key of ``iterable``. Runtime complexity: O(k log n), or O(n + k log k)
        by rebuilding when k is at least a quarter of n (as SortedList does)."""
        values = sorted(iterable)
        if self._len and len(values) * 4 < self._len:
            add = self.add
            for key in values:
                add(key)
            return
        if self._len:
            # Existing keys first, so the stable sort keeps old-before-new among equal keys.
            values = [*self, *values]
            values.sort()
        self._path_init()
        self._build(values)

    def remove(self, key: K) -> None:
        """Remove the leftmost key equal to ``key``; ValueError if absent.
        Runtime complexity: O(log n)."""
        if self._unlink_key(key) < 0:
            raise ValueError(f"{key!r} not in list")

    def discard(self, key: K) -> None:
        """Remove the leftmost key equal to ``key`` if present. Runtime complexity: O(log n)."""
        self._unlink_key(key)

    def index_remove(self, key: K) -> int:
        """Remove the leftmost key equal to ``key`` and return the position it had; ValueError
        if absent. One search where ``index`` + ``del`` take two (not in SortedList).
        Runtime complexity: O(log n)."""
        pos = self._unlink_key(key)
        if pos < 0:
            raise ValueError(f"{key!r} not in list")
        return pos

    def _unlink_key(self, key: K) -> int:
        """Unlink the leftmost key equal to ``key``: its former position, or -1 if absent."""
        path = self._path
        node = self._head
        rank = 0
        try:
            for lvl in self._levels:
                nxt = node.nxt[lvl]
                while nxt is not None and nxt.min < key:
                    rank += node.span[lvl]
                    node = nxt
                    nxt = node.nxt[lvl]
                path[lvl] = node
                node.span[lvl] -= 1  # optimistic, as in add; undone below if absent
            keys = node.keys
            idx = bisect_left(keys, key)
            # Past the end of this run, the leftmost match can only open the next one.
            found = keys[idx] == key if idx < len(keys) else nxt is not None and nxt.min == key
        except BaseException:
            self._respan()
            raise
        if not found:
            for lvl in self._levels:
                path[lvl].span[lvl] += 1
            return -1
        rank += idx  # past the end of this run, idx == len(keys): where the next run starts
        if idx < len(keys):
            del keys[idx]
        else:
            node = nxt  # type: ignore[assignment]  # found implies nxt is a node
            keys = node.keys
            del keys[0]
            if keys:
                node.min = keys[0]
            for lvl in range(len(node.nxt)):  # the key sat under node's links
                path[lvl].span[lvl] += 1
                node.span[lvl] -= 1
                path[lvl] = node
        self._len -= 1
        if len(keys) < self._half:
            self._rebalance(node)
        return rank

    def __delitem__(self, index: int | slice) -> None:
        """Delete by position (0-based, negatives from the end) or by slice.
        Runtime complexity: O(log n) per key; a large slice rebuilds in O(n)."""
        n = self._len
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1 and start < stop and n <= 8 * (stop - start):
                keep = self[:start] + self[stop:]
                self._path_init()
                self._build(keep)
                return
            positions = range(start, stop, step)
            # Highest position first so the lower ones stay valid.
            for pos in sorted(positions, reverse=True):
                self._del_at(pos)
            return
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("list index out of range")
        self._del_at(index)

    def _del_at(self, index: int) -> None:
        path = self._path
        node = self._head
        for lvl in self._levels:
            span = node.span[lvl]
            while index >= span:
                index -= span
                node = node.nxt[lvl]  # type: ignore[assignment]  # spans end the walk first
                span = node.span[lvl]
            path[lvl] = node
            node.span[lvl] -= 1  # the position exists, so the key under this link will go
        keys = node.keys
        del keys[index]
        if not index and keys:
            node.min = keys[0]
        self._len -= 1
        if len(keys) < self._half:
            self._rebalance(node)

    # -- queries -------------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        """Runtime complexity: O(log n)."""
        node = self._head
        nxt = None
        for lvl in self._levels:
            nxt = node.nxt[lvl]
            while nxt is not None and nxt.min < key:
                node = nxt
                nxt = node.nxt[lvl]
        keys = node.keys
        idx = bisect_left(keys, key)  # type: ignore[call-overload]
        if idx < len(keys):
            return bool(keys[idx] == key)
        return nxt is not None and bool(nxt.min == key)

    def bisect_left(self, key: K) -> int:
        """Index where ``key`` would go, before equal keys. Runtime complexity: O(log n)."""
        node = self._head
        rank = 0
        for lvl in self._levels:
            nxt = node.nxt[lvl]
            while nxt is not None and nxt.min < key:
                rank += node.span[lvl]
                node = nxt
                nxt = node.nxt[lvl]
        return rank + bisect_left(node.keys, key)

    def bisect_right(self, key: K) -> int:
        """Index where ``key`` would go, after equal keys. Runtime complexity: O(log n)."""
        node = self._head
        rank = 0
        for lvl in self._levels:
            nxt = node.nxt[lvl]
            while nxt is not None and not key < nxt.min:
                rank += node.span[lvl]
                node = nxt
                nxt = node.nxt[lvl]
        return rank + bisect_right(node.keys, key)

    def index(self, key: K, start: int | None = None, stop: int | None = None) -> int:
        """Position of the leftmost ``key`` within ``[start, stop)``; ValueError if absent.
        Runtime complexity: O(log n)."""
        n = self._len
        if not n:
            raise ValueError(f"{key!r} is not in list")
        start = 0 if start is None else max(start + n if start < 0 else start, 0)
        stop = n if stop is None else min(stop + n if stop < 0 else stop, n)
        if stop <= start:
            raise ValueError(f"{key!r} is not in list")
        node = self._head
        nxt = None
        rank = 0
        for lvl in self._levels:
            nxt = node.nxt[lvl]
            while nxt is not None and nxt.min < key:
                rank += node.span[lvl]
                node = nxt
                nxt = node.nxt[lvl]
        keys = node.keys
        idx = bisect_left(keys, key)
        found = keys[idx] == key if idx < len(keys) else nxt is not None and nxt.min == key
        if found:
            left = rank + idx
            if start <= left:
                if left < stop:
                    return left
            elif start < self.bisect_right(key):
                return start  # equal keys run from before start to at least start
        raise ValueError(f"{key!r} is not in list")

    @overload
    def __getitem__(self, index: int) -> K: ...
    @overload
    def __getitem__(self, index: slice) -> list[K]: ...
    def __getitem__(self, index: int | slice) -> K | list[K]:
        """Key at a position (0-based, negatives from the end), or a list for a slice.
        Runtime complexity: O(log n), plus O(k) for a slice of k keys."""
        n = self._len
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1:
                return self._slice(start, stop) if start < stop else []
            positions = range(start, stop, step)
            if not positions:
                return []
            lo, hi = min(positions[0], positions[-1]), max(positions[0], positions[-1])
            if (hi - lo) > 32 * len(positions):  # sparse: look each one up
                return [self[pos] for pos in positions]
            # Copy the covered run once and let list slicing pick every step-th key.
            return self._slice(lo, hi + 1)[::step]
        if index < 0:
            index += n
            if index < 0:
                raise IndexError("list index out of range")
        elif index >= n:
            raise IndexError("list index out of range")
        node = self._head
        for lvl in self._levels:
            span = node.span[lvl]
            while index >= span:
                index -= span
                node = node.nxt[lvl]  # type: ignore[assignment]  # spans end the walk first
                span = node.span[lvl]
        return node.keys[index]

    def _locate(self, index: int) -> tuple[_Node[K], int]:
        """The node holding position ``0 <= index < len`` and the offset inside it."""
        node = self._head
        for lvl in self._levels:
            span = node.span[lvl]
            while index >= span:
                index -= span
                node = node.nxt[lvl]  # type: ignore[assignment]  # spans end the walk first
                span = node.span[lvl]
        return node, index

    def _slice(self, start: int, stop: int) -> list[K]:
        """Keys at positions ``0 <= start < stop <= len``, as a new list."""
        node = self._head
        idx = start
        for lvl in self._levels:  # _locate, inlined: top-N and around-me pages live here
            span = node.span[lvl]
            while idx >= span:
                idx -= span
                node = node.nxt[lvl]  # type: ignore[assignment]  # spans end the walk first
                span = node.span[lvl]
        end = idx + stop - start
        result = node.keys[idx:end]
        while len(result) < stop - start:
            end -= len(node.keys)
            node = node.nxt[0]  # type: ignore[assignment]  # stop <= len bounds the walk
            result += node.keys[:end]
        return result

    def __iter__(self) -> Iterator[K]:
        """Runtime complexity: O(1) to start, O(n) to exhaust."""
        return chain.from_iterable(self._runs())

    def __reversed__(self) -> Iterator[K]:
        """Runtime complexity: O(n / load) to start (no back links), O(n) to exhaust."""
        return chain.from_iterable(map(reversed, list(self._runs())[::-1]))

    def _runs(self) -> Iterator[list[K]]:
        node = self._head.nxt[0]
        while node is not None:
            yield node.keys
            node = node.nxt[0]

    def irange(
        self,
        minimum: K | None = None,
        maximum: K | None = None,
        inclusive: tuple[bool, bool] = (True, True),
        reverse: bool = False,
    ) -> Iterator[K]:
        """Keys between ``minimum`` and ``maximum`` (None: unbounded), ascending unless
        ``reverse``. Runtime complexity: O(log n) to start, O(k) to exhaust."""
        lo = 0
        if minimum is not None:
            lo = self.bisect_left(minimum) if inclusive[0] else self.bisect_right(minimum)
        hi = self._len
        if maximum is not None:
            hi = self.bisect_right(maximum) if inclusive[1] else self.bisect_left(maximum)
        if lo >= hi:
            return iter(())
        if reverse:
            return reversed(self._slice(lo, hi))
        return chain.from_iterable(self._chunks(lo, hi - lo))

    def _chunks(self, start: int, count: int) -> Iterator[list[K]]:
        node: _Node[K] | None
        node, idx = self._locate(start)
        while count > 0 and node is not None:
            chunk = node.keys[idx : idx + count]
            yield chunk
            count -= len(chunk)
            idx = 0
            node = node.nxt[0]

    # -- structure maintenance -----------------------------------------------------------

    def _height(self) -> int:
        bits = _heights.getrandbits(2 * _MAX_LEVEL - 2) | 1 << (2 * _MAX_LEVEL - 2)
        return ((bits & -bits).bit_length() + 1) >> 1  # one more level per 2 zero bits

    def _link_first(self, node: _Node[K]) -> None:
        """Link ``node`` as the only node of an empty list."""
        head = self._head
        for lvl in range(len(node.nxt)):
            head.nxt[lvl] = node
            head.span[lvl] = 0
            node.span[lvl] = len(node.keys)
        self._len = len(node.keys)
        self._set_top(len(node.nxt))

    def _split(self, node: _Node[K]) -> None:
        """Move the keys of ``node`` past ``load`` into a new node linked right after it.
        ``self._path`` holds, per level, the last node at or before ``node``."""
        path = self._path
        head = self._head
        keys = node.keys
        new: _Node[K] = _Node(keys[self._load :], self._height())
        del keys[self._load :]
        height = len(new.nxt)
        top = len(self._levels)
        if height > top:
            for lvl in range(top, height):
                head.nxt[lvl] = None
                head.span[lvl] = self._len
                path[lvl] = head
            self._set_top(height)
        before = len(keys)  # keys from path[lvl]'s start to new's start
        for lvl in range(height):
            prev = path[lvl]
            if lvl and prev is not path[lvl - 1]:
                walk = prev
                while walk is not path[lvl - 1]:
                    before += walk.span[lvl - 1]
                    walk = walk.nxt[lvl - 1]  # type: ignore[assignment]  # reaches path[lvl-1]
            new.nxt[lvl] = prev.nxt[lvl]
            new.span[lvl] = prev.span[lvl] - before
            prev.nxt[lvl] = new
            prev.span[lvl] = before

    def _rebalance(self, node: _Node[K]) -> None:
        """Fix ``node`` after it shrank below ``load // 2``: absorb its successor, or be
        absorbed by its predecessor when it is last. ``self._path`` is as for ``_split``."""
        path = self._path
        head = self._head
        succ = node.nxt[0]
        if succ is None:
            if head.nxt[0] is node:  # the only node: any size will do, but never empty
                if not node.keys:
                    self._path_init()
                    self._build([])
                return
            # Strict predecessors of the last node: walk each level to its end.
            walk = head
            for lvl in self._levels:
                nxt = walk.nxt[lvl]
                while nxt is not None and nxt is not node:
                    walk = nxt
                    nxt = walk.nxt[lvl]
                path[lvl] = walk
            succ, node = node, walk
        # ``node`` absorbs ``succ``; path[lvl] is the last node at or before ``node``.
        for lvl in range(len(succ.nxt)):
            prev = path[lvl]
            prev.nxt[lvl] = succ.nxt[lvl]
            prev.span[lvl] += succ.span[lvl]
        if not node.keys:
            node.min = succ.min
        node.keys += succ.keys
        top = len(self._levels)
        while top > 1 and head.nxt[top - 1] is None:
            top -= 1
        if top < len(self._levels):
            self._set_top(top)
        if len(node.keys) > self._max:
            path[: len(node.nxt)] = [node] * len(node.nxt)
            self._split(node)

    def _respan(self) -> None:
        """Recount every span from the run sizes: the slow, rare way back to a consistent
        tower after a user comparison raised halfway through a walk that had counted."""
        head = self._head
        for lvl in self._levels:
            node, span = head, 0
            walk = head.nxt[0]
            while walk is not None:
                if len(walk.nxt) > lvl:
                    node.span[lvl] = span
                    node, span = walk, 0
                span += len(walk.keys)
                walk = walk.nxt[0]
            node.span[lvl] = span

    def _check(self) -> None:
        """Assert every invariant. Runtime complexity: O(n)."""
        head = self._head
        top = len(self._levels)
        assert self._levels == tuple(range(top - 1, -1, -1)) and 1 <= top <= _MAX_LEVEL
        assert len(head.nxt) == len(head.span) == _MAX_LEVEL and not head.keys
        assert all(head.nxt[lvl] is None for lvl in range(top, _MAX_LEVEL))
        assert top == 1 or head.nxt[top - 1] is not None, "top level is empty"
        order: list[_Node[K]] = []  # level-0 order
        start: dict[int, int] = {id(head): 0}  # rank of each node's first key
        rank, prev_key, node = 0, None, head.nxt[0]
        while node is not None:
            keys = node.keys
            assert keys, "an empty node is linked"
            assert len(keys) <= self._max, f"node of {len(keys)} keys over {self._max}"
            assert node.min is keys[0], "stale min"
            assert 1 <= len(node.nxt) == len(node.span) <= top
            for key in keys:
                assert prev_key is None or not key < prev_key, "keys out of order"
                prev_key = key
            order.append(node)
            start[id(node)] = rank
            rank += len(keys)
            node = node.nxt[0]
        assert rank == self._len, f"len {self._len} but {rank} keys linked"
        if len(order) > 1:
            assert all(len(node.keys) >= self._half for node in order), "underfull node"
        for lvl in range(top):
            expect = [node for node in order if len(node.nxt) > lvl]
            walk, chain_, total = head, [], 0
            while True:
                nxt = walk.nxt[lvl]
                end = rank if nxt is None else start[id(nxt)]
                assert walk.span[lvl] == end - start[id(walk)], f"bad span at level {lvl}"
                total += walk.span[lvl]
                if nxt is None:
                    break
                chain_.append(nxt)
                walk = nxt
            assert chain_ == expect, f"level {lvl} links disagree with level 0"
            assert total == self._len
