"""SessionStore: expiry (lazy, purged, idle vs absolute), no resurrection, the per-user index,
validation, events and the persistence hooks. Time is a ManualClock; nothing sleeps."""

import datetime
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)

from store.clock import ManualClock
from store.errors import (
    InvalidArgument,
    LimitExceeded,
    SessionNotFound,
    TooManySessions,
    VersionConflict,
)
from store.sessions import Session, SessionStore, new_session_id

Event = tuple[Any, ...]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def store(clock: ManualClock, events: list[Event]) -> SessionStore:
    s = SessionStore(clock)
    s.observers.append(events.append)
    return s


# -- expiry ----------------------------------------------------------------------------------


def test_lazy_expiry_with_the_purge_off(
    store: SessionStore, clock: ManualClock, events: list[Event]
) -> None:
    s = store.create(ttl=10)
    clock.advance(9.999)
    assert s.id in store
    assert store.get(s.id, touch=False) is s
    clock.advance(0.001)  # exactly at the deadline: dead
    assert s.id not in store
    assert len(store) == 1  # `in` only looks
    events.clear()
    with pytest.raises(SessionNotFound):
        store.get(s.id)
    assert [e[:3] for e in events] == [("sdel", s.id, "expired")]  # the read said so
    assert len(store) == 0 and store.counters["expired"] == 1
    store._check()


def test_purge_reclaims_never_read_sessions(store: SessionStore, clock: ManualClock) -> None:
    short = [store.create(user=f"u{i % 7}", ttl=5) for i in range(30)]
    long = [store.create(user=f"u{i % 7}", ttl=3600) for i in range(30)]
    unlimited = [
        store.create(ttl=store.max_ttl, max_lifetime=store.max_lifetime_limit) for _ in range(30)
    ]
    store._check()
    clock.advance(5)
    assert store.next_deadline() is not None
    clock.advance(1)  # the purge reclaims up to 1 s late; reads never see that
    while (due := store.purge()) is not None and due <= clock.now():
        pass
    assert len(store) == 60
    assert store.counters["expired"] == 30
    assert not any(s.id in store for s in short)
    assert all(s.id in store for s in long + unlimited)
    assert all(store.get(s.id, touch=False).version == 1 for s in long + unlimited)
    store._check()


def test_idle_timeout_is_refreshed_but_the_absolute_one_is_not(
    store: SessionStore, clock: ManualClock
) -> None:
    s = store.create(ttl=10, max_lifetime=100)
    for _ in range(99):
        clock.advance(1)
        store.touch(s.id)
        store._check()
    assert s.expires_at == s.max_expires_at == s.created_at + 100
    assert s.idle_deadline == clock.now() + 10  # idle would go on; the cap wins
    clock.advance(1)
    with pytest.raises(SessionNotFound):
        store.touch(s.id)
    # and idle alone kills a session nobody uses
    t = store.create(ttl=10, max_lifetime=100)
    clock.advance(9)
    store.get(t.id)
    clock.advance(9.5)
    assert t.id in store
    clock.advance(0.5)
    assert t.id not in store
    store._check()


def test_a_clock_stepping_back_never_shortens_a_session(
    store: SessionStore, clock: ManualClock, events: list[Event]
) -> None:
    s = store.create(ttl=100)
    before = s.expires_at
    clock.advance(-50)
    events.clear()
    store.touch(s.id)
    assert s.expires_at == before and events == []  # no movement, no record
    store._check()


# -- nothing resurrects ----------------------------------------------------------------------

WRITES: dict[str, Callable[[SessionStore, str], object]] = {
    "get": lambda st, sid: st.get(sid),
    "peek": lambda st, sid: st.get(sid, touch=False),
    "touch": lambda st, sid: st.touch(sid),
    "patch": lambda st, sid: st.patch(sid, {"x": 1}),
    "put": lambda st, sid: st.replace(sid, {"x": 1}),
    "rotate": lambda st, sid: st.rotate(sid),
    "delete": lambda st, sid: st.delete(sid),
}


@pytest.mark.parametrize("op", WRITES)
@pytest.mark.parametrize("death", ["deleted", "revoked", "rotated", "expired", "purged"])
def test_no_resurrection(
    store: SessionStore, clock: ManualClock, events: list[Event], op: str, death: str
) -> None:
    s = store.create(user="alice", ttl=60)
    sid = s.id
    if death == "deleted":
        store.delete(sid)
    elif death == "revoked":
        store.revoke_user("alice")
    elif death == "rotated":
        store.rotate(sid)
    else:
        clock.advance(60)  # due now; "expired": not purged yet
        if death == "purged":
            clock.advance(1)
            store.purge()
            assert store.counters["expired"] == 1
    n = len(store)
    events.clear()
    with pytest.raises(SessionNotFound):
        WRITES[op](store, sid)
    assert sid not in store
    with pytest.raises(SessionNotFound):
        store.get(sid, touch=False)
    assert not [e for e in events if e[0] != "sdel"]  # nothing written for a dead id
    assert len(store) == (n - 1 if death == "expired" else n)  # the read reclaimed it
    assert all(x.id != sid for x in store.list_user("alice"))
    store._check()


def test_a_write_racing_a_logout_is_refused(store: SessionStore, events: list[Event]) -> None:
    # Two requests hold the same session; the logout lands first, then the write.
    s = store.create(user="alice", data={"cart": [1]})
    seen = store.get(s.id)
    store.delete(s.id)
    with pytest.raises(SessionNotFound):  # not a VersionConflict, not an upsert
        store.patch(seen.id, {"cart": [1, 2]}, if_version=seen.version)
    with pytest.raises(SessionNotFound):
        store.replace(seen.id, {"cart": []})
    assert events[-1][:3] == ("sdel", s.id, "deleted")
    assert store.list_user("alice") == [] and len(store) == 0
    store._check()


def test_a_write_from_an_observer_of_the_logout_is_refused(store: SessionStore) -> None:
    # The WebSocket layer reacts to "sdel" synchronously; a write it triggers must not
    # bring the session back, and it must find the store consistent.
    s = store.create(user="alice")
    outcome: list[str] = []

    def on_event(event: Event) -> None:
        if event[0] == "sdel":
            store._check()
            try:
                store.patch(event[1], {"late": True})
            except SessionNotFound:
                outcome.append("refused")

    store.observers.append(on_event)
    store.delete(s.id)
    assert outcome == ["refused"] and s.id not in store
    store._check()


# -- per-user index --------------------------------------------------------------------------


class UserIndexMachine(RuleBasedStateMachine):
    """Any mix of create/expire/delete/rotate/revoke/patch/purge against a plain-dict model."""

    sids = Bundle("sids")
    USERS = ("ann", "bob", "cy")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        # Two shards: the users and their sessions' ids fall on both sides of a shard boundary.
        self.store = SessionStore(self.clock, max_sessions_per_user=4, shard_bits=1)
        # model: sid -> [user, idle_deadline, max_expires_at, ttl]
        self.model: dict[str, list[Any]] = {}

    def live(self, sid: str) -> bool:
        m = self.model.get(sid)
        return m is not None and min(m[1], m[2]) > self.clock.now()

    def live_of(self, user: str) -> set[str]:
        return {sid for sid, m in self.model.items() if m[0] == user and self.live(sid)}

    @rule(
        target=sids,
        user=st.sampled_from((*USERS, None)),
        ttl=st.integers(1, 20),
        life=st.integers(1, 40),
    )
    def create(self, user: str | None, ttl: int, life: int) -> Any:
        full = user is not None and len(self.live_of(user)) >= 4
        try:
            s = self.store.create(user=user, ttl=ttl, max_lifetime=life)
        except LimitExceeded:
            assert full
            return multiple()
        assert not full
        now = self.clock.now()
        self.model[s.id] = [user, now + ttl, now + life, ttl]
        return s.id

    @rule(seconds=st.sampled_from((0.5, 1, 3, 7)))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(sid=sids)
    def touch(self, sid: str) -> None:
        if self.live(sid):
            self.store.touch(sid)
            m = self.model[sid]
            m[1] = max(m[1], self.clock.now() + m[3])
        else:
            with pytest.raises(SessionNotFound):
                self.store.touch(sid)

    @rule(sid=consumes(sids))
    def delete(self, sid: str) -> None:
        if self.live(sid):
            self.store.delete(sid)
        else:
            with pytest.raises(SessionNotFound):
                self.store.delete(sid)
        self.model.pop(sid, None)

    @rule(target=sids, sid=consumes(sids))
    def rotate(self, sid: str) -> Any:
        if not self.live(sid):
            with pytest.raises(SessionNotFound):
                self.store.rotate(sid)
            return multiple()
        new = self.store.rotate(sid)
        m = self.model.pop(sid)
        m[1] = max(m[1], self.clock.now() + m[3])
        self.model[new.id] = m
        return new.id

    @rule(user=st.sampled_from(USERS), keep=st.booleans())
    def revoke(self, user: str, keep: bool) -> None:
        mine = sorted(self.live_of(user))
        except_id = mine[0] if keep and mine else None
        assert self.store.revoke_user(user, except_id=except_id) == len(mine) - bool(except_id)
        for sid in mine:
            if sid != except_id:
                del self.model[sid]

    @rule(batch=st.integers(1, 5))
    def purge(self, batch: int) -> None:
        self.store.purge(max_items=batch)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def patch(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(list(self.model)))
        if self.live(sid):
            self.store.patch(sid, {"n": data.draw(st.integers(0, 3))})
            m = self.model[sid]
            m[1] = max(m[1], self.clock.now() + m[3])
        else:
            with pytest.raises(SessionNotFound):
                self.store.patch(sid, {"n": 1})

    @invariant()
    def user_index_is_ground_truth(self) -> None:
        self.store._check()
        for user in self.USERS:
            assert {s.id for s in self.store.list_user(user)} == self.live_of(user)
        live = {sid for sid in self.model if self.live(sid)}
        assert {s.id for s in self.store.sessions() if s.id in self.store} == live
        for sid in live:
            s = self.store.get(sid, touch=False)
            assert (s.idle_deadline, s.max_expires_at) == tuple(self.model[sid][1:3])
        self.store._check()


UserIndexMachine.TestCase.settings = settings(
    derandomize=True, database=None, max_examples=60, stateful_step_count=40, deadline=None
)
TestUserIndex = UserIndexMachine.TestCase


def test_list_user_is_oldest_first_and_live_only(store: SessionStore, clock: ManualClock) -> None:
    a = store.create(user="ann", ttl=100)
    clock.advance(1)
    b = store.create(user="ann", ttl=5)
    clock.advance(1)
    c = store.create(user="ann", ttl=100)
    a2 = store.rotate(a.id)  # a new id, but as old as the login it continues
    assert [s.id for s in store.list_user("ann")] == [a2.id, b.id, c.id]
    clock.advance(5)
    assert [s.id for s in store.list_user("ann")] == [a2.id, c.id]
    assert store.list_user("nobody") == []
    store._check()


def test_revoke_user_keeps_one_and_counts_only_live(
    store: SessionStore, clock: ManualClock, events: list[Event]
) -> None:
    keep = store.create(user="ann")
    others = [store.create(user="ann") for _ in range(3)]
    stale = store.create(user="ann", ttl=1)
    bob = store.create(user="bob")
    clock.advance(1)
    events.clear()
    assert store.revoke_user("ann", except_id=keep.id) == 3
    assert sorted(e[:3] for e in events) == sorted(
        [("sdel", s.id, "revoked") for s in others] + [("sdel", stale.id, "expired")]
    )
    assert [s.id for s in store.list_user("ann")] == [keep.id]
    assert bob.id in store
    assert store.revoke_user("ann") == 1 and store.list_user("ann") == []
    assert store.counters["revoked"] == 4
    store._check()


def test_per_user_limit_with_policy_refuse_refuses_instead_of_evicting(clock: ManualClock) -> None:
    store = SessionStore(clock, max_sessions_per_user=3, over_limit="refuse")
    first = [store.create(user="ann", ttl=10), store.create(user="ann"), store.create(user="ann")]
    with pytest.raises(TooManySessions, match=r"'ann' already has 3 sessions, the limit is 3"):
        store.create(user="ann")
    assert all(s.id in store for s in first)  # nobody was logged out to make room
    store.rotate(first[1].id)  # a rotation is not a new session
    store.create(user="bob")  # other users are not affected
    clock.advance(10)  # the first one expires: its slot is free, purged or not
    store.create(user="ann")
    store._check()


def test_per_user_limit_evicts_the_oldest_by_default(clock: ManualClock) -> None:
    store = SessionStore(clock, max_sessions_per_user=3)
    events: list[tuple[Any, ...]] = []
    store.observers.append(events.append)
    first = []
    for _ in range(3):
        first.append(store.create(user="ann"))
        clock.advance(1)
    rotated = store.rotate(first[0].id)  # keeps created_at: still the oldest
    events.clear()
    fourth = store.create(user="ann")
    assert rotated.id not in store and [s.id for s in store.list_user("ann")] == [
        first[1].id,
        first[2].id,
        fourth.id,
    ]
    # The end is an sdel like any other (the hub closes its WebSockets), before the new one.
    assert [(e[0], e[2] if e[0] == "sdel" else None) for e in events] == [
        ("sdel", "evicted"),
        ("sput", None),
    ]
    assert events[0][1] == rotated.id and store.counters["evicted"] == 1
    assert store.ended.ended(rotated.id, clock.now())  # an evicted id never comes back
    clock.advance(10_000)  # all idle-expired: nobody needs evicting
    store.create(user="ann")
    assert store.counters["evicted"] == 1
    store._check()


def test_over_limit_policy_is_validated(clock: ManualClock) -> None:
    with pytest.raises(InvalidArgument, match="over_limit must be one of evict-oldest, refuse"):
        SessionStore(clock, over_limit="drop-newest")


# -- validation ------------------------------------------------------------------------------

BAD_SECONDS = [0, -1, -(10**9), 10**9, 10**5000, 1.5, 30.0, math.nan, "30", True, False, [30]]
BAD_IDS = ["0", "-1", "-1e9", "1e9", "1e5000", "1.5", "30.0", "nan", "str", "True", "False", "list"]


@pytest.mark.parametrize("field", ["ttl", "max_lifetime"])
@pytest.mark.parametrize("bad", BAD_SECONDS, ids=BAD_IDS)
def test_ttl_validation(store: SessionStore, field: str, bad: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        store.create(**{field: bad})  # type: ignore[arg-type]
    msg = str(info.value)
    assert msg.startswith(field) and "but got" in msg
    if not (isinstance(bad, int) and bad > 10**100):
        assert repr(bad) in msg  # the message quotes the bad value
    assert len(msg) < 200  # even for a 5000-digit integer
    assert len(store) == 0


def test_ttl_bounds_are_inclusive(store: SessionStore) -> None:
    store.create(ttl=1, max_lifetime=1)
    store.create(ttl=store.max_ttl, max_lifetime=store.max_lifetime_limit)
    with pytest.raises(LimitExceeded):
        store.create(ttl=store.max_ttl + 1)
    with pytest.raises(LimitExceeded):
        store.create(max_lifetime=store.max_lifetime_limit + 1)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        "{}",
        {1: "x"},
        {"a": {2: "x"}},
        {"a": math.nan},
        {"a": math.inf},
        {"a": datetime.datetime(2024, 1, 1)},
        {"a": (1, 2)},
        {"a": {1, 2}},
        {"a": b"x"},
        {"a": 2**64},
    ],
    ids=repr,
)
def test_data_must_be_a_json_object(store: SessionStore, bad: object) -> None:
    with pytest.raises(InvalidArgument, match="data must"):
        store.create(data=bad)  # type: ignore[arg-type]
    s = store.create(data={"ok": 1})
    with pytest.raises(InvalidArgument, match="data must"):
        store.replace(s.id, bad)  # type: ignore[arg-type]
    if isinstance(bad, dict):
        with pytest.raises(InvalidArgument, match="data must"):
            store.patch(s.id, bad)
    assert s.data == {"ok": 1} and s.version == 1


def test_data_size_limit(clock: ManualClock) -> None:
    store = SessionStore(clock, max_data_bytes=100)
    store.create(data={"k": "x" * 90})  # {"k":"...90..."} is 98 bytes
    with pytest.raises(LimitExceeded, match="at most 100 bytes as JSON, but got 101 bytes"):
        store.create(data={"k": "x" * 93})
    s = store.create(data={"a": "x" * 40})
    with pytest.raises(LimitExceeded):
        store.patch(s.id, {"b": "y" * 60})  # the merged result counts
    assert s.data == {"a": "x" * 40}


def test_data_is_copied_in(store: SessionStore) -> None:
    mine = {"cart": [1]}
    s = store.create(data=mine)
    mine["cart"].append(2)  # the caller keeps its object; the store is unaffected
    assert s.data == {"cart": [1]}


@pytest.mark.parametrize(
    ("bad", "err", "match"),
    [
        ("", InvalidArgument, "non-empty string"),
        (42, InvalidArgument, "non-empty string, but got 42"),
        ("\udc80", InvalidArgument, "UTF-8"),
        ("é" * 129, LimitExceeded, "at most 256 UTF-8 bytes, but got 258"),
    ],
)
def test_user_validation(
    store: SessionStore, bad: object, err: type[Exception], match: str
) -> None:
    with pytest.raises(err, match=match):
        store.create(user=bad)  # type: ignore[arg-type]
    with pytest.raises(err):
        store.list_user(bad)  # type: ignore[arg-type]
    assert len(store) == 0
    store.create(user="é" * 128)  # 256 bytes: fine


def test_session_id_type_is_checked_and_ids_never_echoed(store: SessionStore) -> None:
    with pytest.raises(InvalidArgument, match="string, but got list"):
        store.get(["x"])  # type: ignore[arg-type]
    secret = new_session_id()
    with pytest.raises(SessionNotFound) as info:
        store.get(secret)
    assert secret not in str(info.value)
    s = store.create()
    assert s.id not in repr(s)  # a logged Session does not leak the credential


def test_ids_are_256_bit_url_safe_and_do_not_collide() -> None:
    n = 10**6
    ids = {new_session_id() for _ in range(n)}
    assert len(ids) == n
    sample = next(iter(ids))
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sample)  # 43 base64url chars = 258 bits


# -- data writes and versions ----------------------------------------------------------------


def test_patch_merges_and_none_deletes(store: SessionStore, clock: ManualClock) -> None:
    s = store.create(data={"a": 1, "b": {"c": 2}})
    clock.advance(5)
    old_data = s.data
    store.patch(s.id, {"a": None, "b": {"d": 3}, "e": [1]})
    assert s.data == {"b": {"d": 3}, "e": [1]} and s.version == 2
    assert old_data == {"a": 1, "b": {"c": 2}}  # never changed in place
    assert s.idle_deadline == clock.now() + s.ttl  # a write is a use
    store.replace(s.id, {"z": 0}, if_version=2)
    assert s.data == {"z": 0} and s.version == 3


def test_if_version_mismatch_is_a_conflict(store: SessionStore) -> None:
    s = store.create(data={"a": 1})
    store.patch(s.id, {"a": 2})
    with pytest.raises(VersionConflict, match="expected 1, but the session is at 2"):
        store.patch(s.id, {"a": 3}, if_version=1)
    with pytest.raises(VersionConflict):
        store.replace(s.id, {}, if_version=3)
    with pytest.raises(InvalidArgument, match="if_version must be an int"):
        store.replace(s.id, {}, if_version="2")  # type: ignore[arg-type]
    assert s.data == {"a": 2} and s.version == 2


def test_a_write_that_changes_nothing_keeps_the_version(
    store: SessionStore, clock: ManualClock, events: list[Event]
) -> None:
    s = store.create(data={"a": 1})
    clock.advance(1)
    events.clear()
    store.patch(s.id, {"a": 1, "gone": None})
    assert s.version == 1
    assert [e[:3] for e in events] == [("stouch", s.id, s.idle_deadline)]  # only the use


def test_rotate_keeps_everything_but_the_id(store: SessionStore, clock: ManualClock) -> None:
    s = store.create(user="ann", data={"a": 1}, ttl=60, max_lifetime=600)
    store.patch(s.id, {"b": 2})
    clock.advance(30)
    r = store.rotate(s.id)
    assert r.id != s.id and s.id not in store and r.id in store
    assert (r.user, r.data, r.version, r.created_at, r.max_expires_at, r.ttl) == (
        "ann",
        {"a": 1, "b": 2},
        2,
        s.created_at,
        s.max_expires_at,
        60,
    )
    assert r.idle_deadline == clock.now() + 60
    assert store.counters["rotated"] == 1 and store.counters["created"] == 1
    store._check()


def test_to_dict(store: SessionStore, clock: ManualClock) -> None:
    s = store.create(user="ann", data={"a": 1}, ttl=60, max_lifetime=100)
    now = clock.now()
    assert s.to_dict() == {
        "id": s.id,
        "user": "ann",
        "data": {"a": 1},
        "created_at": now,
        "expires_at": now + 60,
        "ttl": 60,
        "max_expires_at": now + 100,
        "version": 1,
    }


# -- events ----------------------------------------------------------------------------------


def test_events_carry_resulting_state_in_mutation_order(
    store: SessionStore, clock: ManualClock, events: list[Event]
) -> None:
    s = store.create(user="ann", ttl=10)
    assert events == [("sput", s, None)]
    clock.advance(1)
    store.get(s.id)
    assert events[-1] == ("stouch", s.id, clock.now() + 10, clock.now() + 9)
    n = len(events)
    store.get(s.id)  # same instant: the deadline did not move, nothing to record
    store.get(s.id, touch=False)
    assert len(events) == n
    idle = s.idle_deadline
    store.patch(s.id, {"a": 1})
    assert events[-1] == ("sput", s, ({}, 1, idle)) and s.version == 2
    store.replace(s.id, {"b": 1})
    assert events[-1] == ("sput", s, ({"a": 1}, 2, idle)) and s.version == 3
    r = store.rotate(s.id)
    assert events[-2:] == [("sdel", s.id, "rotated", s), ("sput", r, None)]
    store.delete(r.id)
    assert events[-1] == ("sdel", r.id, "deleted", r)
    t = store.create(ttl=1)
    clock.advance(2)
    store.purge()
    assert events[-1] == ("sdel", t.id, "expired", t)
    assert store.counters == {
        "created": 2,
        "expired": 1,
        "deleted": 1,
        "revoked": 0,
        "rotated": 1,
        "evicted": 0,
        "expired_at_load": 0,
    }


def test_observers_see_a_consistent_store_during_a_purge(
    store: SessionStore, clock: ManualClock
) -> None:
    for i in range(50):
        store.create(user=f"u{i % 5}", ttl=1)
    seen: list[int] = []

    def on_event(event: Event) -> None:
        store._check()  # every session of the batch is already out of both indexes
        seen.append(sum(len(store.list_user(f"u{i}")) for i in range(5)))

    store.observers.append(on_event)
    clock.advance(2)
    store.purge()
    assert seen == [0] * 50


def test_purge_of_many_sessions_due_together_is_bounded(
    store: SessionStore, clock: ManualClock, events: list[Event]
) -> None:
    n, batch = 20_000, 1000
    for i in range(n):
        store.create(user=f"u{i % 100}", ttl=60)
    clock.advance(61)
    calls = 0
    while True:
        events.clear()
        due = store.purge(max_items=batch)
        calls += 1
        assert len(events) <= batch
        if calls % 5 == 0:
            store._check()
        if due is None or due > clock.now():
            break
    assert len(store) == 0 and store.counters["expired"] == n and calls == n // batch
    store._check()


def test_deadline_watchers_hear_only_a_nearer_deadline(
    store: SessionStore, clock: ManualClock
) -> None:
    woken: list[float] = []
    store.deadline_watchers.append(woken.append)
    store.create(ttl=100)
    assert woken == [store.next_deadline()]
    store.create(ttl=200)
    store.create(ttl=100)
    assert len(woken) == 1  # not nearer: let the purge task sleep
    store.create(ttl=10)
    assert woken[-1] == store.next_deadline() == clock.now() + 11
    # touches only ever push deadlines out: they never wake the purge task
    for s in list(store.sessions()):
        clock.advance(1)
        store.touch(s.id)
    assert len(woken) == 2


# -- persistence hooks -----------------------------------------------------------------------


def test_load_apply_and_sessions(
    store: SessionStore, clock: ManualClock, events: list[Event]
) -> None:
    now = clock.now()
    live = Session("a" * 43, "ann", {"x": 1}, now - 10, 60, now + 50, now + 500, 4)
    dead = Session("b" * 43, "ann", {}, now - 100, 60, now - 40, now + 500, 1)
    store.load(live)
    store.load(dead)
    assert "a" * 43 in store and "b" * 43 not in store and len(store) == 1
    assert store.counters["expired_at_load"] == 1
    store.load(Session("a" * 43, "ann", {"x": 2}, now - 10, 60, now + 55, now + 500, 5))
    assert store.get("a" * 43, touch=False).version == 5 and len(store) == 1  # replaced
    store.apply_touch("a" * 43, now + 70)
    assert store.get("a" * 43, touch=False).expires_at == now + 70
    store.apply_delete("a" * 43)
    store.apply_delete("a" * 43)  # idempotent
    assert len(store) == 0 and store.list_user("ann") == []
    assert events == []  # replay is silent: it must not be journalled again
    store._check()


def test_a_journal_touch_revives_a_session_the_snapshot_had_as_expired(
    store: SessionStore, clock: ManualClock
) -> None:
    # Snapshot at 12:00 holds the session due at 12:05; the journal has a touch at 12:20.
    # Restarted at 12:22, the session is alive: load must not lose it for good.
    now = clock.now()
    s = Session("c" * 43, "ann", {}, now - 3600, 1800, now - 1020, now + 86400, 1)
    store.load(s)
    assert s.id not in store
    store.apply_touch(s.id, now + 1680)
    assert s.id in store and store.counters["expired_at_load"] == 0
    assert [x.id for x in store.list_user("ann")] == [s.id]
    store.load(Session("d" * 43, None, {}, now - 3600, 60, now - 1, now + 9, 1))
    store.finish_load()
    store.apply_touch("d" * 43, now + 60)  # too late: gone for good after the replay
    assert "d" * 43 not in store and store.counters["expired_at_load"] == 1
    store._check()


def test_sessions_lists_expired_but_unpurged_too(store: SessionStore, clock: ManualClock) -> None:
    a = store.create(ttl=1)
    b = store.create(ttl=100)
    clock.advance(5)
    it = store.sessions()
    store.create()  # the caller may yield between items while writes go on
    assert {s.id for s in it} == {a.id, b.id}
