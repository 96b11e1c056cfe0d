"""Ended session ids, remembered for a while so that no id comes back (DESIGN.md "Sessions").

A caller may choose a session's id (``PUT /v1/sessions/{id}`` + ``If-None-Match: *``, what web
framework stores do). Without a memory of ended ids, a framework that saves a session just
after the user logged out -- a request racing the logout -- would create it again under the
same id, and the stolen or logged-out cookie would work again. So every id that ends
(deleted, expired, rotated away, revoked, evicted) is remembered for ``window`` seconds (the
longest idle timeout a session may have: a cookie older than that is dead anyway), and
creating it again is refused (410).

    _ttl   TTLMap  digest(id) -> None, deadline = ended_at + window     (store/ttl.py)

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

from collections.abc import Iterator
from hashlib import blake2b

from store.ttl import TTLMap

_PERSON = b"rankd.ended.id"  # domain separation: these digests mean nothing elsewhere
_FAR_FUTURE = 1e300  # a purge "now" past every deadline: takes the oldest first


def digest(sid: str) -> int:
    return int.from_bytes(blake2b(sid.encode(), digest_size=8, person=_PERSON).digest(), "little")


class EndedIds:
    """Digests of ended ids with the time until which each stays refused."""

    def __init__(self, window: float, limit: int) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, but got {window!r}")
        if type(limit) is not int or limit < 0:
            raise ValueError(f"limit must be an int >= 0, but got {limit!r}")
        self.window = window
        self.limit = limit
        self.forgotten_early = 0
        self._ttl: TTLMap[int, None] = TTLMap()

    def __len__(self) -> int:
        return len(self._ttl)

    def ended(self, sid: str, now: float) -> bool:
        """True while ``sid`` is remembered as ended. Runtime complexity: O(1)."""
        until = self._ttl.deadline(digest(sid))
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
        window, put, person = self.window, self._ttl.set, _PERSON
        for sid, at in ended:
            d = blake2b(sid.encode(), digest_size=8, person=person).digest()
            put(int.from_bytes(d, "little"), None, at + window)
        self._trim()

    def remember_digest(self, d: int, until: float) -> None:
        """Replay and snapshot load: never shortens a deadline already remembered."""
        if self.limit == 0:
            return
        known = self._ttl.deadline(d)
        if known is not None and known >= until:
            return
        self._ttl.set(d, None, until)
        self._trim()

    def _trim(self) -> None:
        over = len(self._ttl) - self.limit
        if over > 0:
            # The oldest first: the purge takes buckets in deadline order.
            before = len(self._ttl)
            self._ttl.purge(_FAR_FUTURE, over)
            self.forgotten_early += before - len(self._ttl)

    def forget(self, sid: str) -> None:
        """Undo ``remember`` (the end it recorded was refused: its journal record was lost)."""
        self._ttl.pop(digest(sid))

    def purge(self, now: float, max_items: int) -> float | None:
        """Drop digests whose window is over; as TTLMap.purge."""
        return self._ttl.purge(now, max_items)

    def next_deadline(self) -> float | None:
        return self._ttl.next_deadline()

    def items(self) -> Iterator[tuple[int, float]]:
        """Every (digest, refused until), for a snapshot; any order."""
        return self._ttl.deadlines()

    def _check(self) -> None:
        self._ttl._check()
        assert self.limit == 0 or len(self._ttl) <= self.limit
