"""The WebSocket hub: who watches what, which writes can matter to them, and when to tell them.

    _watches     dict board -> _Watch          boards somebody subscribed to (nothing else)
    _Watch.tops     dict N -> _TopGroup        subscriptions to the board's top N, grouped by N
    _Watch.members  dict member -> _RankGroup  subscriptions to one member's (rank, score)
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
* A write moves other members' ranks only inside the span it crossed: ``[min, max]`` of its two
  ranks, ``[rank, inf)`` for an insert or a delete. The watch keeps the union of those spans
  since the last flush; a rank group whose last known rank lies outside it cannot have moved
  (by induction over the events: a rank that an event moves stays inside that event's span),
  so the flush skips it without a lookup. The written member's own group is flagged directly.
  Events carry positions (ordinal ranks) on every board, so a group keeps its member's last
  position beside the rank it shows. Shared ranks (ranking competition or dense) move further:
  a member's shown rank changes only when an entry before it changes, so there the span of a
  write is ``[min, inf)`` -- still exact, as a change can only come from above.

A write undone after a journal failure (service/backend/journal_flusher.py) needs nothing
special: the store announces the restored state as ordinary events, at a higher ``seq``, so a
subscriber that was shown the undone write gets the restored state on the next flush.

``total`` and ``seq`` ride along in every top frame, but a change of ``total`` alone (an insert
far below the view) wakes nobody: otherwise every write anywhere would fan out to every top
subscriber of the board.

Coalescing: a flush runs at most once per ``tick`` and only when something is dirty. The first
dirty mark after a quiet spell schedules it at ``max(now, last_flush + tick)``, so a lone write
goes out on the next loop turn and a burst goes out once per tick, the latest state winning.
A flush computes a dirty board's ``top(max_top)`` once, slices it per N, encodes each changed
slice once, and offers one frame to each subscription whose slice differs from what it last got.
A subscription therefore sees at most one frame per tick, plus the full state on subscribe.

Delivery never awaits: ``Peer.offer`` drops the frame into the connection's conflating outbox
(keyed by subscription, so an unsent older state is replaced) and wakes its sender task. A slow
connection holds at most one pending frame per subscription and never delays anyone else. A
client that stops reading entirely leaves its sender stuck in one send; a watchdog scans the
connections once a second and closes those stuck for ``SEND_TIMEOUT``.

Windows and periods: a subscription may name a board's ``window`` (default: its first). Its
watch is keyed ``board`` or ``board\x00window`` and sees every event of the board (an event of
another window only costs a needless look). A flush compares the window's current period with
the one the watch last showed: when it changed (a ``broll``, or the clock crossing a boundary
while the board was idle -- the backend rolls idle boards within a second), every subscriber
of the watch gets a ``period`` frame and then the new state, even if that state looks equal.

Observers run on the event-loop thread, as every store call in the service does.

Views that live elsewhere (``views.synchronous`` False: the redis backend) are fetched before
they are read: ``prepare`` before a subscription's full state, and an asynchronous flush that
awaits ``views.load`` for one dirty board, then runs the same comparisons. Each board carries an
epoch (``views.epoch``); when it changes (a failover), every subscriber of the board gets its
full state again, even an unchanged one.
"""

import asyncio
import contextlib
import logging
import math
from typing import Any, Protocol

import orjson
from starlette import status

from service.backend.api import Backend, Entry
from service.schemas import PeriodFrame, RankTail, TopTail
from service.settings import ServiceLimits
from store.events import BoardEvent, SessionEvent

log = logging.getLogger("rankd.ws")

INF = math.inf
MAX_TOP = 100
# What a subscriber is known to have seen after a rollover: nothing it could equal again.
_UNSEEN_TOP: list[Entry] = [{"rank": 0}]
_UNSEEN_RANK: tuple[Any, Any] = (object(), None)

# Close codes the hub itself asks for (the protocol edge owns the rest).
POLICY = status.WS_1008_POLICY_VIOLATION
GOING_AWAY = status.WS_1001_GOING_AWAY

SEND_TIMEOUT = 5.0  # seconds one frame may wait for a client to make room before it is closed
WATCHDOG_INTERVAL = 1.0


class Peer(Protocol):
    """The hub's view of one connection (service/ws.py ``Connection``)."""

    send_started: float | None  # loop time of the send in progress, None when idle

    def offer(self, key: object, frame: str) -> None: ...
    def close_soon(self, code: int, reason: str) -> None: ...


class TopSub:
    __slots__ = ("board", "group", "head", "peer", "seen")

    def __init__(self, peer: Peer, head: str, board: str, group: "_TopGroup") -> None:
        self.peer = peer
        self.head = head  # '{"type":"top","id":<id>' -- the per-subscription prefix
        self.board = board
        self.group = group
        self.seen: list[Entry] = []


class RankSub:
    __slots__ = ("board", "group", "head", "peer", "seen")

    def __init__(self, peer: Peer, head: str, board: str, group: "_RankGroup") -> None:
        self.peer = peer
        self.head = head
        self.board = board
        self.group = group
        self.seen: tuple[Any, Any] = (None, None)


Subscription = TopSub | RankSub


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


def _key(board: str, window: str | None) -> str:
    """A watch's key in Hub._watches: the board, or the board and the window it names."""
    return board if window is None else f"{board}\x00{window}"


class _Watch:
    __slots__ = (
        "board",
        "epoch",
        "hi",
        "lo",
        "max_top",
        "members",
        "name",
        "period",
        "queued",
        "top_dirty",
        "tops",
        "window",
        "wname",
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
        self.top_dirty = False
        self.lo: float = INF  # union of rank spans crossed since the last flush
        self.hi: float = 0
        self.queued = False

    def __bool__(self) -> bool:
        return bool(self.tops or self.members)


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
        self.frames_conflated = 0
        self.closed_slow = 0
        self.frames_sent = 0  # written to a socket (ws.py's send loop): fan-out cost
        self.sent_bytes = 0
        self._watches: dict[str, _Watch] = {}
        self._windowed: dict[str, set[str]] = {}  # board -> keys of watches naming a window
        self._dirty: list[_Watch] = []
        self._by_session: dict[str, set[Peer]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = -INF
        self._watchdog: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            self._flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flushing
            self._flushing = None
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
        """Close connections whose current send has waited SEND_TIMEOUT for the client to read.

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
        self, name: str, top: int, member: str | None, window: str | None = None
    ) -> None:
        """Fetch the views a subscription's full state needs (nothing when they are local)."""
        views = self._views
        if views.synchronous:
            return
        watch = self._watches.get(_key(name, window))
        top = max(top, watch.max_top if watch is not None else 0)
        await views.load(name, top, [] if member is None else [member])

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
        self._offer(peer, sub, head + self._top_tail(watch, total, seq, view))
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
        self._offer(peer, sub, head + self._rank_tail(watch, seq, member, state))
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
        else:
            rank = sub.group
            if rank.subs.pop(sub, 0) is None:
                self.subscriptions -= 1
            if not rank.subs and watch.members.get(rank.member) is rank:
                del watch.members[rank.member]
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
        if low <= watch.max_top:
            watch.top_dirty = True
        if watch.members:
            watch.lo = min(watch.lo, low)
            watch.hi = max(watch.hi, high)
            if member is not None:
                group = watch.members.get(member)
                if group is not None:
                    group.dirty = True
        if not watch.queued:
            watch.queued = True
            self._dirty.append(watch)
            if self._timer is None and self._loop is not None:
                when = max(self._loop.time(), self._last_flush + self.tick)
                self._timer = self._loop.call_at(when, self._flush)

    def _on_session_event(self, event: SessionEvent) -> None:
        if event[0] != "sdel":
            return
        peers = self._by_session.pop(event[1], None)
        for peer in peers or ():
            # reason: deleted | expired | revoked | rotated. Never the id: it is a credential.
            peer.close_soon(POLICY, f"session {event[2]}")

    # -- flush ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """Run the pending flush now instead of at its tick (tests drive the hub this way)."""
        if self._timer is not None:
            self._timer.cancel()
        self._flush()

    def _flush(self) -> None:
        self._timer = None
        if self._loop is not None:
            self._last_flush = self._loop.time()
        if not self._views.synchronous:
            if self._flushing is None and self._loop is not None:
                self._flushing = self._loop.create_task(self._flush_remote())
            return  # a flush in progress re-arms itself for what arrived meanwhile
        dirty, self._dirty = self._dirty, []
        for watch in dirty:
            watch.queued = False
            if self._watches.get(watch.name) is not watch:
                continue  # every subscription left (and maybe a new watch took the name)
            try:
                self._check_period(watch)
                top = watch.top_dirty
                watch.top_dirty = False
                self._flush_watch(watch, top, self._rank_groups_due(watch))
            except Exception:
                # A bug here must not stop every later flush; the tests assert the log is clean.
                log.exception("hub flush failed for one board")

    def _check_period(self, watch: _Watch) -> None:
        """A ``period`` frame to every subscriber when the watched window rolled over, and
        the new state after it even where it looks the same (an empty top stays empty)."""
        wname, period = self._views.period_view(watch.board, watch.window)
        closed, was = watch.period, watch.wname
        watch.wname, watch.period = wname, period
        # Only a period that follows another of the same window: not a board that appeared,
        # vanished or was reconfigured.
        if period == closed or closed is None or period is None or wname != was:
            return
        frame: PeriodFrame = {"board": watch.board, "window": wname, "closed": closed,
                              "current": period}  # fmt: skip
        tail = "," + orjson.dumps(frame)[1:].decode()
        watch.top_dirty = True
        for group in watch.tops.values():
            group.stale = True
            for sub in group.subs:
                self._offer_period(sub, tail)
                sub.seen = _UNSEEN_TOP
        for rank in watch.members.values():
            rank.dirty = True
            for rsub in rank.subs:
                self._offer_period(rsub, tail)
                rsub.seen = _UNSEEN_RANK

    def _offer_period(self, sub: Subscription, tail: str) -> None:
        # Its own outbox key: the state frame that follows must not conflate it away.
        self.frames_offered += 1
        head = '{"type":"period","id":' + sub.head.split(',"id":', 1)[1]
        sub.peer.offer((sub, "period"), head + tail)

    async def _flush_remote(self) -> None:
        """The flush for views read over the network: load each dirty board, then compare."""
        try:
            while self._dirty:
                dirty, self._dirty = self._dirty, []
                for watch in dirty:
                    watch.queued = False
                    if self._watches.get(watch.name) is not watch:
                        continue
                    self._check_period(watch)
                    top = watch.top_dirty
                    watch.top_dirty = False
                    due = self._rank_groups_due(watch)
                    if not top and not due:
                        continue  # a write below every view: nothing to read
                    try:
                        await self._views.load(
                            watch.board, watch.max_top if top else 0, [g.member for g in due]
                        )
                    except Exception as exc:
                        # unreachable: keep what subscribers have; the feed re-announces the
                        # board once it re-subscribes, which brings this flush back
                        log.warning("hub: cannot read board views: %s", exc)
                        continue
                    try:
                        self._check_period(watch)  # what the load found (a board came or went)
                        self._flush_watch(watch, top, due)
                    except Exception:
                        log.exception("hub flush failed for one board")
                if self._dirty and self._loop is not None:
                    await asyncio.sleep(max(0.0, self._last_flush + self.tick - self._loop.time()))
                    self._last_flush = self._loop.time()
        finally:
            self._flushing = None
            if self._dirty and self._timer is None and self._loop is not None:
                self._timer = self._loop.call_at(self._loop.time(), self._flush)

    def _flush_watch(self, watch: _Watch, top: bool, due: list[_RankGroup]) -> None:
        epoch = self._views.epoch(watch.board)
        force = watch.epoch is not None and epoch != watch.epoch
        watch.epoch = epoch
        if force:  # history may have forked: everyone gets the full state again
            top = bool(watch.tops)
            due = list(watch.members.values())
        if top:
            self._flush_tops(watch, force)
        if due:
            self._send_ranks(watch, due, force)

    def _flush_tops(self, watch: _Watch, force: bool = False) -> None:
        # One read per dirty board per flush, sliced per N.
        entries, total, seq = self._views.top_view(watch.board, watch.max_top, watch.window)
        for n, group in watch.tops.items():
            view = entries[:n]
            if view == group.view and not group.stale and not force:
                continue
            group.view = view
            group.stale = False
            tail = None
            for sub in group.subs:
                seen = sub.seen
                if not force and (seen is view or seen == view):
                    continue
                if tail is None:
                    tail = self._top_tail(watch, total, seq, view)
                sub.seen = view
                self._offer(sub.peer, sub, sub.head + tail)

    def _rank_groups_due(self, watch: _Watch) -> list[_RankGroup]:
        """Rank groups that may have moved since the last flush (flags reset)."""
        lo, hi = watch.lo, watch.hi
        watch.lo, watch.hi = INF, 0
        if self._views.ranking(watch.board) != "ordinal":
            hi = INF  # shared ranks: any change above a member may move its rank (ranks.py)
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
            state = (rank, score)
            group.state = state
            tail = None
            for sub in group.subs:
                if sub.seen == state and not force:
                    continue
                if tail is None:
                    tail = self._rank_tail(watch, seq, member, state)
                sub.seen = state
                self._offer(sub.peer, sub, sub.head + tail)

    def _offer(self, peer: Peer, sub: Subscription, frame: str) -> None:
        self.frames_offered += 1
        peer.offer(sub, frame)

    # -- frames: '{"type":..,"id":..' (per subscription) + one shared tail ---------------------

    def _top_tail(self, watch: _Watch, total: int, seq: int, view: list[Entry]) -> str:
        body: TopTail = {
            "board": watch.board,
            "window": watch.wname,
            "period": watch.period,
            "total": total,
            "entries": view,
            "seq": seq,
            "epoch": self._views.epoch(watch.board),
        }
        return "," + orjson.dumps(body)[1:].decode()

    def _rank_tail(self, watch: _Watch, seq: int, member: str, state: tuple[Any, Any]) -> str:
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
        return "," + orjson.dumps(body)[1:].decode()

    def _check(self) -> None:
        """Every registered group is non-empty and counted; dirty bookkeeping is consistent."""
        count = 0
        for name, watch in self._watches.items():
            assert watch.name == name and watch, name
            assert watch.max_top == max(watch.tops, default=0)
            for n, top in watch.tops.items():
                assert top.n == n and top.subs
                assert all(s.group is top and s.board == name for s in top.subs)
                count += len(top.subs)
            for member, rank in watch.members.items():
                assert rank.member == member and rank.subs
                assert all(s.group is rank and s.board == name for s in rank.subs)
                count += len(rank.subs)
            assert watch.queued == (watch in self._dirty)
        assert count == self.subscriptions, (count, self.subscriptions)
        assert (self._timer is None) or bool(self._dirty) or self._flushing is not None
