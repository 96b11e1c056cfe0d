"""Delivery: a changed view queued as a job, then offered to its subscribers a slice at a time.

A flush (flush.py) compares each view the change detection says may have moved with the one
its group last showed, and queues a ``Job`` per changed view (``_fan_out``). ``_deliver`` then
offers the job's state to each subscription that has not seen it: the view is encoded once
(the *tail*, built on first need), framed once per distinct head (wire.py), and the same bytes
go to every subscriber with that head. Deliveries run ``SLICE`` subscriptions per loop turn, so
writes waiting on the loop get their turn during a large fan-out; a job is resumable (``at``)
and skips subscriptions that left meanwhile.

A view that changes again while its job is still going upgrades that job (``_fan_out``): the
subscriptions it has not reached yet get the newer state, and one more job brings it to those
it already passed. With 10,000 subscribers a sweep outlasts the tick, and a write waited for
the running sweep to end, then for its own sweep to reach it: ack -> frame p99 was about two
sweeps. Now it is at most one sweep (a sweep that will take a tick or more flushes before each
slice, flush.py ``_pump``), and no subscription gets more frames: at most one per sweep, each the
latest state when its turn comes. A group has at most two jobs queued (one going, one not
started, both carrying the latest state).

Frames are ``'{"type":..,"id":..'`` (per subscription) + one shared tail; ``total`` and
``seq`` ride along in every top and around frame, but a change of ``total`` alone (an insert
far below the view) wakes nobody: otherwise every write anywhere would fan out to every
subscriber of the board.
"""

from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from service.backend.api import Entry, Views
from service.hub.groups import Subscription, Watch
from service.hub.wire import ws_frame
from service.schemas import AroundTail, RankTail, TopTail

# Subscriptions visited per loop turn while delivering: ~2-4 ms of work, after which writes
# waiting on the loop get their turn (without it, a 10,000-subscriber flush held them ~150 ms).
SLICE = 256


class Job:
    """Deliveries of one changed view, resumable: ``order`` from ``at`` on is still to do."""

    __slots__ = (
        "args", "at", "force", "frames", "live", "order", "started", "state", "tail", "tail_of"
    )  # fmt: skip

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
        self.started = 0.0  # loop time of its first slice (flush.py ``_pump``)
        self.state = state
        self.force = force  # a failover: send even to subscribers that saw an equal state
        self.tail_of = tail_of
        self.args = args
        self.tail: bytes | None = None
        self.frames: dict[bytes, bytes] = {}

    def upgrade(self, state: Any, force: bool, tail_of: Callable[..., bytes], args: Any) -> None:
        """Deliver ``state`` instead, from ``at`` on (the view changed again meanwhile)."""
        self.state, self.tail_of, self.args = state, tail_of, args
        self.force = self.force or force
        self.tail = None
        self.frames = {}


class Delivery:
    """The hub's fan-out: its job queue and frame counters (a part of ``Hub``)."""

    _views: Views
    _jobs: deque[Job]
    _queued: dict[int, list[Job]]  # id(group's subs) -> its jobs in _jobs, oldest first
    frames_offered: int
    frames_encoded: int  # distinct frames built: offered / encoded is the sharing

    def _fan_out(
        self,
        subs: "dict[Any, None]",
        state: Any,
        force: bool,
        tail_of: Callable[..., bytes],
        *args: Any,
    ) -> None:
        """Queue ``state`` for every subscription of a group that has not seen it (``force``:
        for every subscription); a job of the group still queued is upgraded to it."""
        queued = self._queued.get(id(subs))
        if queued is not None:
            for job in queued:
                job.upgrade(state, force, tail_of, args)
            if queued[-1].at == 0:
                return  # not started: it takes the new state to everyone
        job = Job(subs, state, force, tail_of, args)
        self._jobs.append(job)
        if queued is None:
            self._queued[id(subs)] = [job]
        else:
            queued.append(job)  # for those the going one already passed

    def _done(self, job: Job) -> None:
        """``job`` left the queue."""
        queued = self._queued[id(job.live)]
        queued.remove(job)
        if not queued:
            del self._queued[id(job.live)]

    def _deliver(self, job: Job, budget: int) -> int:
        """Offer ``job.state`` to up to ``budget`` subscriptions; returns the budget left.

        The hot loop of the fan-out (once per subscriber per changed view): one encode per
        view, one frame per distinct head, then the same bytes to every subscriber. Heads are
        interned (wire.py ``intern_head``): subscribers that share an id share a frame by identity.
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

    def _offer_period(self, sub: Subscription, tail: bytes, frames: dict[bytes, bytes]) -> None:
        # Its own outbox key: the state frame that follows must not conflate it away.
        frame = frames.get(sub.head)
        if frame is None:
            head = b'{"type":"period","id":' + sub.head.split(b',"id":', 1)[1]
            frame = frames[sub.head] = self._frame(head, tail)
        self.frames_offered += 1
        sub.peer.offer((sub, "period"), frame)

    # -- frames: '{"type":..,"id":..' (per subscription) + one shared tail ---------------------

    def _top_tail(self, watch: Watch, total: int, seq: int, view: list[Entry]) -> bytes:
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

    def _rank_tail(self, watch: Watch, seq: int, member: str, state: tuple[Any, Any]) -> bytes:
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
        self, watch: Watch, member: str, total: int, seq: int, view: list[Entry]
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
