"""When to tell them: the coalesced flush, local or over the network, and period rollovers.

Coalescing: a flush runs at most once per ``tick`` and only when something is dirty. The first
dirty mark after a quiet spell schedules it at ``max(now, last_flush + tick)``, so a lone write
goes out on the next loop turn and a burst goes out once per tick, the latest state winning.
A flush computes a dirty board's ``top(max_top)`` once, slices it per N, and looks up each
rank and around group the spans say may have moved (changes.py ``due``). It runs on its tick
even while the deliveries of the last one are still going: a view that changed again
upgrades its job (delivery.py), so a subscriber gets at most one frame per sweep, and the
latest state when its turn comes. (The remote flush still waits for them: its views are read
over the network, a round at a time.)

A sweep that outlasts the tick (thousands of subscribers of one view) does not wait for the
tick either: while the job at the head of the queue, at its pace so far, will take a tick or
more, each of its slices flushes first (``_pump``). The subscribers it has yet to reach get the
state as of that slice, not of the last tick, and those it passed get it from the next job,
which starts when this one ends: a write reaches everyone within about one sweep instead of up
to a tick plus one sweep. A subscriber's frames stay about a tick apart or more: the next job
starts when the going one ends, a sweep (projected at least a tick) after it began.

Periods: a flush compares the window's current period with the one the watch last showed: when
it changed (a ``broll``, or the clock crossing a boundary while the board was idle -- the
backend rolls idle boards within a second), every subscriber of the watch gets a ``period``
frame and then the new state, even if that state looks equal.

Views that live elsewhere (``views.synchronous`` False: the redis backend) are fetched before
they are read: ``prepare`` (hub.py) before a subscription's full state, and an asynchronous
flush that works out from the spans which views of a dirty board may have moved (``due``: the
top views, rank groups, around groups -- the same decisions the local flush makes), awaits
``views.load`` for exactly those, then compares and queues deliveries as the local flush does.
Each board carries an epoch (``views.epoch``); when it changes (a failover), every view of the
board is read again and queued as a forced job, which skips the "already seen" check: every
subscriber of the board gets its full state again, even an unchanged one.
"""

import asyncio
import logging
from typing import Any

import orjson

from service.backend.api import Entry
from service.hub.changes import due, everything
from service.hub.delivery import SLICE, Delivery
from service.hub.groups import AroundGroup, RankGroup, Watch
from service.schemas import PeriodFrame

log = logging.getLogger("rankd.ws")

# What a subscriber is known to have seen after a rollover: nothing it could equal again.
_UNSEEN_VIEW: list[Entry] = [{"rank": 0}]
_UNSEEN_RANK: tuple[Any, Any] = (object(), None)


class Flushing(Delivery):
    """The hub's flush scheduling and view comparison (a part of ``Hub``)."""

    tick: float
    _watches: dict[str, Watch]
    _dirty: list[Watch]
    _loop: asyncio.AbstractEventLoop | None
    _timer: asyncio.TimerHandle | None
    _last_flush: float
    _pumping: asyncio.Handle | None
    _flush_waiting: bool  # a remote flush came due while deliveries were still going
    _flushing: asyncio.Task[None] | None  # a remote flush loading views

    def flush(self) -> None:
        """Run the pending flush and every delivery now (tests drive the hub this way)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pump(None)
        self._flush()
        self._pump(None)

    def _schedule_flush(self) -> None:
        if self._timer is None and self._dirty and self._loop is not None:
            when = max(self._loop.time(), self._last_flush + self.tick)
            self._timer = self._loop.call_at(when, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if not self._views.synchronous:
            if self._jobs:
                # The last round is still being delivered: the next waits for it.
                self._flush_waiting = True
                return
            if self._flushing is None and self._loop is not None:
                self._last_flush = self._loop.time()
                self._flushing = self._loop.create_task(self._flush_remote())
            return  # a flush in progress re-arms itself for what arrived meanwhile
        self._flush_local()
        if self._pumping is None:  # else the deliveries under way go on at their pace
            self._pump(SLICE)

    def _flush_local(self) -> None:
        """Compare every dirty board's due views with what was shown; queue the changes."""
        if self._loop is not None:
            self._last_flush = self._loop.time()
        dirty, self._dirty = self._dirty, []
        for watch in dirty:
            watch.queued = False
            if self._watches.get(watch.name) is not watch:
                continue  # every subscription left (and maybe a new watch took the name)
            try:
                self._check_period(watch)
                top, ranks, arounds = due(self._views, watch)
                if self._epoch_changed(watch):
                    top, ranks, arounds = everything(watch)
                    self._flush_watch(watch, top, ranks, arounds, True)
                else:
                    self._flush_watch(watch, top, ranks, arounds, False)
            except Exception:
                # A bug here must not stop every later flush; the tests assert the log is clean.
                log.exception("hub flush failed for one board")

    def _pump(self, budget: int | None) -> None:
        """Deliver queued views, ``budget`` subscriptions at most (None: all), then yield."""
        self._pumping = None
        jobs = self._jobs
        loop = self._loop
        if (
            self._timer is not None
            and jobs
            and jobs[0].at
            and loop is not None
            and (loop.time() - jobs[0].started) * len(jobs[0].order) >= self.tick * jobs[0].at
            and self._views.synchronous
        ):  # a sweep that will outlast the tick at its pace so far: its next slice shows now
            self._timer.cancel()
            self._timer = None
            self._flush_local()
        left = budget if budget is not None else 1 << 62
        while jobs and left > 0:
            job = jobs[0]
            if job.at == 0 and loop is not None:
                job.started = loop.time()
            left = self._deliver(job, left)
            if job.at >= len(job.order):
                jobs.popleft()
                self._done(job)
        if jobs:
            assert self._loop is not None, "deliveries left without a loop to finish them"
            self._pumping = self._loop.call_soon(self._pump, SLICE)
        elif self._flush_waiting:
            self._flush_waiting = False
            self._schedule_flush()

    def _check_period(self, watch: Watch) -> bool:
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
                top, ranks, arounds = due(self._views, watch)
                if not top and not ranks and not arounds:
                    continue  # a write below every view: nothing to read
                try:
                    await self._load(watch, top, ranks, arounds)
                    force = self._epoch_changed(watch)
                    # a failover, or a period the load found (a board came or went): load
                    # everything the board's subscribers see
                    if self._check_period(watch) or force:
                        top, ranks, arounds = everything(watch)
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
        self, watch: Watch, top: bool, ranks: list[RankGroup], arounds: list[AroundGroup]
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

    def _epoch_changed(self, watch: Watch) -> bool:
        """Note the board's epoch; True when it moved since the last look (a failover)."""
        epoch = self._views.epoch(watch.board)
        changed = watch.epoch is not None and epoch != watch.epoch
        watch.epoch = epoch
        return changed

    def _flush_watch(
        self,
        watch: Watch,
        top: bool,
        ranks: list[RankGroup],
        arounds: list[AroundGroup],
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

    def _flush_tops(self, watch: Watch, force: bool = False) -> None:
        # One read per dirty board per flush, sliced per N.
        entries, total, seq = self._views.top_view(watch.board, watch.max_top, watch.window)
        for n, group in watch.tops.items():
            view = entries[:n]
            if view == group.view and not group.stale and not force:
                continue
            group.view = view
            group.stale = False
            self._fan_out(group.subs, view, force, self._top_tail, watch, total, seq, view)

    def _send_ranks(self, watch: Watch, due: list[RankGroup], force: bool) -> None:
        views, board, window = self._views, watch.board, watch.window
        for group in due:
            if watch.members.get(group.member) is not group:
                continue  # its last subscriber left while the views loaded
            member = group.member
            rank, score, seq, group.pos = views.rank_view(board, member, window)
            state = group.state = (rank, score)
            self._fan_out(group.subs, state, force, self._rank_tail, watch, seq, member, state)

    def _look_around(self, watch: Watch, group: AroundGroup, force: bool = False) -> None:
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
