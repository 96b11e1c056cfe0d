"""Leaderboards against the plain model in tests/board_model.py, every option combination."""

import itertools
import math
import random
from typing import Any

import pytest

from store import BoardNotFound, Conflict, InvalidArgument, LimitExceeded, Limits, MemberNotFound
from store.keyspace import Keyspace
from tests.board_model import ModelBoard

COMBOS = list(itertools.product(("desc", "asc"), ("best", "latest", "sum"), ("first", "member")))


@pytest.mark.parametrize(("order", "update", "ties"), COMBOS)
def test_random_writes_match_model(order: str, update: str, ties: str) -> None:
    rng = random.Random(f"{order}-{update}-{ties}")
    ks = Keyspace()
    board, created = ks.configure("b", {"order": order, "update": update, "ties": ties})
    assert created
    model = ModelBoard(order, update, ties)
    members = [f"m{i}" for i in range(60)]
    for step in range(3000):
        op = rng.random()
        member = rng.choice(members)
        if op < 0.75:
            # Few distinct scores so ties are common, some floats equal to ints.
            score: Any = rng.choice(
                [rng.randint(-5, 5), rng.randint(-5, 5) + 0.5, float(rng.randint(-3, 3))]
            )
            meta = {"step": step} if rng.random() < 0.3 else None
            assert board.write(member, score, meta) == model.write(member, score, meta)
        elif op < 0.85:
            if member in model.entries:
                board.remove(member)
                model.delete(member)
            else:
                with pytest.raises(MemberNotFound):
                    board.remove(member)
        elif op < 0.9:
            score = rng.randint(-6, 6)
            assert board.rank_for_score(score) == model.rank_for_score(score)
        elif op < 0.95 and model.entries:
            member = rng.choice(list(model.entries))
            radius = rng.randint(0, 4)
            assert board.around(member, radius) == model.around(member, radius)
            assert board.entry(member) == model.entry(member, model.rank(member))
        else:
            offset, limit = rng.randint(0, 70), rng.randint(1, 20)
            assert board.top(offset, limit) == model.page(offset, limit)
        if step % 100 == 0:
            board._check()
    assert board.top(0, 1000) == model.page(0, 1000)
    board._check()


def test_non_improving_write_keeps_tie_order() -> None:
    ks = Keyspace()
    b = ks.board_for_write("b")
    b.write("alice", 10)
    b.write("bob", 10)
    b.write("carol", 10)
    seq = b.seq
    result = b.write("alice", 5)  # best: not an improvement
    assert result == {
        "member": "alice",
        "score": 10,
        "rank": 1,
        "previous": {"score": 10, "rank": 1},
        "changed": False,
    }
    assert b.seq == seq
    assert [e["member"] for e in b.top(0, 3)] == ["alice", "bob", "carol"]
    ks.configure("b", {"update": "latest"})
    assert b.write("alice", 10.0)["changed"] is False  # equal latest
    ks.configure("b", {"update": "sum"})
    assert b.write("alice", 0)["changed"] is False  # sum of 0
    assert [e["member"] for e in b.top(0, 3)] == ["alice", "bob", "carol"]
    assert b.write("alice", 1)["rank"] == 1


def test_ties_member_orders_by_member_id() -> None:
    ks = Keyspace()
    b, _ = ks.configure("t", {"ties": "member", "order": "asc"})
    for m in ["zed", "amy", "kim"]:
        b.write(m, 3)
    b.write("bo", 1)
    assert [e["member"] for e in b.top(0, 4)] == ["bo", "amy", "kim", "zed"]
    assert b.rank_for_score(3) == 2 and b.rank_for_score(2) == 2 and b.rank_for_score(4) == 5


@pytest.mark.parametrize(
    "score",
    [
        True,
        None,
        "1",
        [1],
        math.nan,
        math.inf,
        -math.inf,
        2**63,
        -(2**63),
        2.0**63,
        -(2.0**63),
        10**30,
    ],
)
def test_bad_scores_are_refused(score: Any) -> None:
    b = Keyspace().board_for_write("b")
    with pytest.raises(InvalidArgument, match="score"):
        b.write("m", score)
    assert len(b) == 0


def test_score_range_edges_stay_exact() -> None:
    b = Keyspace().board_for_write("b")
    big = 2**63 - 1
    assert b.write("max", big)["score"] == big
    assert b.write("min", -big)["score"] == -big
    assert type(b.entry("max")["score"]) is int
    assert b.write("neg0", -0.0)["score"] == 0.0
    assert math.copysign(1, b.entry("neg0")["score"]) == 1


def test_sum_overflow_is_refused_and_batch_is_all_or_nothing() -> None:
    ks = Keyspace()
    b, _ = ks.configure("s", {"update": "sum"})
    b.write("a", 2**62)
    with pytest.raises(InvalidArgument, match="2\\*\\*63"):
        b.write("a", 2**62)
    with pytest.raises(InvalidArgument):
        b.write_many([("b", 1, None), ("a", 2**61, None), ("a", 2**61, None)])
    assert "b" not in b and b.entry("a")["score"] == 2**62
    with pytest.raises(InvalidArgument):
        b.write_many([("c", 1, None), ("", 1, None)])
    assert "c" not in b


@pytest.mark.parametrize(
    ("member", "error"),
    [
        ("", InvalidArgument),
        ("x" * 129, LimitExceeded),
        ("é" * 65, LimitExceeded),
        ("a\nb", InvalidArgument),
        ("\x7f", InvalidArgument),
        (5, InvalidArgument),
    ],
)
def test_bad_members_are_refused(member: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Keyspace().write("b", member, 1)


def test_member_limits_accept_edges() -> None:
    ks = Keyspace()
    ks.write("b", "x" * 128, 1)
    ks.write("b", "é" * 64, 1)
    ks.write("b", "名前 with spaces", 1)
    assert len(ks.get("b")) == 3


def test_metadata_is_bounded_and_kept_with_the_score() -> None:
    ks = Keyspace(Limits(metadata_bytes=32))
    b = ks.board_for_write("b")
    with pytest.raises(LimitExceeded):
        b.write("m", 1, {"x": "y" * 40})
    with pytest.raises(InvalidArgument):
        b.write("m", 1, ["not", "an", "object"])
    b.write("m", 5, {"run": 1})
    b.write("m", 3, {"run": 2})  # not better: metadata belongs to the best run
    assert b.entry("m") == {"rank": 1, "member": "m", "score": 5, "metadata": {"run": 1}}
    b.write("m", 7)  # better, no metadata given: kept
    assert b.entry("m")["metadata"] == {"run": 1}


def test_batch_limit() -> None:
    b = Keyspace(Limits(batch_items=3)).board_for_write("b")
    with pytest.raises(InvalidArgument, match="at most 3"):
        b.write_many([(f"m{i}", i, None) for i in range(4)])
    assert [r["rank"] for r in b.write_many([("a", 1, None), ("b", 2, None), ("a", 3, None)])] == [
        1,
        1,
        1,
    ]


def test_keyspace_configure_and_drop() -> None:
    ks = Keyspace()
    events: list[tuple[Any, ...]] = []
    ks.observers.append(events.append)
    with pytest.raises(InvalidArgument, match="unknown board option 'colour'"):
        ks.configure("b", {"colour": "red"})
    with pytest.raises(InvalidArgument, match="must be one of"):
        ks.configure("b", {"order": "up"})
    with pytest.raises(InvalidArgument, match="board name"):
        ks.configure("bad/name", {})
    b, created = ks.configure("b", {"order": "asc"})
    assert created and b.config.order == "asc"
    assert ks.configure("b", {"order": "asc"}) == (b, False)
    b.write("m", 1)
    with pytest.raises(Conflict):
        ks.configure("b", {"order": "desc"})
    ks.configure("b", {"update": "latest"})
    ks.drop("b")
    with pytest.raises(BoardNotFound):
        ks.get("b")
    with pytest.raises(BoardNotFound):
        ks.drop("b")
    assert [e[0] for e in events] == ["bcfg", "bset", "bcfg", "bdrop"]
    assert events[1] == ("bset", "b", "m", 1, 1, None, 1, None, None, None, "all", "all")


@pytest.mark.parametrize(("order", "update", "ties"), COMBOS)
def test_dump_load_and_replay_reproduce_state(order: str, update: str, ties: str) -> None:
    rng = random.Random(7)
    source = Keyspace()
    events: list[tuple[Any, ...]] = []
    source.observers.append(events.append)
    board, _ = source.configure("b", {"order": order, "update": update, "ties": ties})
    for i in range(2000):
        m = f"m{rng.randrange(100)}"
        if rng.random() < 0.1 and m in board:
            board.remove(m)
        else:
            board.write(m, rng.randint(0, 20), {"i": i} if i % 3 == 0 else None)

    replayed = Keyspace()
    for event in events:
        replayed.apply(event)
    for event in events:  # idempotent: replaying twice changes nothing
        replayed.apply(event)
    restored = Keyspace()
    restored.restore_board("b", board.config).load_keys(
        [list(board.dump_keys())], dict(board.dump_metadata()), board.seq
    )
    expected, seq = board.top(0, 1000), board.seq
    for other in (replayed, restored):
        twin = other.get("b")
        twin._check()
        assert twin.top(0, 1000) == expected
        assert twin.seq == seq
        # New writes after a restore still rank behind earlier equal scores.
        assert twin.write("late", 20)["rank"] == board.write("late", 20)["rank"]
        board.remove("late")


def test_refused_write_creates_no_board() -> None:
    ks = Keyspace()
    events: list[tuple[Any, ...]] = []
    ks.observers.append(events.append)
    with pytest.raises(InvalidArgument):
        ks.write("new", "m", math.nan)
    with pytest.raises(InvalidArgument):
        ks.write_many("new", [("a", 1, None), ("b", "x", None)])
    with pytest.raises(InvalidArgument):
        ks.write("bad name", "m", 1)
    assert len(ks) == 0 and events == []
    assert [r["rank"] for r in ks.write_many("new", [("a", 1, None), ("b", 2, None)])] == [1, 1]
    assert ks.write("other", "m", 1)["rank"] == 1
    assert sorted(ks.names()) == ["new", "other"]
