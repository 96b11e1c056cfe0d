"""Windows and periods: options, rollover, keep, grace, and a simulated month against the model.

The month: a board with windows ["all", "week", "day"] (and one with an hourly window and a
custom season) is written for 31 simulated days on a ManualClock, the state going through
"kill -9" (the journal since the last snapshot is all that survives) and recovery many times,
sometimes after several days passed while down; every few hours every kept period of every
window is compared with tests/board_model.py -- periods list, every page, every member, around
pages and rank-for-score. Fixed seeds: a failure replays exactly.
"""

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from store.boards import Board
from store.clock import ManualClock
from store.disk import snapshot
from store.disk.recovery import recover
from store.errors import Conflict, InvalidArgument, MemberNotFound, PeriodNotFound
from store.keyspace import Keyspace
from store.sessions import SessionStore
from tests.board_model import ModelBoard
from tests.store.test_journal import Recorder, write_segment

T0 = datetime(2026, 11, 27, 21, 30, tzinfo=UTC).timestamp()  # a Friday evening
HOUR = 3600
DAY = 86400


def fresh(clock: ManualClock) -> tuple[Keyspace, SessionStore]:
    return Keyspace(clock=clock), SessionStore(clock)


# -- options -----------------------------------------------------------------------------------


def test_options_are_validated_and_named() -> None:
    ks, _ = fresh(ManualClock(T0))
    bad: list[tuple[dict[str, Any], str]] = [
        ({"windows": []}, "windows must be a non-empty array"),
        ({"windows": ["fortnight"]}, "'fortnight'"),
        ({"windows": ["day", "day"]}, "listed twice"),
        ({"windows": [{"name": "s", "every": 10, "start": 0}]}, "every must be"),
        ({"reset_offset": 86400}, "reset_offset"),
        ({"reset_offset": 1.5}, "1.5"),
        ({"keep": 101}, "'keep' must be an integer from 0 to 100, but got 101"),
        ({"keep": -1}, "-1"),
        ({"grace": True}, "'grace'"),
        ({"min_score": "1"}, "'min_score'"),
        ({"min_score": 5, "max_score": 4}, "must not exceed"),
        ({"order": 1}, "'order'"),
        ({"player_rate": 0}, "'player_rate' must be an integer from 1 to 10000"),
        ({"public_read": 1}, "'public_read' must be true or false"),
        ({"ranking": "olympic"}, "'ranking' must be one of"),
    ]
    for options, message in bad:
        with pytest.raises(InvalidArgument, match=message):
            ks.configure("b", options)
    assert ks.find("b") is None
    board, _ = ks.configure(
        "b",
        {"windows": ["all", "week", {"name": "s", "every": 3600, "start": int(T0)}],
         "reset_offset": 14400, "keep": 2, "grace": 60, "min_score": 0, "max_score": 100},
    )  # fmt: skip
    assert board.config.as_dict() == {
        "order": "desc",
        "update": "best",
        "ties": "first",
        "ranking": "ordinal",
        "windows": ["all", "week", {"name": "s", "every": 3600, "start": int(T0)}],
        "reset_offset": 14400,
        "keep": 2,
        "grace": 60,
        "min_score": 0,
        "max_score": 100,
        "player_writes": False,
        "player_rate": 60,
        "public_read": False,
    }
    assert board.config.windows[1].offset == 14400
    with pytest.raises(InvalidArgument, match="above board 'b''s max_score 100"):
        board.write("m", 101)
    with pytest.raises(InvalidArgument, match="below"):
        board.write("m", -1)
    board.write("m", 100)
    with pytest.raises(Conflict, match="windows"):
        ks.configure("b", {"windows": ["all"]})
    with pytest.raises(Conflict, match="reset_offset"):
        ks.configure("b", {"reset_offset": 0})
    ks.configure("b", {"keep": 0, "grace": 0, "max_score": None})
    board.write("m", 1000)


def test_one_write_updates_every_window_and_rolls_over() -> None:
    clock = ManualClock(T0)
    ks, _ = fresh(clock)
    events: list[Any] = []
    ks.observers.append(events.append)
    board, _ = ks.configure("b", {"windows": ["all", "day"], "keep": 1, "grace": 3 * HOUR})
    r = board.write("ann", 10)
    day1 = "2026-11-27"
    assert r == {
        "member": "ann", "score": 10, "rank": 1, "previous": None, "changed": True,
        "windows": {
            "all": {"period": "all", "score": 10, "rank": 1, "previous": None, "changed": True},
            "day": {"period": day1, "score": 10, "rank": 1, "previous": None, "changed": True},
        },
    }  # fmt: skip
    assert events[-1][0] == "bbatch" and len(events[-1][2]) == 2  # one record for both
    clock.advance(3 * HOUR)  # past midnight: 2026-11-28
    ks.tick()
    assert events[-1] == ("broll", "b", "day", day1, "2026-11-28")
    assert board.top(window="day") == []
    assert board.top(window="day", period="previous") == [{"rank": 1, "member": "ann", "score": 10}]
    assert board.top(window="day", period=day1) == board.top(window="day", period="previous")
    # A match that began before midnight counts for yesterday (grace), not today.
    r = board.write("bob", 20, at=clock.now() - 2.5 * HOUR)
    assert r["windows"]["day"]["period"] == day1 and r["windows"]["day"]["rank"] == 1
    assert board.entry("bob", "day", day1)["rank"] == 1
    with pytest.raises(MemberNotFound):
        board.entry("bob", "day")
    with pytest.raises(InvalidArgument, match="grace"):
        board.write("bob", 30, at=clock.now() - 3 * HOUR - 1)
    with pytest.raises(InvalidArgument, match="future"):
        board.write("bob", 30, at=clock.now() + 1)
    assert [p["id"] for p in board.periods("day")] == ["2026-11-28", day1]
    assert board.sizes() == {"all": 2, "day": 0}
    # keep = 1: two days later the first day is gone.
    clock.advance(2 * DAY)
    with pytest.raises(PeriodNotFound, match="not kept"):
        board.top(window="day", period=day1)
    assert [p["id"] for p in board.periods("day")] == ["2026-11-30", "2026-11-29"]
    with pytest.raises(InvalidArgument, match="window"):
        board.top(window="week")
    ks._check()
    # Deleting removes from every current period only.
    board.write("cat", 1)
    board.remove("cat")
    assert "cat" not in board and board.sizes() == {"all": 2, "day": 0}
    with pytest.raises(MemberNotFound):
        board.remove("zed")
    ks._check()


def test_a_custom_season_begins_at_its_start() -> None:
    clock = ManualClock(T0)
    ks, _ = fresh(clock)
    start = int(T0) + HOUR
    board, _ = ks.configure("b", {"windows": ["all", {"name": "s", "every": HOUR, "start": start}]})
    r = board.write("a", 1)
    assert set(r["windows"]) == {"all"}  # before its start the season is skipped
    assert board.periods("s") == []
    with pytest.raises(PeriodNotFound):
        board.top(window="s")
    clock.advance(HOUR)
    assert board.write("a", 2)["windows"]["s"]["period"] == "s-1"
    clock.advance(HOUR)
    assert board.top(window="s", period="previous") == [{"rank": 1, "member": "a", "score": 2}]


# -- the month ---------------------------------------------------------------------------------

CONFIGS: list[dict[str, Any]] = [
    {"windows": ["all", "week", "day"], "keep": 3, "grace": 2 * HOUR, "reset_offset": 14400},
    {"windows": ["day", "all"], "keep": 2, "grace": 0, "order": "asc", "update": "latest"},
    {
        "windows": ["hour", {"name": "season", "every": 5 * DAY, "start": int(T0) + DAY}, "month"],
        "keep": 5, "grace": 900, "update": "sum", "ties": "member",
    },
]  # fmt: skip
MEMBERS = 25


def _model(options: dict[str, Any], clock: ManualClock) -> ModelBoard:
    return ModelBoard(
        options.get("order", "desc"),
        options.get("update", "best"),
        options.get("ties", "first"),
        options["windows"],
        reset_offset=options.get("reset_offset", 0),
        keep=options["keep"],
        grace=options["grace"],
        now=clock.now,
    )


def check(board: Board, model: ModelBoard, rng: random.Random) -> None:
    for w in model.windows:
        periods = model.periods(w.name)
        assert board.periods(w.name) == periods, w
        for p in periods:
            pid = p["id"]
            ranking = model.ranking(w.name, pid)
            assert board.top(0, 1000, w.name, pid) == model.page(0, 1000, w.name, pid), pid
            offset = rng.randrange(0, max(1, len(ranking)))
            assert board.top(offset, 3, w.name, pid) == model.page(offset, 3, w.name, pid)
            for member in rng.sample(ranking, min(5, len(ranking))):
                assert board.entry(member, w.name, pid) == model.entry(member, None, w.name, pid)
                radius = rng.randint(0, 3)
                got = board.around(member, radius, w.name, pid)
                assert got == model.around(member, radius, w.name, pid)
            score = rng.randint(-5, 40)
            assert board.rank_for_score(score, w.name, pid) == model.rank_for_score(
                score, w.name, pid
            )
        for which in ("current", "previous"):
            period = model.period(w.name, which)
            if period is None:
                with pytest.raises(PeriodNotFound):
                    board.top(0, 10, w.name, which)
            else:
                assert board.top(0, 1000, w.name, which) == model.page(0, 1000, w.name, which)


def _restart(
    directory: Path, ks: Keyspace, rec: Recorder, segment: int, clock: ManualClock
) -> tuple[Keyspace, SessionStore, Recorder, int]:
    """kill -9: only the snapshot and the journal survive; then recovery (maybe a snapshot)."""
    write_segment(directory, segment, rec.take())
    ks2, ss2 = fresh(clock)
    recover(directory, ks2, ss2, now=clock.now)
    ks2._check()
    segment += 1
    if segment % 3 == 0:
        snapshot.save(directory, ks2, ss2, base_segment=segment, now=clock.now())
    return ks2, ss2, Recorder(ks2, ss2), segment


@pytest.mark.parametrize("case", range(len(CONFIGS)))
def test_a_month_matches_the_model_across_restarts(tmp_path: Path, case: int) -> None:
    rng = random.Random(1000 + case)
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    options = CONFIGS[case]
    ks.configure("b", options)
    model = _model(options, clock)
    segment, restarts, writes, checks = 1, 0, 0, 0
    end = T0 + 31 * DAY
    while clock.now() < end:
        clock.advance(rng.choice([60, 600, 1800, 3600, 3 * 3600]) + rng.random())
        board = ks.get("b")
        for _ in range(rng.randint(1, 6)):
            roll = rng.random()
            member = f"m{rng.randrange(MEMBERS)}"
            meta = {"v": rng.randint(0, 9)} if rng.random() < 0.2 else None
            score = rng.randint(-5, 40) if options.get("update") != "sum" else rng.randint(-3, 6)
            if roll < 0.08 and model.entries:
                target = rng.choice(sorted(model.entries))
                if model.delete(target):
                    board.remove(target)
                continue
            if roll < 0.2 and model.grace:
                at = clock.now() - rng.uniform(0, model.grace)
                assert board.write(member, score, meta, at) == model.write(member, score, meta, at)
            elif roll < 0.3:
                items = [(f"m{rng.randrange(MEMBERS)}", rng.randint(0, 9), None) for _ in range(4)]
                assert board.write_many(items) == [model.write(*i) for i in items]
            else:
                assert board.write(member, score, meta) == model.write(member, score, meta)
            writes += 1
        if rng.random() < 0.04:
            model.set_keep(rng.randint(0, 4))
            ks.configure("b", {"keep": model.keep})
        if rng.random() < 0.1:
            check(ks.get("b"), model, rng)
            checks += 1
        if rng.random() < 0.05:
            if rng.random() < 0.3:
                clock.advance(rng.uniform(1, 4) * DAY)  # several periods pass while down
            ks, ss, rec, segment = _restart(tmp_path, ks, rec, segment, clock)
            restarts += 1
            check(ks.get("b"), model, rng)
    ks, ss, rec, segment = _restart(tmp_path, ks, rec, segment, clock)
    check(ks.get("b"), model, rng)
    assert restarts >= 10 and writes >= 1000 and checks >= 20, (restarts, writes, checks)


# -- windows x rankings ------------------------------------------------------------------------


def test_a_ranking_applies_in_every_window_and_a_patch_in_every_current_period(
    tmp_path: Path,
) -> None:
    """store/ranks.py's ranking is per board: every window's tables show it (pages, write
    results, member answers), a switch converts them all, and a metadata patch reaches every
    current period holding the member, as one journal record that survives kill -9."""
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    board, _ = ks.configure("b", {"windows": ["all", "day"], "ranking": "competition"})
    for member, score in [("a", 3), ("b", 2), ("c", 2), ("d", 1)]:
        board.write(member, score)
    for w in ("all", "day"):
        assert [e["rank"] for e in board.top(0, 10, w)] == [1, 2, 2, 4]
    result = board.write("d", 2)
    assert (result["rank"], result["previous"]) == (2, {"score": 1, "rank": 4})
    assert result["windows"]["day"]["rank"] == 2
    assert result["windows"]["day"]["previous"] == {"score": 1, "rank": 4}
    ks.configure("b", {"ranking": "dense"})
    for w in ("all", "day"):
        assert [e["rank"] for e in board.top(0, 10, w)] == [1, 2, 2, 2]
    assert board.member("c", "day")["percentile"] == 0.0  # nobody strictly below
    assert board.rank_for_score(2, "day") == 2
    assert board.set_metadata("c", {"t": 1}) == {
        "rank": 2,
        "member": "c",
        "score": 2,
        "metadata": {"t": 1},
    }
    assert board.member("c", "day")["metadata"] == {"t": 1}
    board._check()
    ks2, _, _, _ = _restart(tmp_path, ks, rec, 1, clock)
    b2 = ks2.get("b")
    assert b2.config.ranking == "dense"
    for w in ("all", "day"):
        assert b2.top(0, 10, w) == board.top(0, 10, w)
    assert b2.member("c", "day")["metadata"] == {"t": 1}
