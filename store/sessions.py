"""Web sessions: a TTL map of ``Session`` plus a per-user index.

    _ttl      TTLMap  sid -> Session, deadline = session.expires_at   (lazy + bounded purge)
    _by_user  dict    user -> _UserIds {sid: None}                    (insertion-ordered set)

Both grow with the number of sessions, so both are sharded by key hash (store/ttl.py explains
why: no insert may rehash a million keys at once): ``_by_user[hash(user) & mask]``.

Ownership rule: a session enters the store only through ``_insert`` and leaves only through
``_drop`` -- including when the TTL map expires it (``_on_expire`` calls ``_drop``) -- so the
per-user index is updated in the one function that creates, deletes, revokes, rotates or expires
a session and cannot drift from the map.

Two clocks per session: an idle deadline (last use + ``ttl``), pushed forward by every use, and
``max_expires_at`` (creation + ``max_lifetime``), never moved. A session dies at the earlier of
the two. Expired sessions are invisible from the exact instant (every read compares
``expires_at <= now``) and a dead id never comes back: every mutation starts by looking the id
up as a live session, and a rotated session gets a fresh id.

Events (``observers``) carry resulting state, since they become journal records::

    ("sput", session, prior)          create, patch/replace that changed data, rotate (new id);
                                      prior: None (a new id) or (data, version, idle_deadline)
    ("stouch", sid, idle_deadline, prior_idle_deadline)
                                      a use moved the idle deadline (get, touch, no-op write)
    ("sdel", sid, reason, session)    reason: deleted | revoked | rotated (old id) | expired

The trailing fields are what the event replaced, for ``undo`` (a change whose journal record
was lost is reverted, newest first: service/backend/journal_flusher.py). An expiry is never undone:
the session's time is up whether or not the disk heard of it, and a recovery drops it anyway.

They are queued while a method mutates and delivered when it has finished, so an observer that
calls back into the store (the WebSocket hub closing a revoked session) always sees a consistent
store, and events arrive in mutation order even then. Observers must not raise: the mutation
has already happened. ``expired`` comes from the purge or from the read that found it due.

Returned ``Session`` objects are the store's own: read them, do not mutate them. ``data`` dicts
are never changed in place (a write installs a new dict), so a ``data`` reference stays valid.
"""

import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from store.clock import Clock
from store.ended import EndedIds
from store.errors import (
    InsufficientStorage,
    InvalidArgument,
    LimitExceeded,
    SessionEnded,
    SessionExists,
    SessionNotFound,
    TooManySessions,
    VersionConflict,
)
from store.events import SessionEvent
from store.show import show
from store.ttl import SHARD_BITS, TTLMap
from store.values import Limits, check_depth, check_path_segment

Event = SessionEvent

# A purge that reclaims a session up to one second late is invisible: reads check exactly.
PURGE_RESOLUTION = 1.0

_show = show  # bounded, never recursive, never echoes a credential-shaped string


# Caller-chosen ids (DESIGN.md "Sessions"): what web framework stores generate, and nothing
# that needs escaping in a URL path, a header or a log line.
_CHOSEN_ID = re.compile(r"[A-Za-z0-9_-]{32,128}")
OVER_LIMIT_POLICIES = ("evict-oldest", "refuse")


def new_session_id() -> str:
    """256 random bits, URL-safe base64 (43 chars). Module-level so tests use the same source."""
    return secrets.token_urlsafe(32)


@dataclass(slots=True)
class Session:
    id: str = field(repr=False)  # a bearer credential: keep it out of logs and tracebacks
    user: str | None
    data: dict[str, Any]
    created_at: float
    ttl: int  # idle timeout, seconds
    idle_deadline: float  # last use + ttl
    max_expires_at: float  # created_at + max_lifetime, never extended
    version: int  # starts at 1, +1 on every data change
    # The store's per-user index entry (set by SessionStore._insert), so removing a session
    # from it needs no lookup of the user; not state: never compared, shown or stored.
    user_ids: "_UserIds | None" = field(default=None, init=False, repr=False, compare=False)

    @property
    def expires_at(self) -> float:
        return min(self.idle_deadline, self.max_expires_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "data": self.data,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "ttl": self.ttl,
            "max_expires_at": self.max_expires_at,
            "version": self.version,
        }


def _seconds(name: str, value: object, limit: int) -> int:
    # type() rather than isinstance(): True is an int, and a float ttl would silently truncate.
    if type(value) is not int:
        raise InvalidArgument(
            f"{name} must be an integer number of seconds, but got {_show(value)}"
        )
    if value < 1:
        raise InvalidArgument(f"{name} must be at least 1 second, but got {_show(value)}")
    if value > limit:
        raise LimitExceeded(f"{name} must be at most {limit} seconds, but got {_show(value)}")
    return value


class _UserIds(dict[str, None]):
    """A user's session ids (a dict as an insertion-ordered set), and the user string object
    that all of the user's sessions share.

    One string object per user instead of one per session: less memory, and index lookups
    compare by identity instead of by content (measured: purge +20%). Not ``sys.intern``: its
    one table grows with the users and rehashes them all in one insert (97 ms of CPU at 1.4M
    users, measured).
    """

    __slots__ = ("user",)
    user: str  # set right after construction: no Python-level __init__ on the create path


class SessionStore:
    """Sessions with idle and absolute timeouts, a per-user index and change events.

    ``max_sessions_per_user``: creating one more session for a user already at the limit
    ends the user's oldest session (``over_limit`` "evict-oldest", reason ``evicted``, an
    ``sdel`` event like any end) or raises TooManySessions ("refuse").
    """

    @classmethod
    def with_limits(cls, clock: Clock, limits: Limits) -> "SessionStore":
        """A store bounded by the process's one ``Limits`` (every backend builds it so)."""
        return cls(
            clock,
            default_ttl=limits.session_ttl,
            max_ttl=limits.session_max_ttl,
            default_max_lifetime=limits.session_lifetime,
            max_lifetime_limit=limits.session_max_lifetime,
            max_data_bytes=limits.session_data_bytes,
            max_user_bytes=limits.session_user_bytes,
            max_sessions_per_user=limits.sessions_per_user,
            max_anonymous_sessions=limits.anonymous_sessions,
            over_limit=limits.sessions_over_limit,
            max_ended_ids=limits.session_ended_ids,
        )

    def __init__(
        self,
        clock: Clock,
        *,
        default_ttl: int = 1800,
        max_ttl: int = 30 * 86400,
        default_max_lifetime: int = 7 * 86400,
        max_lifetime_limit: int = 365 * 86400,
        max_data_bytes: int = 16384,
        max_user_bytes: int = 256,
        max_sessions_per_user: int = 1000,
        max_anonymous_sessions: int = 0,
        over_limit: str = "evict-oldest",
        max_ended_ids: int = 1_000_000,
        shard_bits: int = SHARD_BITS,
    ) -> None:
        for name, value in [
            ("max_ttl", max_ttl),
            ("max_lifetime_limit", max_lifetime_limit),
            ("max_data_bytes", max_data_bytes),
            ("max_user_bytes", max_user_bytes),
            ("max_sessions_per_user", max_sessions_per_user),
        ]:
            if type(value) is not int or value < 1:
                raise InvalidArgument(f"{name} must be a positive int, but got {_show(value)}")
        self.default_ttl = _seconds("default_ttl", default_ttl, max_ttl)
        self.default_max_lifetime = _seconds(
            "default_max_lifetime", default_max_lifetime, max_lifetime_limit
        )
        self.max_ttl = max_ttl
        self.max_lifetime_limit = max_lifetime_limit
        self.max_data_bytes = max_data_bytes
        self.max_user_bytes = max_user_bytes
        self.max_sessions_per_user = max_sessions_per_user
        if over_limit not in OVER_LIMIT_POLICIES:
            raise InvalidArgument(
                f"over_limit must be one of {', '.join(OVER_LIMIT_POLICIES)}, "
                f"but got {_show(over_limit)}"
            )
        self.over_limit = over_limit
        # Ended ids stay refused for the longest idle timeout a session may have (store/ended.py)
        self.ended = EndedIds(max_ttl, max_ended_ids)
        # Sessions without a user have no per-user limit, so they get a global one (0 = none).
        # Counted with expired-but-unpurged ones: the purge reclaims those within a second.
        self.max_anonymous_sessions = max_anonymous_sessions
        self._with_user = 0  # stored sessions that have a user; the rest are anonymous
        self.observers: list[Callable[[Event], None]] = []
        # Called with the new next_deadline() when it moved earlier: a purge task sleeping
        # until the old one sets its wake-up event here. Must not call back into the store.
        self.deadline_watchers: list[Callable[[float], None]] = []
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "created",
                "expired",
                "deleted",
                "revoked",
                "rotated",
                "evicted",
                "expired_at_load",
            ),
            0,
        )
        self._clock = clock
        self._ttl: TTLMap[str, Session] = TTLMap(
            resolution=PURGE_RESOLUTION,
            on_expire=self._on_expire,
            on_earlier=self._on_earlier,
            shard_bits=shard_bits,
        )
        self._mask = (1 << shard_bits) - 1
        self._by_user: list[dict[str, _UserIds]] = [{} for _ in range(self._mask + 1)]
        self._pending: deque[Event] = deque()
        self._wake_at: float | None = None
        # Sessions a snapshot held that were expired at load: a later journal "stouch" may show
        # they were in fact extended before the crash, so they wait here until finish_load().
        self._held: dict[str, Session] = {}

    # -- reads ---------------------------------------------------------------------------------

    def get(self, sid: str, *, touch: bool = True) -> Session:
        """The live session (SessionNotFound if absent or expired); ``touch`` refreshes it.

        Runtime complexity: O(1).
        """
        now = self._clock.now()
        s = self._live(sid, now)
        if touch:
            self._touch(s, now)
        self._flush()
        return s

    def touch(self, sid: str) -> Session:
        return self.get(sid, touch=True)

    def list_user(self, user: str) -> list[Session]:
        """The user's live sessions, oldest first. Runtime complexity: O(k log k), k <= limit."""
        self._check_user(user)
        now = self._clock.now()
        live = []
        for sid in list(
            self._by_user[hash(user) & self._mask].get(user, ())
        ):  # a lazy expiry edits the index
            s = self._ttl.get(sid, now)
            if s is not None:
                live.append(s)
        self._flush()
        live.sort(key=lambda s: s.created_at)  # stable: ties keep index (insertion) order
        return live

    def __len__(self) -> int:
        """Stored sessions, including expired ones not purged yet."""
        return len(self._ttl)

    def __contains__(self, sid: object) -> bool:
        return type(sid) is str and self._ttl.peek(sid, self._clock.now()) is not None

    def next_deadline(self) -> float | None:
        """When the next purge has work (<= 1 s after the earliest expiry), or None."""
        a, b = self._ttl.next_deadline(), self.ended.next_deadline()
        return a if b is None else b if a is None else min(a, b)

    # -- writes --------------------------------------------------------------------------------

    def check_new(
        self, user: object, data: object, ttl: object, max_lifetime: object
    ) -> tuple[int, int, dict[str, Any]]:
        """A new session's (idle ttl, absolute lifetime, data), defaults applied, each bounded
        (ValueError naming the bad one). Every backend's create judges its input here."""
        idle = self.default_ttl if ttl is None else _seconds("ttl", ttl, self.max_ttl)
        lifetime = (
            self.default_max_lifetime
            if max_lifetime is None
            else _seconds("max_lifetime", max_lifetime, self.max_lifetime_limit)
        )
        if user is not None:
            self._check_user(user)
        return idle, lifetime, {} if data is None else self._check_data(data)

    def create(
        self,
        *,
        user: str | None = None,
        data: dict[str, Any] | None = None,
        ttl: int | None = None,
        max_lifetime: int | None = None,
        sid: str | None = None,
    ) -> Session:
        """A new session. ``sid``: the caller's id (32-128 of ``[A-Za-z0-9_-]``), refused with
        SessionExists while a session has it and SessionEnded while it is remembered as ended
        (store/ended.py); else a fresh id from ``new_session_id``. A user at
        ``max_sessions_per_user`` loses their oldest session (``over_limit`` "evict-oldest",
        reason ``evicted``) or is refused (TooManySessions).
        """
        if sid is not None:
            self._check_chosen_id(sid)
        ttl, lifetime, clean = self.check_new(user, data, ttl, max_lifetime)
        now = self._clock.now()
        if sid is not None:
            if self._ttl.get(sid, now) is not None:  # an expired one ends (and is remembered)
                raise SessionExists("a session with this id exists")
            if self.ended.ended(sid, now):
                self._flush()
                raise SessionEnded("a session with this id ended recently")
        evict = None
        if user is not None:
            evict = self._check_room(user, now)
        elif self.max_anonymous_sessions:
            anonymous = len(self._ttl) - self._with_user
            if anonymous >= self.max_anonymous_sessions:
                raise InsufficientStorage(
                    f"there are already {anonymous} sessions without a user, the limit "
                    "(--max-anonymous-sessions); create sessions with a user or raise the limit"
                )
        if sid is None:
            sid = new_session_id()
            while self._ttl.stored(sid) is not None:  # 2^-256, but a reused id hijacks one
                sid = new_session_id()
        if evict is not None:
            self._drop((evict,), "evicted")  # first: a cut journal logs out, never adds one
        s = Session(sid, user, clean, now, ttl, now + ttl, now + lifetime, 1)
        self._insert(s)
        self.counters["created"] += 1
        self._pending.append(("sput", s, None))
        self._flush()
        return s

    def patch(self, sid: str, data: dict[str, Any], *, if_version: int | None = None) -> Session:
        """Merge ``data`` into the session's data; a None value deletes that key."""
        self._check_object(data)
        now = self._clock.now()
        s = self._live(sid, now)
        self._check_version(s, if_version)
        merged = dict(s.data)
        for key, value in data.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return self._write(s, self._check_data(merged), now)

    def replace(self, sid: str, data: dict[str, Any], *, if_version: int | None = None) -> Session:
        """Replace the session's data."""
        clean = self._check_data(data)
        now = self._clock.now()
        s = self._live(sid, now)
        self._check_version(s, if_version)
        return self._write(s, clean, now)

    def rotate(self, sid: str) -> Session:
        """Move the session to a fresh id (after a login or privilege change); the old id is
        dead at once. Keeps user, data, version, created_at and max_expires_at; counts as a use.
        """
        now = self._clock.now()
        s = self._live(sid, now)
        new = new_session_id()
        while self._ttl.stored(new) is not None:
            new = new_session_id()
        idle = max(s.idle_deadline, now + s.ttl)
        fresh = Session(new, s.user, s.data, s.created_at, s.ttl, idle, s.max_expires_at, s.version)
        # Old id first: if the journal is cut between the two records, the user is logged out
        # rather than left with two valid ids.
        self._drop((s,), "rotated")
        self._insert(fresh)
        self._pending.append(("sput", fresh, None))
        self._flush()
        return fresh

    def delete(self, sid: str) -> None:
        """Remove a live session (logout). SessionNotFound if absent or already expired."""
        s = self._live(sid, self._clock.now())
        self._drop((s,), "deleted")
        self._flush()

    def revoke_user(self, user: str, *, except_id: str | None = None) -> int:
        """Delete every live session of ``user`` but ``except_id``; returns how many."""
        self._check_user(user)
        now = self._clock.now()
        victims = []
        for sid in list(self._by_user[hash(user) & self._mask].get(user, ())):
            if sid != except_id:
                s = self._ttl.get(sid, now)  # an expired one is dropped as "expired", not counted
                if s is not None:
                    victims.append(s)
        self._drop(victims, "revoked")
        self._flush()
        return len(victims)

    def purge(self, now: float | None = None, max_items: int = 1000) -> float | None:
        """Reclaim expired sessions and ended ids past their window, at most ``max_items`` of
        each per call (see TTLMap.purge). Returns next_deadline(); a value <= now means more
        is due: call again after yielding.
        """
        now = self._clock.now() if now is None else now
        self._ttl.purge(now, max_items)
        self.ended.purge(now, max_items)
        self._flush()
        return self.next_deadline()

    def undo(self, event: Event) -> None:
        """Revert one event whose journal record was lost; events must come newest first.

        A session that expired since is left alone (its later state is "gone", which undoing an
        earlier change cannot alter). A revoked, deleted or rotated-away session comes back
        with the state it had: the client was told the request failed (503), so its old id
        must keep working. Emits nothing: nobody holds an id whose creation is undone, and a
        WebSocket already closed for a revoke stays closed (the client reconnects). Counters
        keep counting operations performed, undone ones included. Runtime complexity: O(1).
        """
        if event[0] == "sput":
            s = event[1]
            if self._ttl.stored(s.id) is not s:
                return  # expired and purged since
            prior = event[2]
            if prior is None:
                self._drop((s,), None)
            else:
                s.data, s.version, s.idle_deadline = prior
                self._ttl.set_deadline(s.id, s.expires_at)
        elif event[0] == "stouch":
            current = self._ttl.stored(event[1])
            if current is not None:
                current.idle_deadline = event[3]
                self._ttl.set_deadline(current.id, current.expires_at)
        elif event[0] == "sdel":
            if event[2] != "expired" and self._ttl.stored(event[1]) is None:
                self._insert(event[3])
                self.ended.forget(event[1])  # it did not end: its id must keep working
        else:
            raise ValueError(f"not a session event: {event[0]!r}")
        self._flush()  # an earlier deadline must wake the purge task

    # -- persistence ---------------------------------------------------------------------------

    def sessions(self) -> Iterator[Session]:
        """Every stored session, expired or not, any order.

        A list of references taken now, so the caller may yield to the event loop between
        items while writes go on. Sessions mutate in place, so such a snapshot is fuzzy; the
        journal (resulting-state records) replayed over it makes it exact.
        """
        return iter([s for _, s in self._ttl.items()])

    def load(self, s: Session) -> None:
        """Insert a restored session as-is, replacing one with the same id. No events.

        Already expired at ``clock.now()``: dropped and counted in ``expired_at_load`` -- but
        held until ``finish_load()``, because a journal ``stouch`` replayed after the snapshot
        may show it was extended before the crash (``apply_touch`` then brings it back). The
        count is per session, not per record: a held session that a later record replaces,
        revives or deletes is uncounted first, so after the replay ``expired_at_load`` is the
        number of sessions dropped because they expired while the process was down.
        """
        if not isinstance(s, Session):
            raise InvalidArgument(f"load() takes a Session, but got {type(s).__name__}")
        self._forget(s.id)
        if s.expires_at <= self._clock.now():
            self._held[s.id] = s
            self.counters["expired_at_load"] += 1
            return
        self._insert(s)

    def load_many(self, sessions: Iterable[Session]) -> None:
        """``load`` for a snapshot's sessions: the same rules, with one clock read per call
        and no per-session type check (the snapshot loader builds the Session objects).
        Runtime complexity: O(k).
        """
        now = self._clock.now()
        held, stored, insert, counters = self._held, self._ttl.stored, self._insert, self.counters
        for s in sessions:
            sid = s.id
            if sid in held or stored(sid) is not None:  # only in a damaged or replayed file
                self._forget(sid)
            if s.idle_deadline <= now or s.max_expires_at <= now:
                held[sid] = s
                counters["expired_at_load"] += 1
            else:
                insert(s)

    def apply_touch(self, sid: str, idle_deadline: float) -> None:
        """Replay a ``("stouch", sid, idle_deadline)`` record. Idempotent, no events."""
        s = self._ttl.stored(sid)
        if s is not None:
            s.idle_deadline = idle_deadline
            self._ttl.set_deadline(sid, s.expires_at)
            return
        held = self._held.get(sid)
        if held is not None:
            held.idle_deadline = idle_deadline
            if held.expires_at > self._clock.now():
                del self._held[sid]
                self.counters["expired_at_load"] -= 1
                self._insert(held)

    def apply_delete(self, sid: str) -> None:
        """Replay an ``("sdel", sid, reason)`` record. Idempotent, no events. The id is
        remembered as ended from now (the record has no time): at least as long as before."""
        self._forget(sid)
        self.ended.remember(sid, self._clock.now())

    def load_ended(self, ended: Iterable[tuple[int, float]]) -> None:
        """A snapshot's ended-id digests (store/ended.py), each with its refused-until time."""
        remember = self.ended.remember_digest
        for d, until in ended:
            remember(d, until)

    def finish_load(self) -> None:
        """End of snapshot + journal replay: sessions still expired are gone for good, and
        their ids are remembered as ended from when they expired."""
        for s in self._held.values():
            self.ended.remember(s.id, s.expires_at)
        self._held.clear()

    # -- internals -----------------------------------------------------------------------------

    def _live(self, sid: str, now: float) -> Session:
        if type(sid) is not str:
            # No repr: whatever was passed may be a credential.
            raise InvalidArgument(f"session id must be a string, but got {type(sid).__name__}")
        s = self._ttl.get(sid, now)
        if s is None:
            self._flush()  # the lookup may have expired it: deliver that "sdel" first
            raise SessionNotFound("session not found")  # never echo the id: it is a credential
        return s

    def _touch(self, s: Session, now: float) -> None:
        idle = now + s.ttl
        # Never shorten: a wall clock stepping back must not cut sessions short.
        old = s.idle_deadline
        if idle > old:
            s.idle_deadline = idle
            self._ttl.set_deadline(s.id, idle if idle < s.max_expires_at else s.max_expires_at)
            self._pending.append(("stouch", s.id, idle, old))

    def _write(self, s: Session, data: dict[str, Any], now: float) -> Session:
        if data == s.data:  # no change, no new version: a retried write stays a no-op
            self._touch(s, now)
        else:
            prior = (s.data, s.version, s.idle_deadline)
            s.data = data
            s.version += 1
            idle = now + s.ttl
            if idle > s.idle_deadline:
                s.idle_deadline = idle
                self._ttl.set_deadline(s.id, s.expires_at)
            self._pending.append(("sput", s, prior))  # carries the new deadline too
        self._flush()
        return s

    def _insert(self, s: Session) -> None:
        self._ttl.set(s.id, s, s.expires_at)
        user = s.user
        if user is not None:
            users = self._by_user[hash(user) & self._mask]
            ids = users.get(user)
            if ids is None:
                ids = users[user] = _UserIds()
                ids.user = user
            else:
                s.user = ids.user
            ids[s.id] = None
            s.user_ids = ids
            self._with_user += 1

    def _drop(self, dead: Iterable[Session], reason: str | None, *, in_map: bool = True) -> None:
        """The one way out of the store. ``reason`` None: silent (journal replay).
        ``in_map`` False: the TTL map has already removed them (expiry). Takes many sessions
        because the purge drops a thousand at a time and per-call overhead shows there.
        """
        pop, by_user, mask, emit = self._ttl.pop, self._by_user, self._mask, self._pending.append
        # Ended from their deadline if they expired (the purge may reach them a second or more
        # later), else from now: the window is "ended within the last max_ttl".
        now, expired = self._clock.now(), reason == "expired"
        ended: list[tuple[str, float]] = []
        n = 0
        for s in dead:
            if in_map:
                pop(s.id)
            ids = s.user_ids
            if ids is not None:
                s.user_ids = None
                del ids[s.id]
                if not ids:
                    del by_user[hash(ids.user) & mask][ids.user]
                self._with_user -= 1
            if reason is not None:  # None: a replay or an undone create, not an end
                emit(("sdel", s.id, reason, s))
                ended.append((s.id, s.expires_at if expired else now))
            n += 1
        if reason is not None:
            self.counters[reason] += n
            self.ended.remember_many(ended)

    def _forget(self, sid: str) -> None:
        if self._held.pop(sid, None) is not None:
            # Counted when it was held: a later record for the same id (a journalled "sput"
            # re-holds and re-counts it, an "sdel" means it did not expire while we were down)
            # must not leave that count behind, or one session is counted once per record.
            self.counters["expired_at_load"] -= 1
        s = self._ttl.stored(sid)
        if s is not None:
            self._drop((s,), None)

    def _on_expire(self, expired: list[tuple[str, Session]]) -> None:
        self._drop([s for _, s in expired], "expired", in_map=False)

    def _on_earlier(self, when: float) -> None:
        self._wake_at = when

    def _flush(self) -> None:
        pending = self._pending
        if not self.observers:
            pending.clear()
        while pending:
            event = pending.popleft()
            for observer in self.observers:
                observer(event)
        if self._wake_at is not None:
            when, self._wake_at = self._wake_at, None
            for watcher in self.deadline_watchers:
                watcher(when)

    def _check_room(self, user: str, now: float) -> Session | None:
        """None if the user may have one more session; else the session to evict first
        (policy evict-oldest) or TooManySessions (refuse)."""
        ids = self._by_user[hash(user) & self._mask].get(user)
        if ids is None or len(ids) < self.max_sessions_per_user:
            return None
        live = [s for sid in list(ids) if (s := self._ttl.get(sid, now)) is not None]
        if len(live) < self.max_sessions_per_user:  # expired ones do not count (now dropped)
            return None
        self._flush()
        if self.over_limit == "refuse":
            raise TooManySessions(
                f"user {_show(user)} already has {len(live)} sessions, "
                f"the limit is {self.max_sessions_per_user}"
            )
        return min(live, key=lambda s: s.created_at)  # ties: the first indexed

    def _check_chosen_id(self, sid: object) -> None:
        if type(sid) is not str:
            raise InvalidArgument(f"session id must be a string, but got {type(sid).__name__}")
        if not _CHOSEN_ID.fullmatch(sid):
            # Never echo it: even a malformed id may be someone's credential.
            raise InvalidArgument(
                "a caller-chosen session id must be 32-128 characters of A-Z a-z 0-9 _ -, "
                f"but got {len(sid)} characters that are not"
            )

    def _check_user(self, user: object) -> None:
        if type(user) is not str or not user:
            raise InvalidArgument(f"user must be a non-empty string, but got {_show(user)}")
        try:
            size = len(user.encode())
        except UnicodeEncodeError:
            raise InvalidArgument(f"user must be valid UTF-8, but got {_show(user)}") from None
        if size > self.max_user_bytes:
            raise LimitExceeded(
                f"user must be at most {self.max_user_bytes} UTF-8 bytes, "
                f"but got {size}: {_show(user)}"
            )
        check_path_segment("user", user)  # a user is addressed as /v1/users/{user}/sessions

    @staticmethod
    def _check_object(data: object) -> None:
        if not isinstance(data, dict) or not all(type(k) is str for k in data):
            raise InvalidArgument(
                f"data must be a JSON object with string keys, but got {_show(data)}"
            )

    def _check_data(self, data: object) -> dict[str, Any]:
        """A private copy of ``data`` if it is a JSON object within the size limit.

        The round trip through orjson is the check: a value JSON cannot hold exactly (NaN,
        inf, datetime, tuple, a dataclass, ...) would come back different -- and would differ
        after a journal replay -- so it is refused instead of silently converted.
        """
        self._check_object(data)
        try:
            encoded = orjson.dumps(data)
        except orjson.JSONEncodeError as e:
            raise InvalidArgument(
                f"data must be JSON-serializable, but got {_show(data)}: {e}"
            ) from None
        if len(encoded) > self.max_data_bytes:
            raise LimitExceeded(
                f"data must be at most {self.max_data_bytes} bytes as JSON, "
                f"but got {len(encoded)} bytes"
            )
        check_depth("data", data)
        clean: dict[str, Any] = orjson.loads(encoded)
        if clean != data:
            raise InvalidArgument(f"data must hold only JSON values, but got {_show(data)}")
        return clean

    @staticmethod
    def _check_version(s: Session, if_version: int | None) -> None:
        if if_version is None:
            return
        if type(if_version) is not int:
            raise InvalidArgument(f"if_version must be an int, but got {_show(if_version)}")
        if if_version != s.version:
            raise VersionConflict(
                f"version mismatch: expected {if_version}, but the session is at {s.version}"
            )

    def _check(self) -> None:
        """Assert deadline index <=> sessions and user index <=> sessions."""
        self._ttl._check()
        with_user: dict[str, set[str]] = {}
        for sid, s in self._ttl.items():
            assert s.id == sid
            assert self._ttl.deadline(sid) == s.expires_at, sid
            assert s.version >= 1 and s.ttl >= 1
            assert s.max_expires_at >= s.created_at
            assert sid not in self._held
            if s.user is not None:
                with_user.setdefault(s.user, set()).add(sid)
            else:
                assert s.user_ids is None, sid
        by_user = {}
        for i, shard in enumerate(self._by_user):
            for u, ids in shard.items():
                assert hash(u) & self._mask == i and ids and ids.user is u, (u, i)
                by_user[u] = set(ids)
                for sid in ids:  # one user string object shared by the user's sessions
                    other = self._ttl.stored(sid)
                    assert other is not None and other.user is u and other.user_ids is ids, sid
        assert by_user == with_user
        assert self._with_user == sum(len(ids) for ids in with_user.values())
