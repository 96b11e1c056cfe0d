"""The WebSocket hub: who watches what, which writes can matter to them, and when to tell them.

``Hub`` is what service/ws.py and service/app.py use: connections attach and detach,
subscriptions come and go, and the hub listens to the backend's change feed
(service/backend/api.py) and reads views through it, never a store object. Its parts, one
concept per module:

    groups.py    the subscriptions, grouped per view, per watched board (the data structure)
    changes.py   change detection: the spans a write crossed, O(1) per write, never
                 O(subscribers); which views a flush must look at
    flush.py     when to tell them: the coalesced flush (local, or loading remote views first),
                 period rollovers, failover epochs
    delivery.py  the changed views queued as jobs and offered a slice of subscribers at a time
    wire.py      the pre-built WebSocket frames, shared per distinct head, and ``Peer``

    Hub._watches     dict key -> Watch         boards (or a window of one) somebody subscribed to
    Hub._windowed    dict board -> {key}       the watches of a board that name a window
    Hub._dirty       list of Watch             boards written since the last flush
    Hub._by_session  dict session id -> {peer} connections bound to a session

Observers run on the event-loop thread, as every store call in the service does. A session's
end closes the connections bound to it.
"""

import asyncio
import contextlib
from collections import deque
from typing import Any

from service.backend.api import Backend
from service.hub.changes import mark
from service.hub.delivery import Job
from service.hub.flush import Flushing
from service.hub.groups import (
    BUCKET,
    INF,
    MAX_RADIUS,
    MAX_TOP,
    AroundGroup,
    AroundSub,
    RankGroup,
    RankSub,
    Subscription,
    TopGroup,
    TopSub,
    Watch,
    watch_key,
)
from service.hub.wire import GOING_AWAY, POLICY, SEND_TIMEOUT, Peer
from service.settings import ServiceLimits
from store.events import BoardEvent, SessionEvent

WATCHDOG_INTERVAL = 1.0


class Hub(Flushing):
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
        self._watches: dict[str, Watch] = {}
        self._windowed: dict[str, set[str]] = {}  # board -> keys of watches naming a window
        self._dirty: list[Watch] = []
        self._by_session: dict[str, set[Peer]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = -INF
        self._watchdog: asyncio.Task[None] | None = None
        self._jobs: deque[Job] = deque()
        self._queued: dict[int, list[Job]] = {}
        self._pumping: asyncio.Handle | None = None
        self._flush_waiting = False  # a remote flush came due while deliveries were still going
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
        watch = self._watches.get(watch_key(name, window))
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
            group = watch.tops[n] = TopGroup(n)
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
            group = watch.members[member] = RankGroup(member)
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
            group = radii[radius] = AroundGroup(member, radius)
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

    def _watch(self, board: str, window: str | None) -> Watch:
        name = watch_key(board, window)
        watch = self._watches.get(name)
        if watch is None:
            watch = self._watches[name] = Watch(name, board, window, self._views)
            if window is not None:
                self._windowed.setdefault(board, set()).add(name)
        return watch

    # -- observers -----------------------------------------------------------------------------

    def _on_board_event(self, event: BoardEvent) -> None:
        # A known config without public_read (the redis feed's gap events carry none): the
        # board stopped being public, and credential-less watchers lose it at once.
        private = event[0] == "bcfg" and bool(event[2]) and not event[2].get("public_read")
        windowed = self._windowed.get(event[1])
        if windowed:
            for key in windowed:
                self._mark(self._watches[key], event)
                if private:
                    self._close_anonymous(self._watches[key])
        watch = self._watches.get(event[1])
        if watch is not None:
            self._mark(watch, event)
            if private:
                self._close_anonymous(watch)

    def _close_anonymous(self, watch: Watch) -> None:
        """Close (1008) every connection without a credential that watches ``watch``'s board,
        as a revoked session's are. O(subscriptions of the board): only on a reconfigure."""
        groups: list[Any] = [
            *watch.tops.values(),
            *watch.members.values(),
            *(g for radii in watch.arounds.values() for g in radii.values()),
        ]
        for group in groups:
            for sub in group.subs:
                if sub.peer.public_only:
                    # Not the board's name: a close reason holds at most 123 bytes.
                    sub.peer.close_soon(POLICY, "unauthorized: the board is no longer public")

    def _mark(self, watch: Watch, event: BoardEvent) -> None:
        mark(watch, event)
        if not watch.queued:
            watch.queued = True
            self._dirty.append(watch)
            if not self._flush_waiting:
                self._schedule_flush()

    def _on_session_event(self, event: SessionEvent) -> None:
        if event[0] != "sdel":
            return
        peers = self._by_session.pop(event[1], None)
        for peer in peers or ():
            # reason: deleted | expired | revoked | rotated | evicted. Never the id: it is a
            # credential.
            peer.close_soon(POLICY, f"session {event[2]}")

    def _check(self) -> None:
        """Every registered group is non-empty and counted; dirty bookkeeping is consistent."""
        count = 0
        for name, watch in self._watches.items():
            indexed = 0
            assert watch.name == name == watch_key(watch.board, watch.window) and watch, name
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
        # Each queued job is filed under its group, at most two per group, one not started.
        queued = sorted(id(j) for js in self._queued.values() for j in js)
        assert sorted(map(id, self._jobs)) == queued
        for key, jobs in self._queued.items():
            assert jobs and len(jobs) <= 2 and all(id(j.live) == key for j in jobs), key
            assert all(j.at == 0 for j in jobs[1:])
