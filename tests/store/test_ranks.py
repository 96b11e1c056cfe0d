"""Ranking kinds, percentile, lookup, score ranges and metadata patches against the oracle.

The board is driven with random operations (fixed seeds) under every option combination and
every ranking, switching ranking mid-way, and each answer is compared with ``RankedModel``
(tests/board_model.py), which computes ranks from their definitions by brute force. The dense
index is checked on its own against a ``Counter`` with hypothesis, and the journal/snapshot
tests show that the ranking and a metadata patch come back exactly after a restart.
"""

import itertools
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store import InvalidArgument, MemberNotFound
from store.clock import ManualClock
from store.disk.rows import config_row
from store.keyspace import Keyspace
from store.ranks import RANKINGS as KINDS
from store.ranks import DenseIndex, convert, make_index, page_ranks, rank_at
from store.skiplist import SkipList
from store.sortkey import NUM_BYTES, encode_num, next_num
from tests.board_model import RankedModel
from tests.store.test_journal import Recorder, recovered, write_segment
from tests.store.test_snapshot import T0, digest, fresh, load, save

RANKINGS = ("ordinal", "competition", "dense")
COMBOS = list(
    itertools.product(("desc", "asc"), ("best", "latest", "sum"), ("first", "member"), RANKINGS)
)


def _score(rng: random.Random) -> int | float:
    # Few distinct values so ties are common; floats equal to ints share a score.
    return rng.choice([rng.randint(-5, 5), rng.randint(-5, 5) + 0.5, float(rng.randint(-3, 3))])


@pytest.mark.parametrize(("order", "update", "ties", "ranking"), COMBOS)
def test_random_operations_match_the_model(
    order: str, update: str, ties: str, ranking: str
) -> None:
    rng = random.Random(f"{order}-{update}-{ties}-{ranking}")
    ks = Keyspace()
    board, _ = ks.configure(
        "b", {"order": order, "update": update, "ties": ties, "ranking": ranking}
    )
    model = RankedModel(order, update, ties, ranking)
    members = [f"m{i}" for i in range(40)]
    for step in range(1500):
        op = rng.random()
        member = rng.choice(members)
        if op < 0.5:
            score = _score(rng)
            meta = {"step": step} if rng.random() < 0.3 else None
            assert board.write(member, score, meta) == model.write(member, score, meta), step
        elif op < 0.55:
            items = [(rng.choice(members), _score(rng), None) for _ in range(rng.randint(1, 5))]
            got = board.write_many(list(items))
            assert got == [model.write(m, s, None) for m, s, _ in items], step
        elif op < 0.6:
            if member in model.entries:
                board.remove(member)
                model.delete(member)
        elif op < 0.64:
            kind = rng.choice(RANKINGS)
            ks.configure("b", {"ranking": kind})  # any time, entries or not
            model.kind = kind
        elif op < 0.68:
            s = rng.randint(-7, 7) + rng.choice([0, 0.5])
            assert board.rank_for_score(s) == model.rank_for_score(s), (step, s)
        elif op < 0.74 and model.entries:
            member = rng.choice(list(model.entries))
            radius = rng.randint(0, 4)
            assert board.around(member, radius) == model.around(member, radius), step
            assert board.member(member) == model.member(member), step
        elif op < 0.8:
            asked = [*rng.sample(members, rng.randint(0, 12)), rng.choice(members)]
            assert board.lookup(asked) == model.lookup(asked), step
        elif op < 0.87:
            lo, hi = sorted([_score(rng), _score(rng)])
            offset, limit = rng.randint(0, 6), rng.randint(1, 8)
            assert board.score_range(lo, hi, offset, limit) == model.score_range(
                lo, hi, offset, limit
            ), (step, lo, hi)
        elif op < 0.92 and model.entries:
            member = rng.choice(list(model.entries))
            meta = rng.choice([None, {"patched": step}])
            assert board.set_metadata(member, meta) == model.set_metadata(member, meta), step
        else:
            offset, limit = rng.randint(0, 45), rng.randint(1, 20)
            assert board.top(offset, limit) == model.page(offset, limit), step
        if step % 50 == 0:
            board._check()
    assert board.top(0, 1000) == model.page(0, 1000)
    assert all(board.member(m) == model.member(m) for m in model.entries)
    board._check()


def test_the_three_rankings_on_the_docs_example() -> None:
    ks = Keyspace()
    board, _ = ks.configure("b", {})
    for member, score in [("a", 90), ("b", 80), ("c", 80), ("d", 80), ("e", 70), ("f", 70)]:
        board.write(member, score)
    shown = {}
    for kind in RANKINGS:
        ks.configure("b", {"ranking": kind})
        shown[kind] = [e["rank"] for e in board.top(0, 10)]
        board._check()
    assert shown == {
        "ordinal": [1, 2, 3, 4, 5, 6],
        "competition": [1, 2, 2, 2, 5, 5],
        "dense": [1, 2, 2, 2, 3, 3],
    }
    # A page that starts inside a tie group starts from the group's shared rank.
    assert [e["rank"] for e in board.top(2, 3)] == [2, 2, 3]
    assert board.write("g", 80)["rank"] == 2 and board.rank_for_score(75) == 3
    assert board.member("c")["percentile"] == 100.0 * 2 / 6  # e and f are below; b, d, g tie
    ks.configure("b", {"ranking": "competition"})
    assert board.rank_for_score(75) == 6
    assert board.member("a")["percentile"] == 100.0
    assert board.member("f")["percentile"] == 0.0


def test_percentile_of_a_lone_entry_and_of_all_tied() -> None:
    ks = Keyspace()
    board, _ = ks.configure("b", {"ranking": "competition"})
    board.write("solo", 1)
    assert board.member("solo")["percentile"] == 100.0
    board.write("twin", 1)
    assert board.member("solo")["percentile"] == 0.0  # the other one ties: not below
    ks.configure("b", {"ranking": "ordinal"})
    assert board.member("solo")["percentile"] == 100.0  # ordinal breaks the tie: first in


def test_bad_ranking_is_refused_naming_the_value() -> None:
    ks = Keyspace()
    with pytest.raises(InvalidArgument, match="'olympic'"):
        ks.configure("b", {"ranking": "olympic"})
    with pytest.raises(InvalidArgument, match="ranking"):
        ks.configure("b", {"ranking": 1})
    assert ks.find("b") is None


def test_dense_index_exists_only_on_dense_boards() -> None:
    ks = Keyspace()
    board, _ = ks.configure("b", {})
    for i in range(3000):
        board.write(f"m{i}", i % 7)
    assert type(board._main()._index) is SkipList
    ks.configure("b", {"ranking": "dense"})
    index = board._main()._index
    assert isinstance(index, DenseIndex) and index.distinct() == 7
    board._check()
    ks.configure("b", {"ranking": "competition"})
    assert type(board._main()._index) is SkipList
    board._check()


def test_lookup_validates_and_bounds_its_input() -> None:
    ks = Keyspace()
    board, _ = ks.configure("b", {})
    board.write("a", 1)
    with pytest.raises(InvalidArgument, match="array"):
        board.lookup("a")
    with pytest.raises(InvalidArgument, match="at most 1000"):
        board.lookup(["a"] * 1001)
    with pytest.raises(InvalidArgument):
        board.lookup(["a", "x/y"])
    with pytest.raises(InvalidArgument):
        board.lookup([3])
    assert board.lookup(["a"] * 1000) == ([{"rank": 1, "member": "a", "score": 1}], [])
    assert board.lookup([]) == ([], [])


def test_score_range_bounds() -> None:
    ks = Keyspace()
    board, _ = ks.configure("d", {})  # desc: NUMs hold the negated score
    for i, s in enumerate([2**62, 5, 5.0, 4.5, 0, 0.0, -3, -(2**62)]):
        board.write(f"m{i}", s)
    assert board.score_range(0, 5, 0, 100)[0] == 5
    assert board.score_range(-0.0, 0, 0, 100)[0] == 2
    assert board.score_range(2**62, 2**62, 0, 1)[1] == [{"rank": 1, "member": "m0", "score": 2**62}]
    assert board.score_range(6, 2**62 - 1, 0, 10) == (0, [])
    assert board.score_range(-(2**63) + 1, 2**63 - 1, 7, 10)[1][0]["member"] == "m7"
    assert board.score_range(0, 5, 10, 10) == (5, [])
    with pytest.raises(InvalidArgument, match="min must not be above max"):
        board.score_range(2, 1, 0, 1)
    with pytest.raises(InvalidArgument):
        board.score_range(float("nan"), 1, 0, 1)


def test_set_metadata_keeps_the_place_and_is_idempotent() -> None:
    ks = Keyspace()
    board, _ = ks.configure("b", {})
    events: list[Any] = []
    ks.observers.append(events.append)
    board.write("a", 5)
    board.write("b", 5)  # behind a: a reached 5 first
    key = board._main()._keys["a"]
    assert board.set_metadata("a", {"team": "red"}) == {
        "rank": 1,
        "member": "a",
        "score": 5,
        "metadata": {"team": "red"},
    }
    assert board._main()._keys["a"] == key and board.top(0, 2)[0]["member"] == "a"
    n = len(events)
    board.set_metadata("a", {"team": "red"})  # changes nothing: no record
    assert len(events) == n
    assert "metadata" not in board.set_metadata("a", None)
    with pytest.raises(MemberNotFound):
        board.set_metadata("zed", None)
    with pytest.raises(InvalidArgument):
        board.set_metadata("a", [1])
    board._check()


@pytest.mark.parametrize("ties", ["first", "member"])
def test_patch_and_ranking_replay_exactly_from_the_journal(tmp_path: Path, ties: str) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    board, _ = ks.configure("b", {"ties": ties, "ranking": "dense"})
    for i in range(30):
        board.write(f"m{i}", i % 4, {"i": i} if i % 3 else None)
    board.set_metadata("m5", {"patched": True})
    board.set_metadata("m3", None)
    board.write("m7", 10)
    board.set_metadata("m7", {"after": 1})
    ks.configure("b", {"ranking": "competition"})
    write_segment(tmp_path, 1, rec.take())
    ks2, ss2, _ = recovered(tmp_path, clock)
    b2 = ks2.get("b")
    assert b2.config.ranking == "competition"
    assert b2.top(0, 100) == board.top(0, 100)
    assert [b2.member(f"m{i}") for i in range(30)] == [board.member(f"m{i}") for i in range(30)]
    b2._check()
    got, want = digest(ks2, ss2), digest(ks, ss)
    if ties == "first":
        # A patch on a ties=first board records the key's own seq (its place among equal
        # scores); the counter bump it made for WebSocket frames is not replayed.
        assert got["boards"]["b"][2] == want["boards"]["b"][2]
        assert b2.seq <= board.seq
    else:
        assert got == want


def test_ranking_survives_a_snapshot_and_ordinal_rows_are_unchanged(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    for kind in RANKINGS:
        board, _ = ks.configure(kind, {"ranking": kind})
        for i in range(50):
            board.write(f"m{i}", i % 6)
    # rows of ordinal boards as before rankings (store/disk/rows.py omits defaults)
    assert "ranking" not in config_row(ks.get("ordinal").config)
    assert config_row(ks.get("dense").config)["ranking"] == "dense"
    path = save(tmp_path, ks, ss)
    ks2, ss2 = load(path, clock)
    assert digest(ks2, ss2) == digest(ks, ss)
    for kind in RANKINGS:
        assert ks2.get(kind).config.ranking == kind
        assert ks2.get(kind).top(0, 50) == ks.get(kind).top(0, 50)
        ks2.get(kind)._check()


def test_undo_of_a_patch_restores_the_metadata() -> None:
    ks = Keyspace()
    board, _ = ks.configure("b", {})
    board.write("a", 1, {"v": 1})
    events: list[Any] = []
    ks.observers.append(events.append)
    board.set_metadata("a", {"v": 2})
    ks.observers.remove(events.append)
    ks.undo(events[-1])
    assert board.member("a")["metadata"] == {"v": 1}
    board._check()


# -- the dense index on its own ---------------------------------------------------------------

_KEY = st.tuples(st.integers(0, 6), st.integers(0, 50)).map(
    lambda t: encode_num(t[0]) + f"m{t[1]}".encode() + b"\x00"
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "del", "clear", "update"]), _KEY)))
def test_dense_index_counts_distinct_scores(ops: list[tuple[str, bytes]]) -> None:
    index = DenseIndex(load=4)  # tiny runs: splits, merges and the empty rebuild all happen
    oracle: Counter[bytes] = Counter()
    for op, key in ops:
        if op == "add":
            index.add(key)
            oracle[key] += 1
        elif op == "remove" and oracle[key]:
            index.remove(key)
            oracle[key] -= 1
        elif op == "del" and len(index):
            pos = len(key) % len(index)
            gone = index[pos]
            del index[pos]
            oracle[gone] -= 1
        elif op == "clear":
            index.clear()
            oracle.clear()
        elif op == "update":
            index.update([key, key])
            oracle[key] += 2
        index._check()
        nums = sorted({k[:NUM_BYTES] for k, c in oracle.items() if c > 0})
        assert index.distinct() == len(nums)
        probe = key[:NUM_BYTES]
        assert index.distinct_before(probe) == sum(1 for n in nums if n < probe)


def test_page_ranks_from_any_offset_match_rank_at() -> None:
    rng = random.Random(7)
    keys = sorted(encode_num(rng.randint(0, 20)) + f"k{i}".encode() + b"\x00" for i in range(500))
    for kind in KINDS:
        index = make_index(kind, keys)
        assert convert(index, kind) is index
        for offset in range(0, 500, 37):
            page = index[offset : offset + 40]
            want = [rank_at(kind, index, offset + i, k) for i, k in enumerate(page)]
            assert page_ranks(kind, index, offset, page) == want


def test_next_num_is_the_successor() -> None:
    for v in [0, 1, -1, 2**62, -(2**62), 0.5, -0.5, 2**53 + 1]:
        num = encode_num(v)
        assert next_num(num) > num and len(next_num(num)) == NUM_BYTES
        assert int.from_bytes(next_num(num), "big") == int.from_bytes(num, "big") + 1
