"""Ranks: what ``rank`` means on a board, and the answers that need more than a position.

A board's index (store/skiplist.py) holds sort keys best first (store/sortkey.py); a key's
0-based position plus one is its *ordinal* rank, and a position is all the SkipList knows. The
other two rankings share one rank among equal scores. Every key starts with the NUM of its
score (the first ``NUM_BYTES`` bytes), so the keys of one score form one contiguous run and a
bare NUM sorts just before its run::

    position      0    1    2    3    4    5
    score         90   80   80   80   70   70
    ordinal       1    2    3    4    5    6     position + 1
    competition   1    2    2    2    5    5     1 + entries with a strictly better score
    dense         1    2    2    2    3    3     1 + distinct strictly better scores

* competition: ``index.bisect_left(NUM)`` counts the keys before the run -- exactly the entries
  with a better score. One O(log n) search, no extra structure.
* dense: no position gives the number of distinct scores before a run, so a dense board's index
  is a ``DenseIndex``: a SkipList that also keeps its distinct NUMs in a second SkipList, with
  a count per NUM in a dict so a NUM leaves when its last key does. Only ranking=dense boards
  pay for it (one 10-byte NUM, a dict slot and a list slot per *distinct* score); ``convert``
  builds or drops it in O(n) when a board's ranking changes.
* a page (top, around, a score range, a lookup) pays one such search for its first entry; the
  next ones follow from comparing each key's NUM with its predecessor's: O(log n + limit), never
  O(n) per page.

``percentile`` is the share of the *other* entries that rank strictly below an entry, 0-100:
under ordinal every entry after it; under competition and dense the entries with a strictly
worse score (equal scores share a rank, so none of them is below). A lone entry is at 100.

A score range ``min <= score <= max`` is a NUM range, so it is one run of positions found with
two searches; on ``desc`` boards NUMs encode the negated score, which swaps the bounds.

Ranks here are 1-based, positions 0-based, as everywhere in store/.
"""

import gc
from collections import Counter
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Literal

from store.skiplist import DEFAULT_LOAD, SkipList
from store.sortkey import NUM_BYTES, encode_num, next_num
from store.values import Score

__all__ = [
    "LOOKUP_MEMBERS",
    "RANKINGS",
    "DenseIndex",
    "Index",
    "Ranking",
    "convert",
    "make_index",
    "page_ranks",
    "percentile",
    "rank_at",
    "rank_for_num",
    "score_span",
]

Ranking = Literal["ordinal", "competition", "dense"]
RANKINGS: tuple[Ranking, ...] = ("ordinal", "competition", "dense")
Index = SkipList[bytes]

LOOKUP_MEMBERS = 1000  # members one lookup may name (a friends list; the DESIGN bound)

_NUM_OF = itemgetter(slice(0, NUM_BYTES))  # key -> its score's NUM


class DenseIndex(SkipList[bytes]):
    """A board index that also counts its distinct scores, for dense ranks.

    ``_nums`` holds each distinct NUM once; ``_counts[num]`` is how many keys carry it. Every
    mutation of the index funnels through ``add``, ``_unlink_key``, ``_del_at`` or ``_build``
    (SkipList's ``remove``/``discard``/``index_remove``/``update``/``clear``/``del`` all end in
    one of those), so overriding those four keeps the two in step whatever the Board calls.
    """

    __slots__ = ("_counts", "_nums")

    def __init__(self, iterable: Iterable[bytes] | None = (), *, load: int = DEFAULT_LOAD) -> None:
        self._counts: dict[bytes, int] = {}
        self._nums: SkipList[bytes] = SkipList()
        super().__init__(iterable, load=load)

    def _build(self, keys: list[bytes]) -> None:
        super()._build(keys)
        # Counter's counting loop runs in C: a third of the time of a dict.get loop at 1M keys.
        counts = dict(Counter(map(_NUM_OF, keys)))
        self._counts = counts
        # The keys were sorted, so the dict holds the NUMs in order: an O(n) build.
        self._nums = SkipList(counts)

    def add(self, key: bytes) -> int:
        pos = super().add(key)
        num = key[:NUM_BYTES]
        count = self._counts.get(num)
        if count is None:
            self._counts[num] = 1
            self._nums.add(num)
        else:
            self._counts[num] = count + 1
        return pos

    # Removing the last key rebuilds an empty list (SkipList._rebalance calls _build), which
    # has already reset the counts: only a non-empty index has a NUM to forget.

    def _unlink_key(self, key: bytes) -> int:
        pos = super()._unlink_key(key)
        if pos >= 0 and self._len:
            self._forget(key[:NUM_BYTES])
        return pos

    def _del_at(self, index: int) -> None:
        num = self[index][:NUM_BYTES]
        super()._del_at(index)
        if self._len:
            self._forget(num)

    def _forget(self, num: bytes) -> None:
        count = self._counts[num] - 1
        if count:
            self._counts[num] = count
        else:
            del self._counts[num]
            self._nums.remove(num)

    def distinct_before(self, num: bytes) -> int:
        """How many distinct scores sort before ``num``. Runtime complexity: O(log d)."""
        return self._nums.bisect_left(num)

    def distinct(self) -> int:
        """How many distinct scores the index holds. Runtime complexity: O(1)."""
        return len(self._nums)

    def _check(self) -> None:
        super()._check()
        self._nums._check()
        counts: dict[bytes, int] = {}
        for key in self:
            num = key[:NUM_BYTES]
            counts[num] = counts.get(num, 0) + 1
        assert counts == self._counts, "distinct-score counts disagree with the keys"
        assert list(self._nums) == sorted(counts), "distinct-score index disagrees with counts"


def make_index(ranking: Ranking, keys: Iterable[bytes] = ()) -> Index:
    """An index for a board with this ranking; O(n) from keys already in order."""
    return DenseIndex(keys) if ranking == "dense" else SkipList(keys)


def convert(index: Index, ranking: Ranking) -> Index:
    """``index`` itself when it already suits ``ranking``, else a copy that does: switching to
    dense builds the distinct-score index, switching away drops it. Runtime complexity: O(n)."""
    if isinstance(index, DenseIndex) == (ranking == "dense"):
        return index
    # The build allocates one object per key (a NUM, list slots): with the collector on, those
    # allocations trigger full passes over the whole heap, which cost more than the build
    # itself (a profile at 300k keys: 3.3 s of 4.3). Nothing built here can form a cycle.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return make_index(ranking, index)
    finally:
        if enabled:
            gc.enable()


def rank_at(ranking: Ranking, index: Index, pos: int, key: bytes) -> int:
    """The rank shown for ``key``, which sits at 0-based ``pos`` of ``index`` (or would: the
    key need not be in the index, which is how a write's previous rank is read before the old
    key leaves). Runtime complexity: O(1) ordinal, O(log n) competition, O(log d) dense."""
    if ranking == "competition":
        return index.bisect_left(key[:NUM_BYTES]) + 1
    if ranking == "dense":
        assert isinstance(index, DenseIndex), "a dense board needs a DenseIndex"
        return index.distinct_before(key[:NUM_BYTES]) + 1
    return pos + 1


def page_ranks(ranking: Ranking, index: Index, offset: int, keys: Sequence[bytes]) -> list[int]:
    """The ranks shown for ``keys``, the consecutive keys from position ``offset`` on.
    Runtime complexity: O(log n + len(keys)): one search, then a NUM comparison per key."""
    first = offset + 1
    if ranking == "ordinal" or not keys:
        return list(range(first, first + len(keys)))
    rank = rank_at(ranking, index, offset, keys[0])
    ranks = [rank]
    prev = keys[0][:NUM_BYTES]
    dense = ranking == "dense"
    for ordinal, key in enumerate(keys[1:], first + 1):
        num = key[:NUM_BYTES]
        if num != prev:
            rank = rank + 1 if dense else ordinal
            prev = num
        ranks.append(rank)
    return ranks


def percentile(ranking: Ranking, index: Index, pos: int, key: bytes) -> float:
    """Share (0-100) of the other entries ranked strictly below ``key`` at ``pos``.
    Runtime complexity: O(1) ordinal, O(log n) otherwise."""
    n = len(index)
    if n <= 1:
        return 100.0
    if ranking == "ordinal":
        below = n - 1 - pos
    else:
        below = n - index.bisect_left(next_num(key[:NUM_BYTES]))
    return 100.0 * below / (n - 1)


def rank_for_num(ranking: Ranking, index: Index, num: bytes, ordinal: int) -> int:
    """The rank a newcomer whose score encodes to ``num`` would be shown; ``ordinal`` is its
    ordinal rank (which depends on the board's ties rule, so the board works it out)."""
    if ranking == "competition":
        return index.bisect_left(num) + 1
    if ranking == "dense":
        assert isinstance(index, DenseIndex), "a dense board needs a DenseIndex"
        return index.distinct_before(num) + 1
    return ordinal


def score_span(index: Index, low: Score, high: Score, desc: bool) -> tuple[int, int]:
    """Positions ``[start, stop)`` of the entries with ``low <= score <= high`` (empty when
    low > high). Runtime complexity: O(log n)."""
    if desc:
        low, high = 0 - high, 0 - low  # NUMs encode the negated score; 0 - x keeps 0.0 whole
    start = index.bisect_left(encode_num(low))
    stop = index.bisect_left(next_num(encode_num(high)))
    return start, max(start, stop)
