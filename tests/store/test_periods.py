"""store.periods against independent oracles: datetime/calendar for calendar windows (every hour
boundary of 2019-2028 and each ± 1 us, with offsets), exact Fractions for custom windows, and
seeded hypothesis properties (containment, round trips, navigation, the cache)."""

from calendar import monthrange
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from itertools import pairwise
from math import floor, inf, nan

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.errors import InvalidArgument, LimitExceeded
from store.periods import (
    ALL,
    MAX_EVERY,
    MAX_WINDOWS,
    T_MAX,
    T_MIN,
    Period,
    PeriodCache,
    Window,
    next_period,
    parse_period,
    parse_reset_offset,
    parse_windows,
    period_of,
    previous_period,
    recent_periods,
)

EPOCH = datetime(1970, 1, 1)  # naive: the oracle's "local" clock, read as if it were UTC
US = 1e-6
KINDS = ("hour", "day", "week", "month")


def unix(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def id_of(window: Window, t: float) -> str:
    p = period_of(window, t)
    assert p is not None
    return p.id


def calendar(kind: str, offset: int = 0) -> Window:
    return parse_windows([kind], offset)[0]


def season(name: str, every: int, start: int) -> Window:
    return parse_windows([{"name": name, "every": every, "start": start}])[0]


# -- the oracle ---------------------------------------------------------------------------------


def oracle_id(kind: str, local: datetime) -> str:
    """The id of the period holding ``local``, from datetime's own calendar."""
    if kind == "hour":
        return local.strftime("%Y-%m-%dT%H")
    if kind == "day":
        return local.strftime("%Y-%m-%d")
    if kind == "week":
        iso = local.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    return local.strftime("%Y-%m")


def oracle(kind: str, offset: int, s: int) -> Period:
    """The period holding unix second ``s``: datetime's calendar on the clock ``s - offset``."""
    local = EPOCH + timedelta(seconds=s - offset)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "hour":
        start, seconds = local.replace(minute=0, second=0, microsecond=0), 3600
    elif kind == "day":
        start, seconds = day, 86400
    elif kind == "week":
        start, seconds = day - timedelta(days=local.weekday()), 7 * 86400
    else:
        start, seconds = day.replace(day=1), monthrange(local.year, local.month)[1] * 86400
    unix_start = (start - EPOCH) // timedelta(seconds=1) + offset
    return Period(oracle_id(kind, local), unix_start, unix_start + seconds)


# -- exhaustive: every hour boundary ------------------------------------------------------------

# Offset 0 walks 2019-2028: leap years 2020, 2024, 2028; ISO 53-week years 2020 and 2026 (so
# 2021-01-01..03 is 2020-W53 and 2027-01-01..03 is 2026-W53); 2025-W01 starting 2024-12-30.
# Other offsets walk the year ends and the leap day that hold the hard cases.
SPANS = {
    0: [("2019-01-01", "2029-01-01")],
    **{
        offset: [("2020-12-20", "2021-01-12"), ("2026-12-20", "2027-01-12"),
                 ("2028-02-20", "2028-03-05")]
        for offset in (14400, -32400, 1800, -1, 86399, -86399)
    },
}  # fmt: skip


@pytest.mark.parametrize("offset", list(SPANS))
def test_every_hour_boundary_and_its_neighbours_match_datetime(offset: int) -> None:
    windows = [calendar(kind, offset) for kind in KINDS]
    for first, last in SPANS[offset]:
        local = datetime.fromisoformat(first)
        boundary = unix(first) + offset  # local hours begin at B = local midnight + offset
        before = [oracle(w.kind, offset, boundary - 1) for w in windows]
        stop = unix(last) + offset
        turns = {w.kind: 0 for w in windows}
        while boundary < stop:
            for i, w in enumerate(windows):
                old = before[i]
                # Days, weeks and months turn only at local midnight: ask the oracle there.
                new = (
                    oracle(w.kind, offset, boundary) if w.kind == "hour" or local.hour == 0 else old
                )
                if new != old:
                    assert old.end == new.start == boundary
                    assert period_of(w, boundary - US) == old  # a hair before: the old one
                    assert period_of(w, boundary + US) == new
                    turns[w.kind] += 1
                assert period_of(w, boundary) == new, (w, boundary)
                before[i] = new
            boundary += 3600
            local += timedelta(hours=1)
        assert turns["hour"] >= 24 * 14 and turns["week"] >= 2 and turns["month"] >= 1


def test_every_day_from_1970_to_2100_matches_datetime() -> None:
    windows = [calendar(kind) for kind in ("day", "week", "month")]
    day = date(1970, 1, 1)
    s = 0
    while day.year <= 2100:
        iso = day.isocalendar()
        expected = [day.isoformat(), f"{iso.year:04d}-W{iso.week:02d}", day.isoformat()[:7]]
        assert [id_of(w, s + 43200.5) for w in windows] == expected
        s += 86400
        day += timedelta(days=1)


# -- worked values ------------------------------------------------------------------------------


def test_the_docstring_example() -> None:
    t = unix("2026-12-03T02:30:00") + 0.25
    assert t == 1796265000.25
    windows = parse_windows(
        [
            "all",
            "hour",
            "day",
            "week",
            "month",
            {"name": "s", "every": 604800, "start": 1793851200},
        ],
        14400,
    )
    assert unix("2026-11-05T04:00:00") == 1793851200
    got = [period_of(w, t) for w in windows]
    assert got == [
        ALL,
        Period("2026-12-02T22", unix("2026-12-03T02:00:00"), unix("2026-12-03T03:00:00")),
        Period("2026-12-02", 1796184000, 1796270400),
        Period("2026-W49", unix("2026-11-30T04:00:00"), unix("2026-12-07T04:00:00")),
        Period("2026-12", unix("2026-12-01T04:00:00"), unix("2027-01-01T04:00:00")),
        Period("s-4", unix("2026-11-26T04:00:00"), unix("2026-12-03T04:00:00")),
    ]


@pytest.mark.parametrize(
    ("when", "kind", "period_id"),
    [
        ("2026-12-02T13:59:59", "hour", "2026-12-02T13"),
        ("2026-12-02T13:00:00", "day", "2026-12-02"),
        ("2026-12-02T13:00:00", "week", "2026-W49"),
        ("2026-12-02T13:00:00", "month", "2026-12"),
        ("2020-12-31T12:00:00", "week", "2020-W53"),
        ("2021-01-03T23:59:59", "week", "2020-W53"),
        ("2021-01-04T00:00:00", "week", "2021-W01"),
        ("2024-12-30T00:00:00", "week", "2025-W01"),
        ("2026-12-28T00:00:00", "week", "2026-W53"),
        ("2027-01-01T00:00:00", "week", "2026-W53"),
        ("2028-01-02T23:00:00", "week", "2027-W52"),
        ("2024-02-29T23:59:59", "day", "2024-02-29"),
        ("1970-01-01T00:00:00", "week", "1970-W01"),
        ("2100-03-01T00:00:00", "day", "2100-03-01"),
    ],
)
def test_known_ids(when: str, kind: str, period_id: str) -> None:
    assert id_of(calendar(kind), unix(when)) == period_id


@pytest.mark.parametrize(
    ("month", "days"),
    [("2024-02", 29), ("2025-02", 28), ("2000-02", 29), ("2100-02", 28), ("2026-04", 30),
     ("2026-12", 31)],
)  # fmt: skip
def test_month_lengths(month: str, days: int) -> None:
    p = parse_period(calendar("month"), month)
    assert p.end is not None and p.start is not None
    assert p.end - p.start == days * 86400


def test_reset_offset_moves_every_boundary_and_names_local_dates() -> None:
    four_am = calendar("day", 14400)
    turn = unix("2026-12-03T04:00:00")
    assert id_of(four_am, turn - US) == "2026-12-02"
    assert id_of(four_am, turn) == "2026-12-03"
    tokyo = calendar("day", -32400)  # midnight in UTC+9 is 15:00 UTC the day before
    assert period_of(tokyo, unix("2026-12-01T15:00:00")) == Period(
        "2026-12-02", unix("2026-12-01T15:00:00"), unix("2026-12-02T15:00:00")
    )
    assert id_of(calendar("week", 14400), unix("2026-11-30T03:59:59")) == "2026-W48"
    assert id_of(calendar("month", 14400), unix("2027-01-01T03:59:59")) == "2026-12"


def test_custom_window_periods_count_from_start() -> None:
    w = season("weekly", 604800, 1_767_571_200)  # Monday 2026-01-05
    assert period_of(w, 1_767_571_200 - US) is None  # before start: no period, writes skip it
    assert period_of(w, 1_767_571_200) == Period("weekly-1", 1_767_571_200, 1_768_176_000)
    assert id_of(w, 1_768_176_000 - US) == "weekly-1"
    assert id_of(w, 1_768_176_000) == "weekly-2"
    assert previous_period(w, parse_period(w, "weekly-1")) is None
    assert recent_periods(w, 1_767_571_200 + 3 * 604800, 10) == [
        parse_period(w, f"weekly-{n}") for n in (4, 3, 2, 1)
    ]


def test_all_is_one_period_that_never_closes() -> None:
    w = calendar("all", 14400)
    assert w.offset == 0
    assert period_of(w, 0) is ALL and period_of(w, T_MAX - 1) is ALL
    assert parse_period(w, "all") is ALL
    assert next_period(w, ALL) is None and previous_period(w, ALL) is None
    assert recent_periods(w, 1e9, 5) == [ALL]


def test_the_supported_range_ends_cleanly() -> None:
    for kind in KINDS:
        for offset in (86399, 0, -86399):
            w = calendar(kind, offset)
            first, last = period_of(w, T_MIN), period_of(w, T_MAX - 1)
            assert first is not None and last is not None
            assert previous_period(w, first) is None and next_period(w, last) is None
            assert parse_period(w, first.id) == first and parse_period(w, last.id) == last
            assert len(last.id.split("-")[0]) == 4
    for t in (T_MIN - US, T_MAX, nan, inf, -inf, 1e300):
        with pytest.raises(InvalidArgument, match="instant must be unix seconds"):
            period_of(calendar("day"), t)
    for w in (calendar("all"), calendar("day", 14400), calendar("week", -86399)):
        cache = PeriodCache(w)  # warmed by a period reaching past the range, then asked outside it
        for inside, outside in ((T_MIN, T_MIN - 1), (T_MAX - 1, T_MAX)):
            cache.period_of(inside)
            with pytest.raises(InvalidArgument):
                cache.period_of(outside)


# -- properties ---------------------------------------------------------------------------------

offsets = st.one_of(st.sampled_from([0, 14400, -32400, 86399, -86399]), st.integers(-86399, 86399))
calendars = st.builds(calendar, st.sampled_from(KINDS), offsets)
seasons = st.builds(
    season,
    st.sampled_from(["s", "weekly", "season_2", "z" * 32]),  # the grammar: spec tests below
    st.one_of(st.sampled_from([60, 3600, 86400, 604800, MAX_EVERY]), st.integers(60, MAX_EVERY)),
    st.one_of(st.sampled_from([T_MIN, 1_767_571_200]), st.integers(T_MIN, T_MAX - 1)),
)
windows = st.one_of(calendars, seasons, st.just(calendar("all")))
instants = st.one_of(
    st.floats(T_MIN, T_MAX, exclude_max=True),
    st.integers(T_MIN, T_MAX - 1),
    st.integers(T_MIN + 1, T_MAX - 1).map(lambda s: s - US),  # a hair before a whole second
    st.integers(T_MIN, 4_102_444_800),  # 1970-2100, where the boards live
)


LENGTHS = {
    "hour": {3600},
    "day": {86400},
    "week": {604800},
    "month": {days * 86400 for days in (28, 29, 30, 31)},
}


@settings(max_examples=800, derandomize=True)
@given(windows, instants)
def test_a_period_contains_its_instants_and_round_trips(window: Window, t: float) -> None:
    p = period_of(window, t)
    if p is None:
        assert window.kind == "every" and t < window.start
        return
    if p is ALL:
        return
    assert p.start is not None and p.end is not None
    assert p.start <= t < p.end
    assert period_of(window, max(p.start, T_MIN)) == p
    assert period_of(window, min(p.end, T_MAX) - 1) == p  # its last whole second
    assert parse_period(window, p.id) == p
    after = next_period(window, p)
    if after is not None:
        assert after.start == p.end and period_of(window, p.end) == after
        assert previous_period(window, after) == p
    before = previous_period(window, p)
    if before is not None:
        assert before.end == p.start and next_period(window, before) == p
    assert p.end - p.start in LENGTHS.get(window.kind, {window.every})


@settings(max_examples=800, derandomize=True)
@given(calendars, instants)
def test_calendar_periods_match_datetime(window: Window, t: float) -> None:
    assert period_of(window, t) == oracle(window.kind, window.offset, floor(t))


@settings(max_examples=300, derandomize=True)
@given(offsets, instants)
def test_ids_name_one_local_clock(offset: int, t: float) -> None:
    hour, day, month = (id_of(calendar(kind, offset), t) for kind in ("hour", "day", "month"))
    assert hour[:10] == day and day[:7] == month  # the hour 2026-12-02T22 is in 2026-12-02


@settings(max_examples=500, derandomize=True)
@given(seasons, instants)
def test_custom_periods_match_exact_fractions(window: Window, t: float) -> None:
    elapsed = Fraction(t) - window.start  # Fraction(float) is the float's exact value
    if elapsed < 0:
        assert period_of(window, t) is None
        return
    n = floor(elapsed / window.every) + 1
    start = window.start + (n - 1) * window.every
    assert period_of(window, t) == Period(f"{window.name}-{n}", start, start + window.every)


@settings(max_examples=200, derandomize=True)
@given(windows, instants, st.lists(st.integers(-(10**6), 10**6), max_size=30))
def test_the_cache_answers_as_period_of_does(window: Window, t: float, steps: list[int]) -> None:
    cache = PeriodCache(window)
    for step in [0, *steps]:
        t = min(max(t + step / 7, T_MIN), T_MAX - 1)  # mostly forward and back within a period
        p = cache.period_of(t)
        assert p == period_of(window, t)
        # The cached interval's edges: its end, and a hair before its start, are elsewhere.
        edges = [window.start] if p is None else [p.end, p.start and p.start - US]
        for edge in edges:
            if edge is not None and T_MIN <= edge < T_MAX:
                assert cache.period_of(edge) == period_of(window, edge)
                assert cache.period_of(t) == p


def test_the_cache_turns_at_the_boundary() -> None:
    cache = PeriodCache(season("s", 60, 600))
    assert cache.period_of(599.999999) is None
    assert cache.period_of(600) == Period("s-1", 600, 660)
    assert cache.period_of(659.999999) == Period("s-1", 600, 660)
    assert cache.period_of(660) == Period("s-2", 660, 720)
    assert cache.period_of(0) is None


@settings(max_examples=200, derandomize=True)
@given(windows, instants, st.integers(0, 101))
def test_recent_periods_are_consecutive_newest_first(window: Window, t: float, k: int) -> None:
    got = recent_periods(window, t, k)
    assert len(got) <= k
    if got:
        assert got[0] == period_of(window, t)
    for newer, older in pairwise(got):
        assert older.end == newer.start
    if 0 < len(got) < k:  # stopped early: nothing before the last one
        assert previous_period(window, got[-1]) is None


# -- ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("week", "2026-W54"), ("week", "2027-W53"), ("week", "2026-W00"), ("week", "2026-W1"),
        ("week", "2026-w49"), ("week", "1969-W52"), ("week", "0000-W01"),
        ("month", "2026-13"), ("month", "2026-00"), ("month", "2026-1"), ("month", "26-12"),
        ("month", "2026-12\n"), ("month", " 2026-12"), ("month", "\uff12026-12"),
        ("day", "2026-02-29"), ("day", "2024-02-30"), ("day", "2026-04-31"), ("day", "2026-12-2"),
        ("day", "2026-12-02T13"), ("day", "9999-12-31"), ("day", "1969-12-30"),
        ("hour", "2026-12-02T24"), ("hour", "2026-12-02 13"), ("hour", "2026-12-02"),
        ("all", "current"), ("all", "ALL"), ("all", "2026-12"),
    ],
)  # fmt: skip
def test_malformed_and_out_of_range_ids_are_refused(kind: str, bad: str) -> None:
    with pytest.raises(InvalidArgument, match="period"):
        parse_period(calendar(kind), bad)


@pytest.mark.parametrize(
    "bad", ["s-0", "s-01", "s-", "s", "t-1", "S-1", "s-1.0", "s--1", "s-1 ", "s-99999999999"]
)
def test_custom_ids_are_refused_unless_canonical(bad: str) -> None:
    with pytest.raises(
        InvalidArgument,
        match=r"period must be an id of window 's' such as 's-1'|outside the supported",
    ):
        parse_period(season("s", 604800, 1_767_571_200), bad)


def test_non_string_ids_are_refused_and_quoted_safely() -> None:
    for bad in (49, None, ["2026-W49"], {"id": 1}):
        with pytest.raises(InvalidArgument, match="such as '2026-W49'"):
            parse_period(calendar("week"), bad)
    with pytest.raises(InvalidArgument, match="looks like a credential") as e:
        parse_period(calendar("week"), "a" * 40)
    assert "a" * 40 not in str(e.value)


# -- window specs -------------------------------------------------------------------------------


def test_specs_round_trip() -> None:
    spec: list[object] = ["all", "week", "day", {"name": "s1", "every": 3600, "start": 0}]
    ws = parse_windows(spec, -3600)
    assert [w.spec() for w in ws] == spec
    assert [w.offset for w in ws] == [0, -3600, -3600, 0]
    assert parse_windows([w.spec() for w in ws], -3600) == ws


GOOD = {"name": "s", "every": 60, "start": 0}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "non-empty array"),
        ("day", "non-empty array .* but got 'day'"),
        (None, "but got None"),
        (["all"] * (MAX_WINDOWS + 1), f"at most {MAX_WINDOWS} windows, but got 9"),
        (["daily"], r"windows\[0\] must be 'all', .* but got 'daily'"),
        (["Day"], "but got 'Day'"),
        (["day", "day"], r"windows\[1\]: window 'day' is listed twice"),
        ([GOOD, {**GOOD, "every": 120}], "window 's' is listed twice"),
        ([7], r"windows\[0\] must be a window name or an object"),
        ([["day"]], r"but got \['day'\]"),
        ([{**GOOD, "offset": 1}], "unknown field 'offset'"),
        ([{"every": 60, "start": 0}], r"name must be 1-32 characters .* but got None"),
        ([{**GOOD, "name": "day"}], "'day' is a built-in window"),
        ([{**GOOD, "name": "all"}], "'all' is a built-in window"),
        ([{**GOOD, "name": "Season"}], "but got 'Season'"),
        ([{**GOOD, "name": "s-1"}], "but got 's-1'"),
        ([{**GOOD, "name": "1s"}], "but got '1s'"),
        ([{**GOOD, "name": "s" * 33}], r"1-32 characters .* credential \(not shown\)"),
        ([{**GOOD, "name": "s\u00e9"}], "characters of a-z"),
        ([{**GOOD, "name": "x" * 5000}], "but got a string of 5000 characters"),
        ([{**GOOD, "every": 59}], "every must be an integer .* from 60 to .* but got 59"),
        ([{**GOOD, "every": MAX_EVERY + 1}], "every must be an integer"),
        ([{**GOOD, "every": 60.0}], "but got 60.0"),
        ([{**GOOD, "every": True}], "but got True"),
        ([{**GOOD, "every": None}], "but got None"),
        ([{**GOOD, "start": -1}], "start must be an integer unix time .* but got -1"),
        ([{**GOOD, "start": T_MAX}], "start must be an integer unix time"),
        ([{**GOOD, "start": 1.5}], "but got 1.5"),
        ([{**GOOD, "start": "2026-01-01"}], "but got '2026-01-01'"),
    ],
)
def test_bad_window_specs_are_refused_naming_the_value(spec: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_windows(spec)


def test_too_many_windows_is_a_limit() -> None:
    with pytest.raises(LimitExceeded):
        parse_windows([{**GOOD, "name": f"s{i}"} for i in range(MAX_WINDOWS + 1)])
    assert len(parse_windows([{**GOOD, "name": f"s{i}"} for i in range(MAX_WINDOWS)])) == 8


@pytest.mark.parametrize("bad", [86400, -86400, 1.5, 14400.0, True, None, "14400", 10**30])
def test_reset_offset_is_an_integer_under_a_day(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="reset_offset must be an integer"):
        parse_reset_offset(bad)
    with pytest.raises(InvalidArgument, match="reset_offset"):
        parse_windows(["day"], bad)
    assert parse_reset_offset(86399) == 86399 and parse_reset_offset(-86399) == -86399


def test_windows_cannot_be_built_broken() -> None:
    for broken in (
        lambda: Window("day", "hour"),
        lambda: Window("day", "day", offset=86400),
        lambda: Window("all", "all", offset=1),
        lambda: Window("s", "every", every=59),
        lambda: Window("day", "every", every=60),
        lambda: Window("day", "day", every=60),
    ):
        with pytest.raises(AssertionError):
            broken()
