"""Undo against an oracle: reverting every event after a point restores the state at that point.

This is what a journal failure with fsync=always does (service/backend/journal_flusher.py, "Undo"):
the records after the last durable one are lost, so their events are undone, newest first.
The oracle is the state itself, recorded at the "last durable record": after the undo the
store must equal it exactly -- entries with their tie order (seq inside the key) and metadata,
board options, sessions with data, version and deadlines -- except for what expired in the
meantime, which undo never brings back. ``_check()`` runs after every step.
"""

import random
from typing import Any

import pytest

from store.boards import Event
from store.clock import ManualClock
from store.disk.rows import session_row
from store.errors import StoreError
from store.events import StoreEvent
from store.keyspace import Keyspace
from store.sessions import SessionStore

SEEDS = range(40)
STEPS = 400


def state(ks: Keyspace, ss: SessionStore, now: float) -> dict[str, Any]:
    return {
        "boards": {
            b.name: (b.config.as_dict(), [(m, s, q, meta) for m, s, q, meta in b.dump()])
            for b in ks
        },
        "sessions": sorted(tuple(session_row(s)) for s in ss.sessions() if s.expires_at > now),
    }


def mutate(rng: random.Random, ks: Keyspace, ss: SessionStore, clock: ManualClock) -> None:
    """One random mutation of any kind the service makes; refusals are part of the mix."""
    boards = [f"b{i}" for i in range(3)]
    name = rng.choice(boards)
    members = [f"m{i}" for i in range(12)]
    live = [s.id for s in ss.sessions() if s.expires_at > clock.now()]
    roll = rng.random()
    try:
        if roll < 0.30:
            meta = {"i": rng.randrange(9)} if rng.random() < 0.3 else None
            ks.write(name, rng.choice(members), rng.randint(-5, 20), meta)
        elif roll < 0.38:
            items: list[tuple[object, object, object]] = [
                (rng.choice(members), rng.randint(0, 9), None) for _ in range(rng.randint(1, 5))
            ]
            ks.write_many(name, items)
        elif roll < 0.43:
            options = rng.choice(
                [{"update": "sum"}, {"update": "latest"}, {"update": "best"}, {"order": "asc"}]
            )
            ks.configure(name, options)
        elif roll < 0.46:
            ks.drop(name)
        elif roll < 0.52:
            ks.get(name).remove(rng.choice(members))
        elif roll < 0.62:
            ss.create(user=rng.choice(["ann", "bob", None]), data={"n": rng.randrange(5)}, ttl=30)
        elif roll < 0.70 and live:
            ss.patch(rng.choice(live), {"k": rng.randrange(4)})
        elif roll < 0.74 and live:
            ss.replace(rng.choice(live), {"r": rng.randrange(3)})
        elif roll < 0.80 and live:
            ss.get(rng.choice(live))  # a touch
        elif roll < 0.85 and live:
            ss.rotate(rng.choice(live))
        elif roll < 0.89 and live:
            ss.delete(rng.choice(live))
        elif roll < 0.92:
            ss.revoke_user(rng.choice(["ann", "bob"]), except_id=rng.choice([*live, None]))
        elif roll < 0.97:
            clock.advance(rng.choice([0.5, 3, 12]))
        else:
            ss.purge()
    except StoreError:
        pass


@pytest.mark.parametrize("seed", SEEDS)
def test_undoing_the_lost_tail_restores_the_durable_state(seed: int) -> None:
    rng = random.Random(seed)
    clock = ManualClock()
    ks, ss = Keyspace(), SessionStore(clock)
    events: list[StoreEvent] = []
    ks.observers.append(events.append)
    ss.observers.append(events.append)
    for _ in range(rng.randrange(STEPS)):
        mutate(rng, ks, ss, clock)
    durable = len(events)
    expected = state(ks, ss, clock.now())
    seqs = {b.name: b.seq for b in ks}
    for _ in range(rng.randrange(1, 60)):
        mutate(rng, ks, ss, clock)
        ks._check()
        ss._check()
    lost = events[durable:]
    compensating: list[StoreEvent] = []
    ks.observers[:] = [compensating.append]
    ss.observers[:] = [compensating.append]
    for event in reversed(lost):
        if event[0] == "sput" or event[0] == "stouch" or event[0] == "sdel":
            ss.undo(event)
        else:
            ks.undo(event)
        ks._check()
        ss._check()
    now = clock.now()
    # What expired since the durable point stays expired: compare what is alive now.
    expected["sessions"] = [s for s in expected["sessions"] if min(s[5], s[6]) > now]
    assert state(ks, ss, now) == expected
    # A board's write counter never goes back, so no subscriber sees an old seq again.
    for b in ks:
        assert b.seq >= seqs.get(b.name, 0)
    # Only board events are announced (the hub must redraw); sessions stay silent.
    assert all(e[0] in ("bset", "bdel", "bcfg", "bdrop") for e in compensating)


def test_an_undone_write_is_announced_with_its_restored_rank() -> None:
    ks = Keyspace()
    ks.write("b", "a", 10)
    ks.write("b", "b", 5)
    events: list[Event] = []
    ks.observers.append(events.append)
    ks.write("b", "b", 20)  # b overtakes a
    seq = ks.get("b").seq
    ks.undo(events[0])
    assert [e["member"] for e in ks.get("b").top()] == ["a", "b"]
    announced = events[1]
    assert announced[:3] == ("bset", "b", "b") and announced[3] == 5
    assert (announced[6], announced[7]) == (2, 1)  # rank now, rank while the write showed
    assert ks.get("b").seq == seq + 1


def test_a_batch_is_one_event_and_undoes_as_a_whole() -> None:
    ks = Keyspace()
    ks.configure("b", {"update": "sum"})
    ks.write("b", "a", 1)
    events: list[Event] = []
    ks.observers.append(events.append)
    ks.write_many("b", [("a", 2, None), ("c", 3, None), ("a", 4, None)])
    assert [e[0] for e in events] == ["bbatch"] and len(events[0][2]) == 3
    ks.undo(events[0])
    assert [(e["member"], e["score"]) for e in ks.get("b").top()] == [("a", 1)]
    ks._check()
