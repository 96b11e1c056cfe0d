"""A map whose entries die at an absolute wall-clock deadline.

Three structures, one owner (this class)::

    entries   key -> _Entry(value, deadline, bucket)    exact deadline, checked on every read
                                                      (this and buckets: sharded, see below)
    buckets   at -> _Bucket {keys}    at = deadline // resolution when the key was indexed;
                                      the entry points at its _Bucket object
    heap      [at, ...]               min-heap of every key of `buckets`, no duplicates

    resolution = 1 s, now = 103.4

    heap    [100, 101, 104]
    buckets 100: {a}      a.deadline = 100.7                        -> expired, removed
            101: {b, c}   b.deadline = 101.2                        -> expired, removed
                          c.deadline = 109.0 (touched; lazily kept) -> moved to bucket 109
            104: {d}      bucket 104 ends at 105 > now              -> purge stops here
    purge(103.4) removes a and b, moves c, returns 105.0 (the next time purge has work)

Why buckets and not an exact ordered set of ``(deadline, key)``. Measured at 10^6 entries on
the dev box: ``SortedList`` front deletion runs at ~0.64 M/s and ``remove``+``add`` (moving a
deadline) costs ~9 us; ``heapq.heappop`` runs at ~0.2 M/s and a heap cannot delete an arbitrary
key without tombstones, whose compaction is an O(n) stall. Both miss the targets (purge
>= 1 M entries/s, get+touch <= 5 us). A bucket is a dict used as an insertion-ordered set, so
insert, delete and purge are O(1) per key and the heap only orders the (far fewer) distinct
buckets -- a calendar queue, the idea behind hashed timing wheels (Varghese & Lauck, 1987).

The price is that the purge reclaims an entry up to ``resolution`` after its deadline: it only
empties a bucket once the whole bucket has elapsed, so it never has to scan a bucket for the
few keys that are already due. Reads never see that slack -- every read compares the exact
deadline (lazy expiry), so an entry is invisible from the instant ``deadline <= now``.

Moving a deadline later (a session touch, the hot path) is lazy: only ``entry.deadline``
changes and the key stays in its older, earlier bucket. When the purge reaches that bucket it
finds the key alive and moves it to the bucket of its current deadline -- at most one move per
key per bucket span, instead of an index update per touch. Moving a deadline earlier re-buckets
at once, since an entry must never sit in a bucket later than its deadline (the purge would
miss it). Invariant: ``entry.bucket.at <= entry.deadline // resolution``.

Sharded dicts, so no insert rehashes the whole map. A CPython dict that outgrows its table
rebuilds it in the one insert that overflowed it: O(n), measured on the dev box at 64 ms for
the insert that took the map past 699,050 keys and 234 ms past 1,398,101 -- an event-loop stall
no request can hide. Redis rehashes incrementally; here ``entries`` and ``buckets`` are each
``2**shard_bits`` plain dicts, a key living in shard ``hash(key) & mask``::

    shard_bits = 2, mask = 0b11          hash("a") = ...1101 -> shard 1
    entries  [ {d: ..}, {a: .., e: ..}, {}, {b: .., c: ..} ]
    buckets  [ {100: ..}, {101: .., 105: ..}, {}, {103: ..} ]     hash(101.0) = 101 -> shard 1

so a resize rebuilds one shard: 1/2**shard_bits of the keys, and the shards, filled evenly by
the hash, outgrow their tables at slightly different sizes, one at a time. The shard is picked
inline in every method rather than behind a wrapper object (a Python-level ``__getitem__``
would cost a method call per access); a str caches its hash, so picking the shard costs one
builtin call and an ``&``, and a bucket number is an integral float, whose hash is itself.
With the default 8 bits (256 shards) the slowest ``SessionStore.create`` measured while
growing to 2.5M sessions fell from 373 ms to 6 ms of CPU (loadtest/RESULTS.md "Worst single
insert"); the cost per lookup does not depend on the number of shards. A bucket's own dict is
not sharded: it holds the keys due within one ``resolution``, so it grows with the insert rate,
not with the map (100k inserts due in the same second: its largest resize took 5.6 ms).
Iteration is shard by shard, in insertion order within a shard: deterministic for a given
hash seed, and no caller may rely on more (``items()`` promises no order). ``len()`` is a
counter, not a sum over the shards.

Purge: a bucket is drained from a list. When its time has come the purge takes the whole
bucket out of ``buckets`` and the heap, copies its keys to a list (``_drain``, one C-level
pass in insertion order) and works through that list across as many calls as the budget
needs. Per key that is one probe of the key's entries shard (``pop``); taking keys from the
bucket dict itself with ``popitem`` probed the bucket's table too, a second cache miss per key
at 10^6 keys, which is what made the sharded map's purge ~35% slower than one dict's. Keys
the list still names may have changed meanwhile, so each is checked on the way out::

    entry gone                    removed since: skip
    entry.bucket is not drained   removed and set again (now in another bucket): put back
    deadline <= now               expired: reported to on_expire
    else                          touched later since indexing: put back, bucket re-chosen

An entry keeps pointing at the drained bucket object until the purge reaches it, so ``_unlink``
and an earlier deadline work as for any bucket; a key set again in the same time slot gets a
new bucket object on the heap. ``next_deadline()`` counts the drained bucket until its list
is empty.

Sleeping purge task (as mini-redis): ``next_deadline()`` is when the next purge has work;
``set`` returns True (and calls ``on_earlier``) exactly when it made that time earlier, so the
task is woken only by a nearer deadline.
"""

from collections.abc import Callable, Hashable, Iterator
from heapq import heappop, heappush
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# 256 shards: at 2.5M keys a shard holds ~10k and its resize costs well under a millisecond,
# while 256 small dicts cost nothing worth counting in an empty map (tests pass 0-2 bits to
# put many keys in the same shard and push every shard through its resizes).
SHARD_BITS = 8


class _Bucket(dict[Any, None]):
    """The keys indexed under one bucket (a dict as an insertion-ordered set), and its number.

    Entries point at their bucket object rather than holding the number: no float per entry,
    and a delete needs no lookup in ``buckets``.
    """

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        super().__init__()
        self.at = at


class _Entry(Generic[V]):
    __slots__ = ("bucket", "deadline", "value")

    def __init__(self, value: V, deadline: float, bucket: _Bucket) -> None:
        self.value = value
        self.deadline = deadline
        self.bucket = bucket


class TTLMap(Generic[K, V]):
    """Key -> value with a per-key absolute deadline (wall-clock seconds).

    An entry is expired when ``deadline <= now``. ``on_expire([(key, value), ...])`` is called
    with the entries the map itself removed because they expired (one purge call, or a lazy
    read), after the map is consistent again, so the callback may read the map. ``pop`` never
    calls it: a caller that removes a key knows why. ``on_earlier(t)`` is called when
    ``next_deadline()`` became earlier (t is the new value).
    """

    def __init__(
        self,
        *,
        resolution: float = 1.0,
        on_expire: Callable[[list[tuple[K, V]]], None] | None = None,
        on_earlier: Callable[[float], None] | None = None,
        shard_bits: int = SHARD_BITS,
    ) -> None:
        if not resolution > 0:
            raise ValueError(f"resolution must be > 0 seconds, but got {resolution!r}")
        if type(shard_bits) is not int or not 0 <= shard_bits <= 16:
            raise ValueError(f"shard_bits must be an int in 0..16, but got {shard_bits!r}")
        self.resolution = resolution
        self.on_expire = on_expire
        self.on_earlier = on_earlier
        self._mask = (1 << shard_bits) - 1
        # key -> entry in shard hash(key) & mask; bucket number -> bucket likewise
        self._entries: list[dict[K, _Entry[V]]] = [{} for _ in range(self._mask + 1)]
        self._buckets: list[dict[float, _Bucket]] = [{} for _ in range(self._mask + 1)]
        self._heap: list[float] = []
        self._len = 0
        # The bucket the purge is taking apart, out of `buckets` and the heap, and its keys
        # not looked at yet (see "Purge" above).
        self._drain: list[K] = []
        self._drain_bucket: _Bucket | None = None

    def __len__(self) -> int:
        """Stored entries, including expired ones the purge has not reclaimed yet."""
        return self._len

    def get(self, key: K, now: float) -> V | None:
        """The live value, or None. An expired entry is removed (and reported) on the spot.

        Runtime complexity: O(1).
        """
        shard = self._entries[hash(key) & self._mask]
        e = shard.get(key)
        if e is None:
            return None
        if e.deadline <= now:
            self._unlink(shard, key, e)
            if self.on_expire is not None:
                self.on_expire([(key, e.value)])
            return None
        return e.value

    def peek(self, key: K, now: float) -> V | None:
        """The live value, or None; never mutates. Runtime complexity: O(1)."""
        e = self._entries[hash(key) & self._mask].get(key)
        if e is None or e.deadline <= now:
            return None
        return e.value

    def stored(self, key: K) -> V | None:
        """The stored value, expired or not; None when absent."""
        e = self._entries[hash(key) & self._mask].get(key)
        return None if e is None else e.value

    def deadline(self, key: K) -> float | None:
        """The stored deadline, expired or not; None when absent."""
        e = self._entries[hash(key) & self._mask].get(key)
        return None if e is None else e.deadline

    def set(self, key: K, value: V, deadline: float) -> bool:
        """Insert or replace ``key``. True when this made ``next_deadline()`` earlier.

        Runtime complexity: O(1), plus O(log b) when a new bucket is created (b = buckets).
        """
        shard = self._entries[hash(key) & self._mask]
        e = shard.get(key)
        if e is None:
            bucket, earlier = self._index(key, deadline // self.resolution)
            shard[key] = _Entry(value, deadline, bucket)
            self._len += 1
            return earlier
        e.value = value
        return self._redeadline(key, e, deadline)

    def set_deadline(self, key: K, deadline: float) -> bool:
        """Move the deadline of a stored key (KeyError if absent). Later: O(1), lazy.
        Earlier: re-bucketed now. True when this made ``next_deadline()`` earlier.
        """
        return self._redeadline(key, self._entries[hash(key) & self._mask][key], deadline)

    def pop(self, key: K) -> V | None:
        """Remove ``key`` whatever its deadline; None if absent. Runtime complexity: O(1)."""
        shard = self._entries[hash(key) & self._mask]
        e = shard.get(key)
        if e is None:
            return None
        self._unlink(shard, key, e)
        return e.value

    def items(self) -> Iterator[tuple[K, V]]:
        """Every stored (key, value), expired or not, in no promised order (shard by shard).
        Do not mutate the map while iterating.
        """
        for shard in self._entries:
            for key, e in shard.items():
                yield key, e.value

    def deadlines(self) -> Iterator[tuple[K, float]]:
        """Every stored (key, deadline), expired or not; as ``items()``."""
        for shard in self._entries:
            for key, e in shard.items():
                yield key, e.deadline

    def next_deadline(self) -> float | None:
        """When the next purge will have work, or None when empty.

        Never later than the earliest deadline plus ``resolution``; may be earlier (the first
        bucket can hold only touched or deleted keys), which costs one spurious wake-up.
        """
        if self._drain:
            return (self._drain_bucket.at + 1) * self.resolution  # type: ignore[union-attr]
        return (self._heap[0] + 1) * self.resolution if self._heap else None

    def purge(self, now: float, max_items: int) -> float | None:
        """Reclaim expired entries, doing at most ``max_items`` units of work.

        A unit is one key taken from a bucket (removed if expired, else moved to the bucket of
        its current deadline) or one empty bucket dropped, so one call removes at most
        ``max_items`` entries and never scans the map. Returns ``next_deadline()``: a value
        ``<= now`` means work is left (call again after yielding).

        Runtime complexity: O(max_items), plus O(log b) per bucket taken.
        """
        if type(max_items) is not int or max_items < 1:
            raise ValueError(f"max_items must be a positive int, but got {max_items!r}")
        heap, entries, res, mask = self._heap, self._entries, self.resolution, self._mask
        drain, bucket = self._drain, self._drain_bucket
        expired: list[tuple[K, V]] = []
        found = expired.append  # hot loop: ~1 us per key matters here
        budget = max_items
        # Buckets below `current` have fully elapsed: every key in them was due by the bucket's
        # end, so no key is looked at twice while time stands still. Comparing floor-divided
        # values (not `(bucket + 1) * res <= now`) keeps a moved key's new bucket strictly
        # above the one being drained, whatever the float rounding.
        current = now // res
        while budget > 0:
            if not drain:
                if not heap or heap[0] >= current:
                    break
                at = heappop(heap)
                bucket = self._buckets[hash(at) & mask].pop(at)
                # Insertion order, taken from the end: sessions indexed together were allocated
                # together, so walking them in (reverse) creation order frees memory with far
                # fewer cache misses than hash order (measured 2x at 10^6 sessions).
                drain = self._drain = list(bucket)
                self._drain_bucket = bucket
                if not drain:
                    budget -= 1  # emptied by deletes; dropping it is the unit of work
                continue
            key = drain.pop()
            budget -= 1
            shard = entries[hash(key) & mask]
            e = shard.pop(key, None)
            if e is None:
                continue  # removed since the bucket was taken
            if e.bucket is not bucket:
                shard[key] = e  # removed and set again since: it lives in another bucket now
            elif e.deadline <= now:
                found((key, e.value))
            else:
                # Deadline moved later since indexing (lazy touch): index it where it is now.
                shard[key] = e
                e.bucket = self._index(key, e.deadline // res)[0]
        if not drain:
            self._drain_bucket = None  # nothing points at it any more: free it
        self._len -= len(expired)
        # Callbacks run only now, with the map consistent, so they may read it.
        if expired and self.on_expire is not None:
            self.on_expire(expired)
        return self.next_deadline()

    def _redeadline(self, key: K, e: _Entry[V], deadline: float) -> bool:
        e.deadline = deadline
        at = deadline // self.resolution
        if at >= e.bucket.at:
            return False  # later (or same bucket): the purge will move it when it gets there
        # Earlier: the old bucket would be purged too late, so move now.
        del e.bucket[key]
        e.bucket, earlier = self._index(key, at)
        return earlier

    def _index(self, key: K, at: float) -> tuple[_Bucket, bool]:
        """Put ``key`` in bucket ``at``; True when that is a new first bucket."""
        shard = self._buckets[hash(at) & self._mask]
        bucket = shard.get(at)
        if bucket is not None:
            bucket[key] = None
            return bucket, False
        heap, drain = self._heap, self._drain_bucket if self._drain else None
        earlier = (not heap or at < heap[0]) and (drain is None or at < drain.at)
        bucket = shard[at] = _Bucket(at)
        bucket[key] = None
        heappush(heap, at)
        if earlier and self.on_earlier is not None:
            self.on_earlier((at + 1) * self.resolution)
        return bucket, earlier

    def _unlink(self, shard: dict[K, _Entry[V]], key: K, e: _Entry[V]) -> None:
        del shard[key]
        self._len -= 1
        # The bucket stays even if now empty: the heap has no delete, and the purge drops it
        # when its time comes. That keeps "bucket in heap <=> bucket in buckets" exact.
        del e.bucket[key]

    def _check(self) -> None:
        """Assert deadline index <=> entries, every key in its shard, the count, the heap, and
        that a key of the bucket being drained is still to be taken."""
        res, mask, heap = self.resolution, self._mask, self._heap
        assert len(self._entries) == len(self._buckets) == mask + 1 and mask & (mask + 1) == 0
        buckets: dict[float, _Bucket] = {}
        for i, shard in enumerate(self._buckets):
            for at, bucket in shard.items():
                assert bucket.at == at and hash(at) & mask == i, (at, i)
                buckets[at] = bucket
        # The bucket being drained is out of `buckets`; its keys not taken yet are in _drain.
        drained, to_take = self._drain_bucket, set(self._drain)
        assert (drained is None) == (not to_take)
        assert drained is None or buckets.get(drained.at) is not drained
        n = in_drained = 0
        for i, entries in enumerate(self._entries):
            n += len(entries)
            for key, e in entries.items():
                assert hash(key) & mask == i, (key, i)
                if e.bucket is drained:
                    in_drained += 1
                    assert key in to_take, key
                else:
                    assert buckets[e.bucket.at] is e.bucket, (key, e.bucket.at)
                assert key in e.bucket, (key, e.bucket.at)
                assert e.bucket.at <= e.deadline // res, (key, e.bucket.at, e.deadline)
        assert n == self._len, (n, self._len)
        assert sum(len(keys) for keys in buckets.values()) == n - in_drained
        assert len(heap) == len(buckets) and set(heap) == set(buckets)
        for i in range(1, len(heap)):
            assert heap[(i - 1) // 2] <= heap[i], (i, heap)
