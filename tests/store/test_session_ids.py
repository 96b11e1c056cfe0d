"""Caller-chosen ids and the ended-id memory against a dict model (seeded, fixed ops).

Model: id -> ("live", user, created_at) or ("ended", refused_until). Every create with a
chosen id must answer exactly as the model says: created, SessionExists or SessionEnded.
"""

import random

import pytest

from store import sessions
from store.clock import ManualClock
from store.ended import EndedIds
from store.errors import SessionEnded, SessionExists, SessionNotFound
from store.events import SessionEvent
from store.sessions import SessionStore

T0 = 1_700_000_000.0
WINDOW = 50  # max_ttl: how long an ended id stays refused
POOL = [f"{c}" * 32 for c in "abcdefghijklmnop"] + [f"id_{i:029d}" for i in range(16)]


@pytest.mark.parametrize("seed", range(12))
def test_chosen_ids_against_a_model(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    ids = random.Random(seed + 1000)  # rankd's own ids (rotate) from the seed too
    monkeypatch.setattr(sessions, "new_session_id", lambda: f"r{ids.getrandbits(128):032x}")
    clock = ManualClock(T0)
    limit = 3
    store = SessionStore(
        clock, default_ttl=20, max_ttl=WINDOW, max_sessions_per_user=limit, shard_bits=1
    )
    live: dict[str, tuple[str, float]] = {}  # id -> (user, created_at)
    ended: dict[str, float] = {}  # id -> refused until
    expires: dict[str, float] = {}  # id -> idle deadline (no touch in this test but create)

    def end(sid: str) -> None:
        del live[sid]
        del expires[sid]
        ended[sid] = clock.now() + WINDOW

    def expire_due() -> None:
        for sid, d in [(s, d) for s, d in expires.items() if d <= clock.now()]:
            del live[sid]
            del expires[sid]
            ended[sid] = max(ended.get(sid, 0.0), d + WINDOW)  # ended at its deadline

    for _ in range(1500):
        op = rng.random()
        clock.advance(0.001)  # distinct created_at: "the oldest" is never a tie
        expire_due()
        if op < 0.45:
            sid = rng.choice(POOL)
            user = rng.choice(["ann", "bob"])
            refused = ended.get(sid, 0.0) > clock.now()
            if sid in live:
                with pytest.raises(SessionExists):
                    store.create(sid=sid, user=user)
            elif refused:
                with pytest.raises(SessionEnded):
                    store.create(sid=sid, user=user)
            else:
                mine = sorted((c, s) for s, (u, c) in live.items() if u == user)
                s = store.create(sid=sid, user=user)
                assert s.id == sid
                if len(mine) >= limit:  # evict-oldest: the oldest of the user ends
                    end(mine[0][1])
                live[sid] = (user, clock.now())
                expires[sid] = clock.now() + 20
                ended.pop(sid, None)
        elif op < 0.6 and live:
            sid = rng.choice(sorted(live))
            store.delete(sid)
            end(sid)
        elif op < 0.7 and live:
            sid = rng.choice(sorted(live))
            fresh = store.rotate(sid)  # the new id is rankd's own: keep it in the model
            user, created = live[sid]
            deadline = expires[sid]
            end(sid)
            live[fresh.id] = (user, created)
            expires[fresh.id] = max(deadline, clock.now() + 20)
        elif op < 0.75:
            user = rng.choice(["ann", "bob"])
            n = store.revoke_user(user)
            victims = [s for s, (u, _) in live.items() if u == user]
            assert n == len(victims)
            for sid in victims:
                end(sid)
        elif op < 0.9:
            clock.advance(rng.choice([0.5, 1, 3, 7]))
            store.purge(max_items=rng.randint(1, 20))
        else:
            sid = rng.choice(POOL)
            if sid in live:
                assert store.get(sid, touch=False).id == sid
            else:
                with pytest.raises(SessionNotFound):
                    store.get(sid, touch=False)
        store._check()
        store.ended._check()
    # Everything the model still refuses is refused by the store's memory, and vice versa for
    # ids in the pool (the memory may hold more: rankd's own rotated ids).
    for sid in POOL:
        assert store.ended.ended(sid, clock.now()) == (ended.get(sid, 0.0) > clock.now()), sid


def test_the_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    e = EndedIds(window=100, limit=3)
    for i, sid in enumerate(["a" * 32, "b" * 32, "c" * 32, "d" * 32]):
        e.remember(sid, T0 + i)
    assert len(e) == 3 and e.forgotten_early == 1
    assert not e.ended("a" * 32, T0 + 10)  # the oldest went first
    assert all(e.ended(c * 32, T0 + 10) for c in "bcd")
    e.forget("b" * 32)  # an undone end
    assert not e.ended("b" * 32, T0 + 10)
    assert e.ended("d" * 32, T0 + 102.9) and not e.ended("d" * 32, T0 + 103)
    e.purge(T0 + 200, 10)
    assert len(e) == 0
    e._check()


def test_an_undone_end_frees_the_id_and_an_undone_create_is_no_end() -> None:
    clock = ManualClock(T0)
    store = SessionStore(clock, default_ttl=30, max_ttl=60)
    events: list[SessionEvent] = []
    store.observers.append(events.append)
    sid = "u" * 40
    s = store.create(sid=sid)
    store.undo(events[-1])  # the create's journal record was lost: it never happened
    assert sid not in store and not store.ended.ended(sid, clock.now())
    s = store.create(sid=sid)  # so the caller's retry succeeds
    store.delete(s.id)
    store.undo(events[-1])  # the delete's record was lost: the id must keep working
    assert store.get(sid).id == sid and not store.ended.ended(sid, clock.now())
    store._check()
