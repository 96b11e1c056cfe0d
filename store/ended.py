"""Ended session ids, remembered for a while so that no id comes back (DESIGN.md "Sessions").

A caller may choose a session's id (``PUT /v1/sessions/{id}`` + ``If-None-Match: *``, what web
framework stores do). Without a memory of ended ids, a framework that saves a session just
after the user logged out -- a request racing the logout -- would create it again under the
same id, and the stolen or logged-out cookie would work again. So every id that ends
(deleted, expired, rotated away, revoked, evicted) is remembered for ``window`` seconds (the
longest idle timeout a session may have: a cookie older than that is dead anyway), and
creating it again is refused (410).

    shards  256 dicts   digest(id) -> refused until (ended_at + window)
    order   2 deques    (digest, until) in the order remembered, for the purge and the trim

Not a TTLMap (store/ttl.py, what sessions use). Every id here gets the same window, so the
order ids are remembered in is, within a second or so, the order they may be forgotten in
(the ended_at of an expired session is its deadline, which the purge reaches within a
second); a FIFO is enough, and costs per end one dict insert and two deque appends instead of
an entry object and a deadline bucket: the session purge, which remembers every expired id,
runs 1.44x as fast as with the TTLMap (0.21 vs 0.15 M/s at 500k, loadtest/RESULTS.md, "The
ended-id memory"), and the digest is a copy of a prepared hasher (~0.5 us, not ~0.7). The purge
pops from the front while the front's time is up; an id remembered out of order (a restored
snapshot, a replay) only waits behind an earlier one until that one's time is up -- reads
compare the exact time, so it is refused exactly as long as it should be. A front position
whose digest was remembered again later (a longer time) or forgotten (an undone end) is stale:
dropped without touching the dict. The dicts are sharded for the reason the session maps are
(no insert may rehash a million keys at once: store/ttl.py), by the digest's low bits.

Compact: the key is a 64-bit BLAKE2b digest of the id (a small int), not the id, so the memory
keeps no credential and costs the same for a 128-character id as for a 32-character one. Two
ids share a digest with probability ~n / 2**64 (n remembered): the only effect would be a
spurious 410 for a new id, never a resurrection. The digest is unkeyed and stable, so it can
be journalled and snapshotted (store/disk/snapshot.py ENDED records) and found again after a
restart.

Bounded: at most ``limit`` digests. Past it the oldest are forgotten early and counted in
``forgotten_early`` -- the one way an ended id could be created again before its window is
over, so the limit should be sized for the end rate times the window (README "Sessions").
Expired digests are reclaimed by the same bounded purge as sessions.
"""

from collections import deque
from collections.abc import Iterator
from hashlib import blake2b

from store.ttl import SHARD_BITS

_PERSON = b"rankd.ended.id"  # domain separation: these digests mean nothing elsewhere
# Copied per digest: cheaper than building a keyed-personalised hasher from its arguments.
_HASHER = blake2b(digest_size=8, person=_PERSON)


def digest(sid: str) -> int:
    h = _HASHER.copy()
    h.update(sid.encode())
    return int.from_bytes(h.digest(), "little")


class EndedIds:
    """Digests of ended ids with the time until which each stays refused."""

    def __init__(self, window: float, limit: int, *, shard_bits: int = SHARD_BITS) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, but got {window!r}")
        if type(limit) is not int or limit < 0:
            raise ValueError(f"limit must be an int >= 0, but got {limit!r}")
        self.window = window
        self.limit = limit
        self.forgotten_early = 0
        self._mask = (1 << shard_bits) - 1
        self._shards: list[dict[int, float]] = [{} for _ in range(self._mask + 1)]
        self._len = 0
        self._digests: deque[int] = deque()  # the order: digests and their times, in step
        self._untils: deque[float] = deque()

    def __len__(self) -> int:
        return self._len

    def ended(self, sid: str, now: float) -> bool:
        """True while ``sid`` is remembered as ended. Runtime complexity: O(1)."""
        d = digest(sid)
        until = self._shards[d & self._mask].get(d)
        return until is not None and until > now

    def remember(self, sid: str, ended_at: float) -> None:
        """Refuse ``sid`` until ``ended_at + window``. Runtime complexity: O(1) amortized."""
        self.remember_digest(digest(sid), ended_at + self.window)

    def remember_many(self, ended: list[tuple[str, float]]) -> None:
        """``remember`` for the ids one purge or revoke ended, as (id, ended_at): one call,
        names hoisted (the purge's per-session cost). No check for a longer deadline already
        remembered: an id that ends now was remembered, if ever, from an earlier end."""
        if self.limit == 0 or not ended:
            return
        window, shards, mask, copy = self.window, self._shards, self._mask, _HASHER.copy
        add_d, add_t = self._digests.append, self._untils.append
        new = 0
        for sid, at in ended:
            h = copy()
            h.update(sid.encode())
            d = int.from_bytes(h.digest(), "little")
            until = at + window
            shard = shards[d & mask]
            if d not in shard:
                new += 1
            shard[d] = until
            add_d(d)
            add_t(until)
        self._len += new
        self._trim()

    def remember_digest(self, d: int, until: float) -> None:
        """Replay and snapshot load: never shortens a deadline already remembered."""
        if self.limit == 0:
            return
        shard = self._shards[d & self._mask]
        known = shard.get(d)
        if known is not None and known >= until:
            return
        if known is None:
            self._len += 1
        shard[d] = until
        self._digests.append(d)
        self._untils.append(until)
        self._trim()

    def _trim(self) -> None:
        over = self._len - self.limit
        if over > 0:
            # The oldest first, as remembered.
            self.forgotten_early += self._pop_front(float("inf"), over)
        # Stale positions (forgotten or remembered again) are dropped as the front reaches
        # them; bound them too, so undone ends cannot grow the order without limit.
        digests, untils, shards, mask = self._digests, self._untils, self._shards, self._mask
        while len(untils) > 2 * self.limit + 1024:
            until, d = untils.popleft(), digests.popleft()
            shard = shards[d & mask]
            if shard.get(d) == until:
                del shard[d]
                self._len -= 1
                self.forgotten_early += 1

    def _pop_front(self, now: float, max_items: int) -> int:
        """Drop front positions whose time is up at ``now``, until ``max_items`` digests were
        forgotten (stale positions are free but bounded by the order's length). Returns how
        many digests were forgotten."""
        digests, untils, shards, mask = self._digests, self._untils, self._shards, self._mask
        gone = 0
        while gone < max_items and untils and untils[0] <= now:
            until = untils.popleft()
            d = digests.popleft()
            shard = shards[d & mask]
            if shard.get(d) == until:  # else stale: forgotten, or remembered again later
                del shard[d]
                gone += 1
        self._len -= gone
        return gone

    def forget(self, sid: str) -> None:
        """Undo ``remember`` (the end it recorded was refused: its journal record was lost)."""
        d = digest(sid)
        if self._shards[d & self._mask].pop(d, None) is not None:
            self._len -= 1

    def purge(self, now: float, max_items: int) -> float | None:
        """Forget up to ``max_items`` digests whose time is up; returns next_deadline()."""
        self._pop_front(now, max_items)
        return self.next_deadline()

    def next_deadline(self) -> float | None:
        """The front's time: when the purge has work next (maybe only a stale position)."""
        return self._untils[0] if self._untils else None

    def items(self) -> Iterator[tuple[int, float]]:
        """Every (digest, refused until), for a snapshot, in the order remembered."""
        shards, mask = self._shards, self._mask
        for d, until in zip(self._digests, self._untils, strict=True):
            if shards[d & mask].get(d) == until:
                yield d, until

    def _check(self) -> None:
        assert len(self._digests) == len(self._untils)
        assert self._len == sum(len(shard) for shard in self._shards)
        assert self.limit == 0 or self._len <= self.limit
        positions = {(d, t) for d, t in zip(self._digests, self._untils, strict=True)}
        for i, shard in enumerate(self._shards):
            for d, until in shard.items():
                assert d & self._mask == i and (d, until) in positions, d
