"""The hub's change detection against an oracle, in-process (no server, no sockets).

The hub skips work on purpose: a write below every subscribed top N wakes nobody, and a rank
or around group outside the span of ranks crossed since the last flush is not even looked up.
Each of those shortcuts is a chance to miss a change, so a seeded random workload (writes
under every update rule, deletes, drops, reconfigures, undos, subscribes and unsubscribes)
checks after every flush that each subscription's latest frame shows exactly the board's
current state, and that no subscription ever got two frames in a row showing the same state.
Around-me subscriptions are checked against the backend's ``around`` read, the one the HTTP
route answers with.
"""

import asyncio
import random
from typing import Any

import orjson
import pytest

from service.backend.embedded import EmbeddedBackend
from service.hub import MAX_RADIUS, SLICE, AroundSub, Hub, RankSub, Subscription, TopSub, ws_payload
from service.settings import Settings
from store.keyspace import Keyspace

BOARDS = ("a", "b", "c")
MEMBERS = [f"m{i}" for i in range(40)]


class FakePeer:
    """Records what the hub offers; the real Connection conflates, this one keeps everything."""

    def __init__(self, public_only: bool = False) -> None:
        self.send_started: float | None = None
        self.public_only = public_only
        self.frames: dict[object, list[dict[str, Any]]] = {}
        self.closed: tuple[int, str] | None = None

    def offer(self, key: object, frame: bytes) -> None:
        self.frames.setdefault(key, []).append(orjson.loads(ws_payload(frame)))

    def close_soon(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def _state(frame: dict[str, Any]) -> object:
    if frame["type"] in ("top", "around"):
        return frame["entries"]
    return (frame["rank"], frame["score"])


async def _check_sub(rt: EmbeddedBackend, peer: FakePeer, sub: Subscription, epoch: str) -> None:
    ks = rt._keyspace
    frames = peer.frames[sub]
    last = frames[-1]
    board = ks.find(sub.board)
    assert last["board"] == sub.board and last["epoch"] == epoch
    if isinstance(sub, TopSub):
        n = sub.group.n
        assert last["type"] == "top"
        assert last["entries"] == (board.top(0, n) if board else []), (sub.board, n)
    elif isinstance(sub, AroundSub):
        member, radius = sub.group.member, sub.group.radius
        assert last["type"] == "around" and last["member"] == member
        want_entries: list[Any] = []
        if board is not None and member in board:
            page = await rt.boards.around(sub.board, member, radius)  # what HTTP answers
            want_entries = page["entries"]
        assert last["entries"] == want_entries, (sub.board, member, radius)
    else:
        assert isinstance(sub, RankSub)
        member = sub.group.member
        want = (None, None)
        if board is not None and member in board:
            e = board.entry(member)
            want = (e["rank"], e["score"])
        assert (last["rank"], last["score"]) == want, (sub.board, member)
    if len(frames) > 1:
        assert _state(frames[-2]) != _state(last), "a frame that changed nothing"


def _write(ks: Keyspace, rng: random.Random, members: list[str] = MEMBERS) -> None:
    name = rng.choice(BOARDS)
    board = ks.find(name)
    roll = rng.random()
    if roll < 0.74:
        meta = {"n": rng.randrange(3)} if rng.random() < 0.3 else None
        ks.write(name, rng.choice(members), rng.randrange(-50, 200), meta)
    elif roll < 0.80:
        items: list[tuple[object, object, object]] = [
            (rng.choice(members), rng.randrange(-50, 200), None) for _ in range(rng.randint(1, 4))
        ]
        ks.write_many(name, items)
    elif roll < 0.92:
        if board is not None and len(board):
            board.remove(rng.choice([e["member"] for e in board.top(0, 1000)]))
    elif roll < 0.96:
        if board is not None:
            ks.configure(name, {"update": rng.choice(["best", "latest", "sum"])})
            # Shared ranks move further than the span a write crossed (service/hub.py).
            ks.configure(name, {"ranking": rng.choice(["ordinal", "competition", "dense"])})
    elif board is not None:
        ks.drop(name)
        if rng.random() < 0.5:
            ks.configure(
                name,
                {"order": rng.choice(["asc", "desc"]), "ties": rng.choice(["first", "member"])},
            )


async def _workload(
    seed: int, members: list[str] = MEMBERS, radii: tuple[int, ...] = (0, 1, 2, 5)
) -> None:
    rng = random.Random(seed)
    rt = EmbeddedBackend(Settings())
    ks = rt._keyspace
    hub = Hub(rt, rt.settings.limits)
    await hub.start()
    peers = [FakePeer() for _ in range(4)]
    live: list[tuple[FakePeer, Subscription]] = []
    n_id = 0
    # Events since the last "durable point": a journal failure undoes a tail of them.
    recent: list[tuple[Any, ...]] = []
    ks.observers.append(recent.append)
    for _ in range(400):
        for _ in range(rng.randrange(12)):
            _write(ks, rng, members)
        if rng.random() < 0.1 and recent:
            # Some of these writes may already have been flushed to subscribers; the undo's
            # own events must leave every subscriber showing the restored state.
            tail = recent[rng.randrange(len(recent)) :]
            ks.observers.remove(recent.append)
            for event in reversed(tail):
                ks.undo(event)
            ks.observers.append(recent.append)
            recent.clear()
        elif rng.random() < 0.3:
            recent.clear()  # the records so far became durable
        if rng.random() < 0.3 or not live:
            peer = rng.choice(peers)
            n_id += 1
            head = '{"type":"%s","id":' + str(n_id)
            board = rng.choice(BOARDS)
            roll = rng.random()
            if roll < 0.35:
                n = rng.choice([1, 2, 3, 5, 10, 25, 100])
                sub: Subscription = hub.subscribe_top(peer, head % "top", board, n)
            elif roll < 0.7:
                radius = rng.choice(radii)
                member = rng.choice(members)
                sub = hub.subscribe_around(peer, head % "around", board, member, radius)
            else:
                sub = hub.subscribe_rank(peer, head % "rank", board, rng.choice(members))
            live.append((peer, sub))
            # The full state on subscribe is already the truth, before any flush.
            await _check_sub(rt, peer, sub, rt.epoch)
        if rng.random() < 0.15 and live:
            _, gone = live.pop(rng.randrange(len(live)))
            hub.unsubscribe(gone)
        for _ in range(rng.randrange(6)):
            _write(ks, rng, members)
        hub.flush()
        hub._check()
        ks._check()
        for peer, sub in live:
            await _check_sub(rt, peer, sub, rt.epoch)
    offered = sum(len(f) for p in peers for f in p.frames.values())
    assert hub.frames_offered == offered
    await hub.stop()
    assert hub._on_board_event not in ks.observers


@pytest.mark.parametrize("seed", range(10))
def test_every_subscription_sees_the_truth_after_each_flush(seed: int) -> None:
    asyncio.run(_workload(seed))


@pytest.mark.parametrize("seed", range(3))
def test_around_windows_across_index_buckets(seed: int) -> None:
    # Boards of up to 400 entries and radii up to the maximum: windows straddle the around
    # index's buckets of 64 ranks, and spans cross bucket edges.
    many = [f"m{i}" for i in range(400)]
    asyncio.run(_workload(100 + seed, many, (0, 3, 30, MAX_RADIUS)))


async def _skips_far_writes() -> None:
    rt = EmbeddedBackend(Settings())
    ks = rt._keyspace
    hub = Hub(rt, rt.settings.limits)
    await hub.start()
    for i in range(200):
        ks.write("b", f"m{i}", 1000 - i)
    peer = FakePeer()
    top = hub.subscribe_top(peer, '{"type":"top","id":1', "b", 10)
    near = hub.subscribe_rank(peer, '{"type":"rank","id":2', "b", "m5")
    hub.flush()
    # New members and moves far below both views: nothing for anyone, no lookup needed.
    ks.write("b", "new", 1)
    ks.write("b", "m150", 1000 - 120)
    assert hub._watches["b"].lo > 10 and not hub._watches["b"].top_dirty
    hub.flush()
    assert len(peer.frames[top]) == 1 and len(peer.frames[near]) == 1
    # Overtaking m5 changes both.
    ks.write("b", "m100", 999)
    hub.flush()
    assert len(peer.frames[top]) == 2 and len(peer.frames[near]) == 2
    assert peer.frames[near][-1]["rank"] == 7
    await hub.stop()


def test_writes_outside_every_view_wake_nobody() -> None:
    asyncio.run(_skips_far_writes())


async def _session_events() -> None:
    rt = EmbeddedBackend(Settings())
    hub = Hub(rt, rt.settings.limits)
    await hub.start()
    bound, other = FakePeer(), FakePeer()
    s = rt._sessions.create(user="u")
    assert hub.attach(bound, s.id) and hub.attach(other, None)
    rt._sessions.rotate(s.id)
    assert bound.closed == (1008, "session rotated") and other.closed is None
    hub.detach(bound, s.id, [])
    hub.detach(other, None, [])
    assert not hub.peers and not hub._by_session
    await hub.stop()


def test_session_death_closes_bound_connections() -> None:
    asyncio.run(_session_events())


async def _public_read_off() -> None:
    rt = EmbeddedBackend(Settings())
    ks = rt._keyspace
    hub = Hub(rt, rt.settings.limits)
    await hub.start()
    ks.configure("b", {"public_read": True})
    ks.configure("c", {"public_read": True})
    keyed, top, rank, around, elsewhere = (
        FakePeer(),
        *(FakePeer(public_only=True) for _ in "1234"),
    )
    hub.subscribe_top(keyed, '{"type":"top","id":1', "b", 10)
    hub.subscribe_top(top, '{"type":"top","id":1', "b", 10)
    hub.subscribe_rank(rank, '{"type":"rank","id":1', "b", "m")
    hub.subscribe_around(around, '{"type":"around","id":1', "b", "m", 2)
    hub.subscribe_top(elsewhere, '{"type":"top","id":1', "c", 10)
    ks.configure("b", {"player_rate": 9})  # another option: public_read stays on
    hub._on_board_event(("bcfg", "b", {}, None, 0.0))  # the redis feed's gap event: config unknown
    assert all(p.closed is None for p in (keyed, top, rank, around, elsewhere))
    ks.configure("b", {"public_read": False})
    cut = (1008, "unauthorized: the board is no longer public")
    assert top.closed == rank.closed == around.closed == cut
    assert keyed.closed is None and elsewhere.closed is None
    await hub.stop()


def test_public_read_off_closes_the_anonymous_watchers_of_that_board_only() -> None:
    asyncio.run(_public_read_off())


async def _one_top_many_watchers(n: int) -> tuple[Hub, Keyspace, list[FakePeer], list[Any]]:
    """A started hub and ``n`` peers subscribed to board b's top 10, all with one id (so they
    share frames), and the keyspace to write to."""
    rt = EmbeddedBackend(Settings())
    hub = Hub(rt, rt.settings.limits)
    await hub.start()
    peers = [FakePeer() for _ in range(n)]
    subs = [hub.subscribe_top(p, '{"type":"top","id":"t"', "b", 10) for p in peers]
    return hub, rt._keyspace, peers, subs


async def _delivers_in_slices() -> None:
    hub, ks, peers, subs = await _one_top_many_watchers(3 * SLICE + 5)
    ks.write("b", "m", 1)
    hub._flush()  # as the timer runs it: the first slice now, the rest on later loop turns
    got = sum(len(p.frames[s]) == 2 for p, s in zip(peers, subs, strict=True))
    assert got == SLICE
    hub.unsubscribe(subs[-1])  # leaves before its turn: gets nothing more
    for _ in range(10):
        await asyncio.sleep(0)
    assert all(len(p.frames[s]) == 2 for p, s in zip(peers[:-1], subs, strict=False))
    assert len(peers[-1].frames[subs[-1]]) == 1
    assert hub.frames_encoded == len(peers) + 1  # one per subscribe, one shared by everyone
    ks.write("b", "n", 2)  # the next tick's (a write during a sweep: the test after this one)
    await asyncio.sleep(hub.tick + 0.05)
    for _ in range(10):
        await asyncio.sleep(0)
    assert all(len(p.frames[s]) == 3 for p, s in zip(peers[:-1], subs, strict=False))
    assert all(
        p.frames[s][-1]["entries"][0]["member"] == "n"
        for p, s in zip(peers, subs[:-1], strict=False)
    )
    hub._check()
    await hub.stop()


def test_a_big_fan_out_yields_to_the_loop_between_slices() -> None:
    asyncio.run(_delivers_in_slices())


async def _upgrades_a_sweep() -> None:
    """A view that changes again while its sweep is going: those the sweep has not reached get
    the newer state instead, those it passed get it next; nobody gets the older one late."""
    hub, ks, peers, subs = await _one_top_many_watchers(3 * SLICE + 5)

    def tops() -> list[list[str]]:
        """What each subscriber was shown on top, frame by frame after its first."""
        return [[f["entries"][0]["member"] for f in p.frames[s][1:]] for p, s in pairs]

    pairs = list(zip(peers, subs, strict=True))
    rest = len(peers) - SLICE
    ks.write("b", "m", 1)
    hub._flush()  # the first slice gets "m" now
    ks.write("b", "n", 2)
    hub._flush()  # the next tick, due while the sweep is going (as the timer runs it)
    hub._check()
    for _ in range(20):
        await asyncio.sleep(0)
    assert tops() == [["m", "n"]] * SLICE + [["n"]] * rest
    assert not hub._jobs and not hub._queued
    ks.write("b", "o", 3)
    for k in range(3):  # three ticks during one sweep: still two jobs for the group at most
        hub._flush()
        hub._check()
        ks.write("b", f"p{k}", 4 + k)
    hub.flush()  # the going sweep and the one after it (p1), then the last tick's (p2)
    assert tops() == [["m", "n", "o", "p1", "p2"]] * SLICE + [["n", "p1", "p2"]] * rest
    hub._check()
    await hub.stop()


def test_a_view_that_changes_during_its_sweep_upgrades_it() -> None:
    asyncio.run(_upgrades_a_sweep())


async def _long_sweep_flushes_per_slice() -> None:
    """A sweep on pace to take a tick or more flushes before each slice: the subscribers it
    has not reached get a write made meanwhile without waiting for the tick; a shorter one
    does not."""
    hub, ks, peers, subs = await _one_top_many_watchers(3 * SLICE + 5)
    hub.tick = 3600.0  # the timer never fires in this test: only the slices can flush
    pairs = list(zip(peers, subs, strict=True))

    def tops() -> list[list[str]]:
        return [[f["entries"][0]["member"] for f in p.frames[s][1:]] for p, s in pairs]

    ks.write("b", "m", 1)
    assert hub._timer is not None
    hub._timer.cancel()
    hub._flush()  # as the timer runs it: the first slice gets "m"; the sweep began just now
    ks.write("b", "n", 2)  # arms the timer, an hour away
    await asyncio.sleep(0)  # the second slice: the sweep is younger than the tick
    assert tops() == [["m"]] * (2 * SLICE) + [[]] * (len(pairs) - 2 * SLICE)
    assert hub._timer is not None
    hub._jobs[0].started -= hub.tick  # as if this sweep had been going for a tick
    for _ in range(10):
        await asyncio.sleep(0)
    rest = len(pairs) - 2 * SLICE
    assert tops() == [["m", "n"]] * (2 * SLICE) + [["n"]] * rest
    assert hub._timer is None and not hub._dirty and not hub._jobs
    hub._check()
    await hub.stop()


def test_a_sweep_that_outlasts_the_tick_shows_the_state_of_each_slice() -> None:
    asyncio.run(_long_sweep_flushes_per_slice())


async def _spans_across_buckets() -> None:
    rt = EmbeddedBackend(Settings())
    ks = rt._keyspace
    hub = Hub(rt, rt.settings.limits)
    await hub.start()
    for i in range(300):
        ks.write("b", f"m{i:03}", 10_000 - 10 * i)  # m059 at rank 60
    peer = FakePeer()
    near = hub.subscribe_around(peer, '{"type":"around","id":1', "b", "m059", 10)
    assert [e["rank"] for e in peer.frames[near][-1]["entries"]] == list(range(50, 71))
    ks.write("b", "m080", 10_000 - 10 * 80 + 1)  # rank 81 keeps its place: outside [50, 70]
    hub.flush()
    assert len(peer.frames[near]) == 1
    # Rank 66 sits in the index bucket after the one m059 (rank 60) is filed in; its window
    # reaches it all the same.
    ks.write("b", "m065", 10_000 - 10 * 65 + 1)
    hub.flush()
    assert len(peer.frames[near]) == 2
    assert peer.frames[near][-1]["entries"][16] == {
        "rank": 66,
        "member": "m065",
        "score": 10_000 - 10 * 65 + 1,
    }
    hub._check()
    await hub.stop()


def test_a_span_in_the_next_index_bucket_still_reaches_a_window() -> None:
    asyncio.run(_spans_across_buckets())


async def _epoch_change_resends() -> None:
    rt = EmbeddedBackend(Settings())
    ks = rt._keyspace
    hub = Hub(rt, rt.settings.limits)
    await hub.start()
    for i in range(20):
        ks.write("b", f"m{i:02}", 1000 - i)
    peers = [FakePeer() for _ in range(3)]
    subs: list[Subscription] = []
    for p in peers:  # three of each kind, so the forced job goes to a shared frame too
        subs.append(hub.subscribe_top(p, '{"type":"top","id":"t"', "b", 5))
        subs.append(hub.subscribe_rank(p, '{"type":"rank","id":"r"', "b", "m03"))
        subs.append(hub.subscribe_around(p, '{"type":"around","id":"a"', "b", "m04", 1))
    old = rt.views.epoch("b")
    ks.write("b", "low", -5)  # below every view: wakes nobody while the epoch stands
    hub.flush()
    assert all(len(p.frames[s]) == 1 for p in peers for s in subs if s.peer is p)
    # What a failover does to the redis backend's views: the same board, another history.
    rt.views._epoch = "after-failover"  # type: ignore[attr-defined]
    ks.write("b", "lower", -6)  # still below every view; the epoch alone forces the resend
    hub.flush()
    for p in peers:
        for s in subs:
            if s.peer is not p:
                continue
            first, last = p.frames[s]
            assert first["epoch"] == old and last["epoch"] == "after-failover"
            assert {k: v for k, v in first.items() if k not in ("epoch", "total", "seq")} == {
                k: v for k, v in last.items() if k not in ("epoch", "total", "seq")
            }
    ks.write("b", "lowest", -7)  # the new epoch now stands: quiet again
    hub.flush()
    assert all(len(p.frames[s]) == 2 for p in peers for s in subs if s.peer is p)
    hub._check()
    await hub.stop()


def test_an_epoch_change_sends_everyone_the_full_state_again() -> None:
    asyncio.run(_epoch_change_resends())
