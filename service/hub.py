"""The WebSocket hub: who watches what, which writes can matter to them, and when to tell them.

    _watches     dict key -> _Watch            boards (or a window of one: key "board\x00window")
                                               somebody subscribed to (nothing else)
    _windowed    dict board -> {key}           the watches of a board that name a window
    _Watch.tops     dict N -> _TopGroup        subscriptions to the board's top N, grouped by N
    _Watch.members  dict member -> _RankGroup  subscriptions to one member's (rank, score)
    _Watch.arounds  dict member -> {r -> _AroundGroup}   the entries within r ranks of member
    _dirty       list of _Watch                boards written since the last flush
    _by_session  dict session id -> {peer}     connections bound to a session

Change detection costs O(1) per write, never O(subscribers). The hub listens to the backend's
change feed (service/backend/api.py) and reads views through it, never a store object:

* A write to a board nobody watches is one dict miss.
* ``("bset", .., rank, prev_rank)`` can move a top-N view only if ``min(rank, prev_rank) <= N``
  (everything above both positions keeps its place), so one comparison against the largest N
  subscribed on the board (``max_top``) decides whether the board's top views are dirty.
  ``"bdel"`` uses its previous rank; ``"bdrop"``/``"bcfg"`` dirty everything; a ``"bbatch"``
  is its ``"bset"`` events one by one.
* A write changes what sits at a position only inside the span it crossed: ``[min, max]`` of
  its two ranks, ``[rank, inf)`` for an insert or a delete. The watch keeps the union of those
  spans since the last flush (two comparisons per write). A rank group whose last known rank
  lies outside it cannot have moved, and an around group whose last window
  ``[pos - r, pos + r]`` does not meet it shows the same entries at the same positions (by
  induction over the events: what an event changes stays inside that event's span), so the
  flush skips both without a lookup. The written member's own groups are flagged directly.
  Around views go one step further, so that a write dirties only the views whose window its
  own span meets (not every view between two far-apart writes of the tick): the watch also
  keeps each span, and ``_AroundIndex`` files the groups by position in buckets of ``BUCKET``
  ranks, so a flush visits only the buckets some span can reach and tests each group there
  against all the spans with one bisection. After a drop or reconfigure (or ``MAX_SPANS``
  spans in one tick) the flush scans every group against the union instead.

Positions, not ranks: events carry positions (ordinal ranks) on every board, and the spans are
positions, so a group keeps its member's last position beside the rank it shows. Shared ranks
(ranking competition or dense) move further: a member's shown rank changes only when an entry
before it changes, so there a write's span is ``[min, inf)`` -- still exact, as a change can
only come from above.

Windows and periods: a subscription may name a board's ``window`` (default: its first). Its
watch is keyed ``board`` or ``board\x00window`` and sees every event of the board (an event of
another window only costs a needless look: its spans are a superset). A flush compares the
window's current period with the one the watch last showed: when it changed (a ``broll``, or the
clock crossing a boundary while the board was idle -- the backend rolls idle boards within a
second), every subscriber of the watch gets a ``period`` frame and then the new state, even if
that state looks equal.

A write undone after a journal failure (service/backend/journal_flusher.py) needs nothing
special: the store announces the restored state as ordinary events, at a higher ``seq``, so a
subscriber that was shown the undone write gets the restored state on the next flush.

``total`` and ``seq`` ride along in every top and around frame, but a change of ``total`` alone
(an insert far below the view) wakes nobody: otherwise every write anywhere would fan out to
every subscriber of the board.

Coalescing: a flush runs at most once per ``tick`` and only when something is dirty. The first
dirty mark after a quiet spell schedules it at ``max(now, last_flush + tick)``, so a lone write
goes out on the next loop turn and a burst goes out once per tick, the latest state winning.
A flush computes a dirty board's ``top(max_top)`` once, slices it per N, and looks up each
rank and around group the spans say may have moved.

Fan-out cost grows with distinct views, not subscribers. A changed view is encoded once (one
``orjson.dumps`` of everything after the subscription id) and then framed once per distinct
subscription head (``{"type":"top","id":<id>``): clients that use the same id -- every copy
of the live page does -- share one pre-built WebSocket frame, ``bytes`` ready for the socket
(``ws_frame``; the server never compresses, so one frame fits every connection). Delivery is
``Peer.offer(key, frame)``, which never awaits: the connection (service/ws.py) writes the
bytes straight to its transport when it has room and nothing queued, else drops them into its
conflating outbox (keyed by subscription, so an unsent older state is replaced) for its sender
task. A slow connection holds at most one pending frame per subscription and never delays
anyone else. A client that stops reading leaves frames waiting for room; a watchdog scans the
connections once a second and closes those that waited ``SEND_TIMEOUT``.

Observers run on the event-loop thread, as every store call in the service does.

Views that live elsewhere (``views.synchronous`` False: the redis backend) are fetched before
they are read: ``prepare`` before a subscription's full state, and an asynchronous flush that
works out from the spans which views of a dirty board may have moved (``_due``: the top views,
rank groups, around groups -- the same decisions the local flush makes), awaits ``views.load``
for exactly those, then compares and queues deliveries as the local flush does. Each board
carries an epoch (``views.epoch``); when it changes (a failover), every view of the board is
read again and queued as a forced job, which skips the "already seen" check: every subscriber
of the board gets its full state again, even an unchanged one.
"""

import asyncio
import contextlib
import logging
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from starlette import status
from websockets.frames import Frame, Opcode

from service.backend.api import Backend, Entry
from service.schemas import AroundTail, PeriodFrame, RankTail, TopTail
from service.settings import ServiceLimits
from store.events import BoardEvent, SessionEvent

log = logging.getLogger("rankd.ws")

INF = math.inf
MAX_TOP = 100
MAX_RADIUS = 50
# What a subscriber is known to have seen after a rollover: nothing it could equal again.
_UNSEEN_VIEW: list[Entry] = [{"rank": 0}]
_UNSEEN_RANK: tuple[Any, Any] = (object(), None)

# Close codes the hub itself asks for (the protocol edge owns the rest).
POLICY = status.WS_1008_POLICY_VIOLATION
GOING_AWAY = status.WS_1001_GOING_AWAY

SEND_TIMEOUT = 5.0  # seconds one frame may wait for a client to make room before it is closed
WATCHDOG_INTERVAL = 1.0
# Around groups are indexed by position in buckets of this many ranks. A watch keeps up to
# MAX_SPANS spans per flush (past that -- 100,000 writes in one tick -- a flush scans every
# group against their union).
BUCKET = 64
MAX_SPANS = 100_000
# Subscriptions visited per loop turn while delivering: ~2-4 ms of work, after which writes
# waiting on the loop get their turn (without it, a 10,000-subscriber flush held them ~150 ms).
SLICE = 256


def ws_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed, unfragmented WebSocket text frame, as the server sends it.

    websockets' own frame writer (the library uvicorn speaks the protocol with), called once
    per distinct frame rather than once per subscriber.
    """
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def ws_payload(frame: bytes) -> bytes:
    """The payload of a frame made by ``ws_frame`` (for senders that need the text back)."""
    n = frame[1] & 0x7F
    return frame[2 if n < 126 else 4 if n == 126 else 10 :]


class Peer(Protocol):
    """The hub's view of one connection (service/ws.py ``Connection``)."""

    send_started: float | None  # loop time a frame began waiting for room, None when idle
    public_only: bool  # connected with no credential: may watch public_read boards only

    def offer(self, key: object, frame: bytes) -> None:
        """Deliver ``frame`` (a complete WebSocket frame), replacing any unsent one for key."""
        ...

    def close_soon(self, code: int, reason: str) -> None: ...


# Distinct subscription heads seen since start: bounded by what clients choose as ids, so a
# size cap keeps a client cycling through random ids from growing it without end.
_HEADS: dict[bytes, bytes] = {}
_MAX_HEADS = 10_000


class _Sub:
    __slots__ = ("board", "group", "head", "peer", "seen")

    def __init__(self, peer: Peer, head: str, board: str) -> None:
        self.peer = peer
        # '{"type":"top","id":<id>' -- the per-subscription prefix, interned: equal heads are
        # one object, which the fan-out loop compares by identity.
        raw = head.encode()
        if len(_HEADS) >= _MAX_HEADS and raw not in _HEADS:
            _HEADS.clear()  # interning is only a speed-up: starting over is always correct
        self.head = _HEADS.setdefault(raw, raw)
        self.board = board


class TopSub(_Sub):
    __slots__ = ()

    def __init__(self, peer: Peer, head: str, board: str, group: "_TopGroup") -> None:
        super().__init__(peer, head, board)
        self.group = group
        self.seen: list[Entry] = []


class RankSub(_Sub):
    __slots__ = ()

    def __init__(self, peer: Peer, head: str, board: str, group: "_RankGroup") -> None:
        super().__init__(peer, head, board)
        self.group = group
        self.seen: tuple[Any, Any] = (None, None)


class AroundSub(_Sub):
    __slots__ = ()

    def __init__(self, peer: Peer, head: str, board: str, group: "_AroundGroup") -> None:
        super().__init__(peer, head, board)
        self.group = group
        self.seen: list[Entry] = []


Subscription = TopSub | RankSub | AroundSub


class _TopGroup:
    __slots__ = ("n", "stale", "subs", "view")

    def __init__(self, n: int) -> None:
        self.n = n
        self.subs: dict[TopSub, None] = {}  # an insertion-ordered set
        self.view: list[Entry] | None = None  # the slice as of the last flush
        # A subscriber joined with a view newer than ``view``: compare everyone next flush,
        # even if the slice then equals ``view`` again.
        self.stale = False


class _RankGroup:
    __slots__ = ("dirty", "member", "pos", "state", "subs")

    def __init__(self, member: str) -> None:
        self.member = member
        self.subs: dict[RankSub, None] = {}
        self.state: tuple[Any, Any] | None = None  # (rank, score) as of the last look
        self.pos: int | None = None  # its position (ordinal rank) then: spans are positions
        self.dirty = False


class _AroundGroup:
    __slots__ = ("dirty", "member", "pos", "radius", "subs", "view")

    def __init__(self, member: str, radius: int) -> None:
        self.member = member
        self.radius = radius
        self.subs: dict[AroundSub, None] = {}
        self.view: list[Entry] | None = None  # as of the last look
        self.pos: int | None = None  # the member's position as of the last look; None: absent
        self.dirty = False


class _AroundIndex:
    """Around groups bucketed by their last known position, so a flush finds the windows a
    span crossed without visiting the others. A group's position is exact until a span
    crosses its window (the induction in the module docstring), and then it is looked up and
    re-filed, so the index never goes stale. Absent members (pos None) are not filed: only
    their own write or a board-wide event wakes them."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: dict[int, set[_AroundGroup]] = {}

    def add(self, group: "_AroundGroup") -> None:
        if group.pos is not None:
            self.buckets.setdefault(group.pos // BUCKET, set()).add(group)

    def remove(self, group: "_AroundGroup", pos: int | None) -> None:
        if pos is not None:
            bucket = self.buckets.get(pos // BUCKET)
            if bucket is not None:
                bucket.discard(group)
                if not bucket:
                    del self.buckets[pos // BUCKET]

    def crossed(self, spans: list[tuple[float, float]], into: "set[_AroundGroup]") -> None:
        """Add every filed group whose window [pos - r, pos + r] meets one of ``spans``.

        Visits each bucket some span can reach once, and tests a group against all the spans
        at once: spans sorted by start, with the running maximum of their ends, so "some span
        starts at or before the window's end and ends at or after its start" is one bisection.
        """
        spans.sort()
        starts = [lo for lo, _ in spans]
        reach: list[float] = []
        far = -INF
        for _, hi in spans:
            far = max(far, hi)
            reach.append(far)
        buckets = self.buckets
        keys: set[int] = set()
        for lo, hi in spans:
            first = max(0, int(lo) - MAX_RADIUS) // BUCKET
            if hi == INF:
                keys.update(k for k in buckets if k >= first)
                continue
            last = (int(hi) + MAX_RADIUS) // BUCKET
            if last - first < len(buckets):
                keys.update(k for k in range(first, last + 1) if k in buckets)
            else:
                keys.update(k for k in buckets if first <= k <= last)
        for key in keys:
            for group in buckets[key]:
                pos = group.pos
                assert pos is not None
                k = bisect_right(starts, pos + group.radius)
                if k and reach[k - 1] >= pos - group.radius:
                    into.add(group)

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets.values())


class _Job:
    """Deliveries of one changed view, resumable: ``order`` from ``at`` on is still to do."""

    __slots__ = ("args", "at", "force", "frames", "live", "order", "state", "tail", "tail_of")

    def __init__(
        self,
        live: "dict[Any, None]",
        state: Any,
        force: bool,
        tail_of: Callable[..., bytes],
        args: Any,
    ) -> None:
        self.live = live  # the group's subscriptions now: who left meanwhile is skipped
        self.order: list[Any] = list(live)
        self.at = 0
        self.state = state
        self.force = force  # a failover: send even to subscribers that saw an equal state
        self.tail_of = tail_of
        self.args = args
        self.tail: bytes | None = None
        self.frames: dict[bytes, bytes] = {}


def _key(board: str, window: str | None) -> str:
    """A watch's key in Hub._watches: the board, or the board and the window it names."""
    return board if window is None else f"{board}\x00{window}"


class _Watch:
    __slots__ = (
        "arounds",
        "board",
        "epoch",
        "hi",
        "index",
        "lo",
        "max_top",
        "members",
        "name",
        "period",
        "queued",
        "spans",
        "top_dirty",
        "tops",
        "wide",
        "window",
        "wname",
        "woken",
    )

    def __init__(self, name: str, board: str, window: str | None, views: Any) -> None:
        self.name = name  # the key in Hub._watches
        self.board = board
        self.window = window  # as subscribed; None: the board's first
        self.epoch: str | None = None
        # (window name, current period id) as last shown; None while the board is absent
        self.wname, self.period = views.period_view(board, window)
        self.tops: dict[int, _TopGroup] = {}
        self.max_top = 0
        self.members: dict[str, _RankGroup] = {}
        self.arounds: dict[str, dict[int, _AroundGroup]] = {}  # member -> radius -> group
        self.top_dirty = False
        self.lo: float = INF  # union of rank spans crossed since the last flush
        self.hi: float = 0
        self.index = _AroundIndex()
        self.spans: list[tuple[float, float]] = []  # each span crossed, for the around index
        self.wide = False  # too many spans, or a board-wide event: scan every around group
        self.woken: list[_AroundGroup] = []  # around groups flagged directly (their member)
        self.queued = False

    def __bool__(self) -> bool:
        return bool(self.tops or self.members or self.arounds)


class Hub:
    def __init__(self, backend: Backend, limits: ServiceLimits) -> None:
        self._feed = backend.feed
        self._views = backend.views
        self.tick = limits.ws_tick
        self.max_connections = limits.ws_connections
        self.peers: set[Peer] = set()
        self.subscriptions = 0
        # Counters for /metrics and the tests; plain ints, read at scrape time.
        self.frames_offered = 0
        self.frames_encoded = 0  # distinct frames built: offered / encoded is the sharing
        self.frames_conflated = 0
        self.closed_slow = 0
        self.frames_sent = 0  # written to a socket, directly or by a sender task (ws.py)
        self.sent_bytes = 0
        self._watches: dict[str, _Watch] = {}
        self._windowed: dict[str, set[str]] = {}  # board -> keys of watches naming a window
        self._dirty: list[_Watch] = []
        self._by_session: dict[str, set[Peer]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = -INF
        self._watchdog: asyncio.Task[None] | None = None
        self._jobs: deque[_Job] = deque()
        self._pumping: asyncio.Handle | None = None
        self._flush_waiting = False  # a flush came due while deliveries were still going
        self._flushing: asyncio.Task[None] | None = None  # a remote flush loading views

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._feed.listen(self._on_board_event, self._on_session_event)
        self._watchdog = asyncio.create_task(self._watch_sends(), name="rankd-ws-watchdog")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._flushing is not None:  # first: its end may arm the timer again
            self._flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flushing
            self._flushing = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pumping is not None:
            self._pumping.cancel()
            self._pumping = None
        self._feed.unlisten(self._on_board_event, self._on_session_event)
        for peer in list(self.peers):
            peer.close_soon(GOING_AWAY, "server shutting down")

    # -- connections ---------------------------------------------------------------------------

    def attach(self, peer: Peer, session: str | None) -> bool:
        """Register a connection; False when the connection limit is reached."""
        if len(self.peers) >= self.max_connections:
            return False
        self.peers.add(peer)
        if session is not None:
            self._by_session.setdefault(session, set()).add(peer)
        return True

    def detach(self, peer: Peer, session: str | None, subs: list[Subscription]) -> None:
        for sub in subs:
            self.unsubscribe(sub)
        self.peers.discard(peer)
        if session is not None:
            bound = self._by_session.get(session)
            if bound is not None:
                bound.discard(peer)
                if not bound:
                    del self._by_session[session]
                    self._feed.unwatch_session(session)

    async def _watch_sends(self) -> None:
        """Close connections whose pending frame has waited SEND_TIMEOUT for the client to read.

        One scan per second, O(connections), instead of a timer armed and cancelled around every
        frame sent: the fan-out sends far more frames than there are connections.
        """
        assert self._loop is not None
        clock = self._loop.time
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            stalled = clock() - SEND_TIMEOUT
            for peer in list(self.peers):
                started = peer.send_started
                if started is not None and started < stalled:
                    self.closed_slow += 1
                    peer.close_soon(
                        POLICY, f"client not reading: a frame waited {SEND_TIMEOUT:g} s"
                    )

    # -- subscriptions -------------------------------------------------------------------------

    async def prepare(
        self,
        name: str,
        top: int,
        member: str | None,
        radius: int | None = None,
        window: str | None = None,
    ) -> None:
        """Fetch the views a subscription's full state needs (nothing when they are local):
        the top ``top``, or member's place, or (with ``radius``) the entries around member."""
        views = self._views
        if views.synchronous:
            return
        watch = self._watches.get(_key(name, window))
        top = max(top, watch.max_top if watch is not None else 0)
        if member is None:
            await views.load(name, top, [], window=window)
        elif radius is None:
            await views.load(name, top, [member], window=window)
        else:
            await views.load(name, top, [], [(member, radius)], window=window)

    def subscribe_top(
        self, peer: Peer, head: str, name: str, n: int, window: str | None = None
    ) -> TopSub:
        """Subscribe to a board's top ``n`` (it need not exist) and offer its full state."""
        assert 1 <= n <= MAX_TOP
        watch = self._watch(name, window)
        name = watch.name
        group = watch.tops.get(n)
        if group is None:
            group = watch.tops[n] = _TopGroup(n)
            watch.max_top = max(watch.max_top, n)
        view, total, seq = self._views.top_view(watch.board, n, watch.window)
        if watch.epoch is None:
            watch.epoch = self._views.epoch(watch.board)
        if group.view is None:
            group.view = view
        elif view != group.view:
            group.stale = True
        sub = TopSub(peer, head, name, group)
        sub.seen = view
        group.subs[sub] = None
        self.subscriptions += 1
        self._offer(sub, self._frame(sub.head, self._top_tail(watch, total, seq, view)))
        return sub

    def subscribe_rank(
        self, peer: Peer, head: str, name: str, member: str, window: str | None = None
    ) -> RankSub:
        """Subscribe to one member's (rank, score) on a board and offer its current state."""
        watch = self._watch(name, window)
        name = watch.name
        group = watch.members.get(member)
        if group is None:
            group = watch.members[member] = _RankGroup(member)
        rank, score, seq, group.pos = self._views.rank_view(watch.board, member, watch.window)
        if watch.epoch is None:
            watch.epoch = self._views.epoch(watch.board)
        state = (rank, score)
        if group.state is None:
            group.state = state
        elif state != group.state:
            group.dirty = True
        sub = RankSub(peer, head, name, group)
        sub.seen = state
        group.subs[sub] = None
        self.subscriptions += 1
        self._offer(sub, self._frame(sub.head, self._rank_tail(watch, seq, member, state)))
        return sub

    def subscribe_around(
        self,
        peer: Peer,
        head: str,
        name: str,
        member: str,
        radius: int,
        window: str | None = None,
    ) -> AroundSub:
        """Subscribe to the entries within ``radius`` ranks of member and offer them."""
        assert 0 <= radius <= MAX_RADIUS
        watch = self._watch(name, window)
        name = watch.name
        radii = watch.arounds.setdefault(member, {})
        group = radii.get(radius)
        if group is None:
            group = radii[radius] = _AroundGroup(member, radius)
        view, total, seq, pos = self._views.around_view(watch.board, member, radius, watch.window)
        if watch.epoch is None:
            watch.epoch = self._views.epoch(watch.board)
        if group.view is None:
            group.view, group.pos = view, pos
            watch.index.add(group)
        elif view != group.view or pos != group.pos:
            group.dirty = True
            watch.woken.append(group)
        sub = AroundSub(peer, head, name, group)
        sub.seen = view
        group.subs[sub] = None
        self.subscriptions += 1
        tail = self._around_tail(watch, member, total, seq, view)
        self._offer(sub, self._frame(sub.head, tail))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        watch = self._watches.get(sub.board)
        if watch is None:
            return
        if isinstance(sub, TopSub):
            top = sub.group
            if top.subs.pop(sub, 0) is None:
                self.subscriptions -= 1
            if not top.subs and watch.tops.get(top.n) is top:
                del watch.tops[top.n]
                watch.max_top = max(watch.tops, default=0)
        elif isinstance(sub, RankSub):
            rank = sub.group
            if rank.subs.pop(sub, 0) is None:
                self.subscriptions -= 1
            if not rank.subs and watch.members.get(rank.member) is rank:
                del watch.members[rank.member]
        else:
            near = sub.group
            if near.subs.pop(sub, 0) is None:
                self.subscriptions -= 1
            radii = watch.arounds.get(near.member, {})
            if not near.subs and radii.get(near.radius) is near:
                del radii[near.radius]
                watch.index.remove(near, near.pos)
                if not radii:
                    del watch.arounds[near.member]
        if not watch:
            # A queued watch notices at flush time that it is no longer the registered one.
            del self._watches[watch.name]
            if watch.window is not None:
                keys = self._windowed[watch.board]
                keys.discard(watch.name)
                if not keys:
                    del self._windowed[watch.board]
            if watch.board not in self._watches and watch.board not in self._windowed:
                self._feed.unwatch_board(watch.board)  # the board's last watch

    def _watch(self, board: str, window: str | None) -> _Watch:
        name = _key(board, window)
        watch = self._watches.get(name)
        if watch is None:
            watch = self._watches[name] = _Watch(name, board, window, self._views)
            if window is not None:
                self._windowed.setdefault(board, set()).add(name)
        return watch

    # -- observers -----------------------------------------------------------------------------

    def _on_board_event(self, event: BoardEvent) -> None:
        windowed = self._windowed.get(event[1])
        if windowed:
            for key in windowed:
                self._mark(self._watches[key], event)
        watch = self._watches.get(event[1])
        if watch is not None:
            self._mark(watch, event)

    def _mark(self, watch: _Watch, event: BoardEvent) -> None:
        if event[0] == "bbatch":
            for write in event[2]:
                self._mark(watch, write)
            return
        low: float
        high: float
        member: str | None
        if event[0] == "bset":
            rank, prev = event[6], event[7]
            if prev is None:
                low, high = rank, INF
            else:
                low, high = (rank, prev) if rank < prev else (prev, rank)
            member = event[2]
        elif event[0] == "bdel":  # ("bdel", board, member, seq, previous_rank)
            low, high, member = event[4], INF, event[2]
        else:  # "bdrop", "bcfg", "broll": the whole board may have changed
            low, high, member = 1, INF, None
            # Even members last seen absent (rank None, outside any span): a board that comes
            # back (an undone drop, store/keyspace.py) brings its entries with it. Rare events,
            # so O(groups) here is fine.
            for every in watch.members.values():
                every.dirty = True
            for radii in watch.arounds.values():
                for near in radii.values():
                    near.dirty = True
            watch.wide = True
            config = event[2] if event[0] == "bcfg" else None
            # A known config without public_read (the redis feed's gap events carry none):
            # the board stopped being public, and credential-less watchers lose it at once.
            if config and not config.get("public_read"):
                self._close_anonymous(watch)
        if low <= watch.max_top:
            watch.top_dirty = True
        if watch.arounds and not watch.wide:
            if len(watch.spans) < MAX_SPANS:
                watch.spans.append((low, high))
            else:
                watch.wide = True
        if watch.members or watch.arounds:
            if low < watch.lo:
                watch.lo = low
            if high > watch.hi:
                watch.hi = high
            if member is not None:
                group = watch.members.get(member)
                if group is not None:
                    group.dirty = True
                arounds = watch.arounds.get(member)
                if arounds is not None:
                    for near in arounds.values():
                        near.dirty = True
                        watch.woken.append(near)
        if not watch.queued:
            watch.queued = True
            self._dirty.append(watch)
            if not self._flush_waiting:
                self._schedule_flush()

    def _close_anonymous(self, watch: _Watch) -> None:
        """Close (1008) every connection without a credential that watches ``watch``'s board,
        as a revoked session's are. O(subscriptions of the board): only on a reconfigure."""
        groups: list[_TopGroup | _RankGroup | _AroundGroup] = [
            *watch.tops.values(),
            *watch.members.values(),
            *(g for radii in watch.arounds.values() for g in radii.values()),
        ]
        for group in groups:
            for sub in group.subs:
                if sub.peer.public_only:
                    # Not the board's name: a close reason holds at most 123 bytes.
                    sub.peer.close_soon(POLICY, "unauthorized: the board is no longer public")

    def _on_session_event(self, event: SessionEvent) -> None:
        if event[0] != "sdel":
            return
        peers = self._by_session.pop(event[1], None)
        for peer in peers or ():
            # reason: deleted | expired | revoked | rotated | evicted. Never the id: it is a
            # credential.
            peer.close_soon(POLICY, f"session {event[2]}")

    # -- flush ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """Run the pending flush and every delivery now (tests drive the hub this way)."""
        if self._timer is not None:
            self._timer.cancel()
        self._pump(None)
        self._flush()
        self._pump(None)

    def _schedule_flush(self) -> None:
        if self._timer is None and self._dirty and self._loop is not None:
            when = max(self._loop.time(), self._last_flush + self.tick)
            self._timer = self._loop.call_at(when, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._jobs:
            # The last flush is still being delivered: this one waits for it, so a subscriber
            # still gets at most one frame per tick, and the latest state when its turn comes.
            self._flush_waiting = True
            return
        if not self._views.synchronous:
            if self._flushing is None and self._loop is not None:
                self._last_flush = self._loop.time()
                self._flushing = self._loop.create_task(self._flush_remote())
            return  # a flush in progress re-arms itself for what arrived meanwhile
        if self._loop is not None:
            self._last_flush = self._loop.time()
        dirty, self._dirty = self._dirty, []
        for watch in dirty:
            watch.queued = False
            if self._watches.get(watch.name) is not watch:
                continue  # every subscription left (and maybe a new watch took the name)
            try:
                self._check_period(watch)
                top, ranks, arounds = self._due(watch)
                if self._epoch_changed(watch):
                    top, ranks, arounds = self._everything(watch)
                    self._flush_watch(watch, top, ranks, arounds, True)
                else:
                    self._flush_watch(watch, top, ranks, arounds, False)
            except Exception:
                # A bug here must not stop every later flush; the tests assert the log is clean.
                log.exception("hub flush failed for one board")
        self._pump(SLICE)

    def _pump(self, budget: int | None) -> None:
        """Deliver queued views, ``budget`` subscriptions at most (None: all), then yield."""
        self._pumping = None
        jobs = self._jobs
        left = budget if budget is not None else 1 << 62
        while jobs and left > 0:
            job = jobs[0]
            left = self._deliver(job, left)
            if job.at >= len(job.order):
                jobs.popleft()
        if jobs:
            assert self._loop is not None, "deliveries left without a loop to finish them"
            self._pumping = self._loop.call_soon(self._pump, SLICE)
        elif self._flush_waiting:
            self._flush_waiting = False
            self._schedule_flush()

    def _check_period(self, watch: _Watch) -> bool:
        """A ``period`` frame to every subscriber when the watched window rolled over, and
        the new state after it even where it looks the same (an empty top stays empty).
        True when it rolled over."""
        wname, period = self._views.period_view(watch.board, watch.window)
        closed, was = watch.period, watch.wname
        watch.wname, watch.period = wname, period
        # Only a period that follows another of the same window: not a board that appeared,
        # vanished or was reconfigured.
        if period == closed or closed is None or period is None or wname != was:
            return False
        body: PeriodFrame = {"board": watch.board, "window": wname, "closed": closed,
                             "current": period}  # fmt: skip
        tail = b"," + orjson.dumps(body)[1:]
        frames: dict[bytes, bytes] = {}
        watch.top_dirty = True
        for group in watch.tops.values():
            group.stale = True
            for sub in group.subs:
                self._offer_period(sub, tail, frames)
                sub.seen = _UNSEEN_VIEW
        for rank in watch.members.values():
            rank.dirty = True
            for rsub in rank.subs:
                self._offer_period(rsub, tail, frames)
                rsub.seen = _UNSEEN_RANK
        for radii in watch.arounds.values():
            for near in radii.values():
                near.dirty = True
                watch.woken.append(near)
                for asub in near.subs:
                    self._offer_period(asub, tail, frames)
                    asub.seen = _UNSEEN_VIEW
        return True

    def _offer_period(self, sub: Subscription, tail: bytes, frames: dict[bytes, bytes]) -> None:
        # Its own outbox key: the state frame that follows must not conflate it away.
        frame = frames.get(sub.head)
        if frame is None:
            head = b'{"type":"period","id":' + sub.head.split(b',"id":', 1)[1]
            frame = frames[sub.head] = self._frame(head, tail)
        self.frames_offered += 1
        sub.peer.offer((sub, "period"), frame)

    async def _flush_remote(self) -> None:
        """The flush for views read over the network: for each dirty board, work out which
        views may have moved (the same spans as the local flush), load just those, compare.

        One round per task; what arrived meanwhile is flushed by the next round, no sooner
        than a tick after this one began, and only once this round's deliveries are done."""
        try:
            dirty, self._dirty = self._dirty, []
            for watch in dirty:
                watch.queued = False
                if self._watches.get(watch.name) is not watch:
                    continue
                self._check_period(watch)
                top, ranks, arounds = self._due(watch)
                if not top and not ranks and not arounds:
                    continue  # a write below every view: nothing to read
                try:
                    await self._load(watch, top, ranks, arounds)
                    force = self._epoch_changed(watch)
                    # a failover, or a period the load found (a board came or went): load
                    # everything the board's subscribers see
                    if self._check_period(watch) or force:
                        top, ranks, arounds = self._everything(watch)
                        await self._load(watch, top, ranks, arounds)
                        self._epoch_changed(watch)
                except Exception as exc:
                    # unreachable: keep what subscribers have; the feed re-announces the
                    # board once it re-subscribes, which brings this flush back
                    log.warning("hub: cannot read board views: %s", exc)
                    continue
                if self._watches.get(watch.name) is not watch:
                    continue  # every subscription left while the views loaded
                try:
                    self._flush_watch(watch, top, ranks, arounds, force)
                except Exception:
                    log.exception("hub flush failed for one board")
                self._pump(SLICE)
        finally:
            self._flushing = None
            if self._jobs:
                self._flush_waiting = True  # the pump schedules the next round when done
            else:
                self._schedule_flush()

    async def _load(
        self, watch: _Watch, top: bool, ranks: list[_RankGroup], arounds: list[_AroundGroup]
    ) -> None:
        members = [g.member for g in ranks]
        pairs = [(g.member, g.radius) for g in arounds]
        while True:
            n = watch.max_top if top else 0
            await self._views.load(watch.board, n, members, pairs, window=watch.window)
            if not top or watch.max_top <= n:
                return
            # A larger top N subscribed while this read was out, and the (shorter) view it
            # brought replaced the one that subscription loaded: read the larger one.
            members, pairs = [], []

    def _epoch_changed(self, watch: _Watch) -> bool:
        """Note the board's epoch; True when it moved since the last look (a failover)."""
        epoch = self._views.epoch(watch.board)
        changed = watch.epoch is not None and epoch != watch.epoch
        watch.epoch = epoch
        return changed

    def _due(self, watch: _Watch) -> tuple[bool, list[_RankGroup], list[_AroundGroup]]:
        """What may have moved since the last flush: (top views?, rank groups, around groups).
        Resets the watch's flags and spans."""
        top = watch.top_dirty
        watch.top_dirty = False
        lo, hi = watch.lo, watch.hi
        watch.lo, watch.hi = INF, 0
        if lo != INF and self._views.ranking(watch.board) != "ordinal":
            # shared ranks: any change above a member may move its rank (store/ranks.py), so
            # every span reaches the end and the around index (finite spans) is bypassed
            hi = INF
            watch.wide = True
        ranks = self._rank_groups_due(watch, lo, hi) if watch.members else []
        arounds = self._around_groups_due(watch, lo, hi) if watch.arounds else []
        if not watch.arounds:
            watch.spans, watch.wide, watch.woken = [], False, []
        return top, ranks, arounds

    def _everything(self, watch: _Watch) -> tuple[bool, list[_RankGroup], list[_AroundGroup]]:
        """Every view of the board, for a forced resend (flags reset)."""
        for group in watch.members.values():
            group.dirty = False
        arounds = [g for radii in watch.arounds.values() for g in radii.values()]
        for near in arounds:
            near.dirty = False
        return bool(watch.tops), list(watch.members.values()), arounds

    def _flush_watch(
        self,
        watch: _Watch,
        top: bool,
        ranks: list[_RankGroup],
        arounds: list[_AroundGroup],
        force: bool,
    ) -> None:
        """Compare the due views with what subscribers were shown and queue the changes;
        ``force``: queue every due view to every subscriber, changed or not (a failover:
        history may have forked, so everyone gets the full state again)."""
        if top:
            self._flush_tops(watch, force)
        if ranks:
            self._send_ranks(watch, ranks, force)
        for group in arounds:
            if watch.arounds.get(group.member, {}).get(group.radius) is group:
                self._look_around(watch, group, force)

    def _flush_tops(self, watch: _Watch, force: bool = False) -> None:
        # One read per dirty board per flush, sliced per N.
        entries, total, seq = self._views.top_view(watch.board, watch.max_top, watch.window)
        for n, group in watch.tops.items():
            view = entries[:n]
            if view == group.view and not group.stale and not force:
                continue
            group.view = view
            group.stale = False
            self._fan_out(group.subs, view, force, self._top_tail, watch, total, seq, view)

    def _rank_groups_due(self, watch: _Watch, lo: float, hi: float) -> list[_RankGroup]:
        """Rank groups that may have moved since the last flush (flags reset)."""
        due = []
        for group in watch.members.values():
            if not group.dirty:
                pos = group.pos
                if pos is None or not lo <= pos <= hi:
                    continue
            group.dirty = False
            due.append(group)
        return due

    def _send_ranks(self, watch: _Watch, due: list[_RankGroup], force: bool) -> None:
        views, board, window = self._views, watch.board, watch.window
        for group in due:
            if watch.members.get(group.member) is not group:
                continue  # its last subscriber left while the views loaded
            member = group.member
            rank, score, seq, group.pos = views.rank_view(board, member, window)
            state = group.state = (rank, score)
            self._fan_out(group.subs, state, force, self._rank_tail, watch, seq, member, state)

    def _around_groups_due(self, watch: _Watch, lo: float, hi: float) -> list[_AroundGroup]:
        """Around groups whose window a span crossed, or flagged directly (flags reset)."""
        spans, wide, woken = watch.spans, watch.wide, watch.woken
        watch.spans, watch.wide, watch.woken = [], False, []
        if wide:
            # Many spans this tick (or the whole board changed): one pass over every group
            # against the union is cheaper than one index probe per span.
            due = []
            for radii in watch.arounds.values():
                for group in radii.values():
                    if not group.dirty:
                        pos = group.pos
                        if pos is None or not (
                            lo <= pos + group.radius and pos - group.radius <= hi
                        ):
                            continue
                    group.dirty = False
                    due.append(group)
            return due
        todo: set[_AroundGroup] = set()
        if spans:
            watch.index.crossed(spans, todo)
        for group in woken:
            # Still subscribed? (It may have been dropped and a new group made since.)
            if watch.arounds.get(group.member, {}).get(group.radius) is group:
                todo.add(group)
        for group in todo:
            group.dirty = False
        return list(todo)

    def _look_around(self, watch: _Watch, group: _AroundGroup, force: bool = False) -> None:
        member, was = group.member, group.pos
        view, total, seq, group.pos = self._views.around_view(
            watch.board, member, group.radius, watch.window
        )
        if group.pos != was:
            watch.index.remove(group, was)
            watch.index.add(group)
        if not force and view == group.view and all(sub.seen is group.view for sub in group.subs):
            return
        group.view = view
        self._fan_out(group.subs, view, force, self._around_tail, watch, member, total, seq, view)

    def _fan_out(
        self,
        subs: "dict[Any, None]",
        state: Any,
        force: bool,
        tail_of: Callable[..., bytes],
        *args: Any,
    ) -> None:
        """Queue ``state`` for every subscription of a group that has not seen it (``force``:
        for every subscription)."""
        self._jobs.append(_Job(subs, state, force, tail_of, args))

    def _deliver(self, job: _Job, budget: int) -> int:
        """Offer ``job.state`` to up to ``budget`` subscriptions; returns the budget left.

        The hot loop of the fan-out (once per subscriber per changed view): one encode per
        view, one frame per distinct head, then the same bytes to every subscriber. Heads are
        interned (``_HEADS``), so subscribers that share an id share a frame by identity.
        """
        order, live, state, force = job.order, job.live, job.state, job.force
        end = min(len(order), job.at + budget)
        head: bytes | None = None
        frame = b""
        offered = 0
        for k in range(job.at, end):
            sub = order[k]
            seen = sub.seen
            if force:
                pass
            elif seen is state:
                continue
            elif seen == state:
                sub.seen = state  # identity from now on: cheaper next time
                continue
            if sub not in live:
                continue  # unsubscribed since the flush
            if sub.head is not head:
                tail = job.tail
                if tail is None:
                    tail = job.tail = job.tail_of(*job.args)
                head = sub.head
                got = job.frames.get(head)
                if got is None:
                    got = job.frames[head] = self._frame(head, tail)
                frame = got
            sub.seen = state
            offered += 1
            sub.peer.offer(sub, frame)
        self.frames_offered += offered
        budget -= end - job.at
        job.at = end
        return budget

    def _frame(self, head: bytes, tail: bytes) -> bytes:
        self.frames_encoded += 1
        return ws_frame(head + tail)

    def _offer(self, sub: Subscription, frame: bytes) -> None:
        self.frames_offered += 1
        sub.peer.offer(sub, frame)

    # -- frames: '{"type":..,"id":..' (per subscription) + one shared tail ---------------------

    def _top_tail(self, watch: _Watch, total: int, seq: int, view: list[Entry]) -> bytes:
        body: TopTail = {
            "board": watch.board,
            "window": watch.wname,
            "period": watch.period,
            "total": total,
            "entries": view,
            "seq": seq,
            "epoch": self._views.epoch(watch.board),
        }
        return b"," + orjson.dumps(body)[1:]

    def _rank_tail(self, watch: _Watch, seq: int, member: str, state: tuple[Any, Any]) -> bytes:
        body: RankTail = {
            "board": watch.board,
            "window": watch.wname,
            "period": watch.period,
            "member": member,
            "rank": state[0],
            "score": state[1],
            "seq": seq,
            "epoch": self._views.epoch(watch.board),
        }
        return b"," + orjson.dumps(body)[1:]

    def _around_tail(
        self, watch: _Watch, member: str, total: int, seq: int, view: list[Entry]
    ) -> bytes:
        body: AroundTail = {
            "board": watch.board,
            "window": watch.wname,
            "period": watch.period,
            "member": member,
            "total": total,
            "entries": view,
            "seq": seq,
            "epoch": self._views.epoch(watch.board),
        }
        return b"," + orjson.dumps(body)[1:]

    def _check(self) -> None:
        """Every registered group is non-empty and counted; dirty bookkeeping is consistent."""
        count = 0
        for name, watch in self._watches.items():
            indexed = 0
            assert watch.name == name == _key(watch.board, watch.window) and watch, name
            assert watch.window is None or name in self._windowed[watch.board], name
            assert watch.max_top == max(watch.tops, default=0)
            for n, top in watch.tops.items():
                assert top.n == n and top.subs
                assert all(s.group is top and s.board == name for s in top.subs)
                count += len(top.subs)
            for member, rank in watch.members.items():
                assert rank.member == member and rank.subs
                assert all(s.group is rank and s.board == name for s in rank.subs)
                count += len(rank.subs)
            for member, radii in watch.arounds.items():
                assert radii, member
                for radius, near in radii.items():
                    assert (near.member, near.radius) == (member, radius) and near.subs
                    filed = near.pos is not None and near in watch.index.buckets[near.pos // BUCKET]
                    assert filed or near.pos is None, (member, radius)
                    indexed += near.pos is not None
                    assert all(s.group is near and s.board == name for s in near.subs)
                    count += len(near.subs)
            assert len(watch.index) == indexed, (name, len(watch.index), indexed)
            assert watch.queued == (watch in self._dirty)
        assert all(k in self._watches for keys in self._windowed.values() for k in keys)
        assert count == self.subscriptions, (count, self.subscriptions)
        assert (self._timer is None) or bool(self._dirty) or self._flushing is not None
