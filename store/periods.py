"""Periods: which season of a window an instant falls in, by exact integer arithmetic.

A board keeps one leaderboard per *window* (DESIGN.md "Windows and periods"). A window cuts time
into *periods*, half-open intervals ``[start, end)`` of unix seconds, each named by an id. With
``reset_offset = 14400`` ("days turn at 04:00 UTC") and t = 2026-12-03T02:30:00.25Z::

    window                     id of t's period   [start, end)
    all                        all                [None, None)  one period, it never closes
    hour                       2026-12-02T22      [2026-12-03T02:00Z, 2026-12-03T03:00Z)
    day                        2026-12-02         [2026-12-02T04:00Z, 2026-12-03T04:00Z)
    week                       2026-W49           [2026-11-30T04:00Z, 2026-12-07T04:00Z)
    month                      2026-12            [2026-12-01T04:00Z, 2027-01-01T04:00Z)
    {"name": "s", "every": 604800, "start": 2026-11-05T04:00Z}
                               s-4                [2026-11-26T04:00Z, 2026-12-03T04:00Z)

**reset_offset is a clock.** Calendar windows read ``local = t - reset_offset`` as if it were UTC,
so every calendar boundary moves by the offset and ids name *local* dates. Hence the hour above
is ``2026-12-02T22``, not ``...T02``: it lies inside the day ``2026-12-02``, as every hour id's
date does on every board. An offset of -32400 (-9 h) makes each day the Tokyo day of the same
date; 14400 is the same clock as UTC-4. Valid: an integer with ``-86400 < reset_offset < 86400``
-- every reset time of day, each with the dates of a zone west (positive) or east (negative) of
UTC. Larger offsets would name dates no clock in the world shows, and one offset serves all of a
board's windows, so it cannot pick a weekday for weeks alone: a weekly reset on Tuesdays at 09:00
is a custom window (below) whose start is a Tuesday 09:00.
``all`` and custom windows ignore the offset.

**Custom windows** ``{"name": N, "every": E, "start": S}``: period n (n >= 1) is
``[S + (n-1)E, S + nE)``, id ``N-n``; before S there is none (``period_of`` answers None, and
writes skip the window). N is 1-32 characters of ``[a-z0-9_]`` starting with a letter and not a
built-in name, so the kind of an id shows in its first character (a digit: calendar; a letter:
custom or ``all``) and ``N-n`` splits at its only ``-``. E is an integer in [60 s, 3660 days];
S an integer in the supported range.

**Exactness.** Every boundary is an integer (offsets, starts and lengths are integers; unix time
has no leap seconds), and for an integer B, ``t >= B`` iff ``floor(t) >= B``. So each call
floors t once and computes on Python ints: no float drift at any magnitude; an instant exactly
at a boundary is in the new period, and B - 1e-6 in the old one (floats tell the two apart
until 2106; later, the float just below B is in the old one). Dates come from Hinnant's
``civil_from_days`` (proleptic Gregorian, integer only), not from ``datetime``, so the tests'
``datetime`` oracle checks an independent computation. Trace for ``day`` and t above::

    s     = floor(t)                  = 1796265000
    local = s - 14400                 = 1796250600
    days, sec = divmod(local, 86400)  = (20789, 81000)    day 20789 since 1970, 22:30 local
    civil(20789)                      = (2026, 12, 2)  -> id 2026-12-02
    start = days * 86400 + 14400      = 1796184000        2026-12-02T04:00Z
    end   = start + 86400             = 1796270400

ISO weeks start on Monday and belong to the year of their Thursday: 2027-01-01 is in 2026-W53,
2024-12-30 in 2025-W01. Supported instants: ``T_MIN <= t < T_MAX`` (1970-01-01 to 9999-12-31),
so every id has a four-digit year; others raise InvalidArgument.

**Cost**, best of 5 on the shared 2-core dev box (CPython 3.11, load ~2), measured with
``python -m timeit -s "from store.periods import parse_windows, period_of;
w = parse_windows(['week'], 14400)[0]; t = 1796265000.25" "period_of(w, t)"``:
``period_of`` 1.1 us (hour, day, month), 1.5 us (week), 0.76 us (custom), 0.14 us (all);
``parse_period`` 2.4 us (a regex). Writes call ``PeriodCache.period_of`` instead: it keeps the
last answer, which is right until "now" crosses a boundary, so a hit is two float comparisons,
0.10 us.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from math import floor
from typing import Final, Literal, NamedTuple

from store.errors import InvalidArgument, LimitExceeded, PeriodNotFound
from store.show import show

Kind = Literal["all", "hour", "day", "week", "month", "every"]

BUILT_IN: Final = ("all", "hour", "day", "week", "month")  # windows named by a bare string
MAX_WINDOWS: Final = 8  # each window is one more index touched by every write
MIN_EVERY: Final = 60
MAX_EVERY: Final = 3660 * 86400  # a season longer than a decade is an `all` window
MAX_OFFSET: Final = 86400  # exclusive, both signs
T_MIN: Final = 0  # 1970-01-01T00:00Z
T_MAX: Final = 253_402_214_400  # 9999-12-31T00:00Z: with |offset| < 1 day, years stay 4 digits

HOUR: Final = 3600
DAY: Final = 86400
WEEK: Final = 7 * DAY

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}", re.ASCII)
_HOUR_ID = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2})", re.ASCII)
_DAY_ID = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_WEEK_ID = re.compile(r"([0-9]{4})-W([0-9]{2})", re.ASCII)
_MONTH_ID = re.compile(r"([0-9]{4})-([0-9]{2})", re.ASCII)
_SEASON_ID = re.compile(r"([a-z][a-z0-9_]{0,31})-([1-9][0-9]{0,11})", re.ASCII)
_KIND: Final[dict[str, Kind]] = {"all": "all", "hour": "hour", "day": "day", "week": "week",
                                 "month": "month"}  # fmt: skip
_TWO = tuple(f"{i:02d}" for i in range(60))  # 2.5x faster than {m:02d} in the id f-string


class Period(NamedTuple):
    """One period of a window: ``start <= t < end`` (unix seconds, integers).

    Only the ``all`` period has ``start = end = None``: it began before anything and never closes.
    """

    id: str
    start: int | None
    end: int | None


ALL: Final = Period("all", None, None)


@dataclass(frozen=True, slots=True)
class Window:
    """A parsed window. Build it with ``parse_windows``; ``spec()`` gives back its JSON form.

    ``offset`` is the board's reset_offset for hour, day, week and month, 0 for the others;
    ``every`` and ``start`` are set for custom windows (kind ``every``) only.
    """

    name: str
    kind: Kind
    offset: int = 0
    every: int = 0
    start: int = 0

    def __post_init__(self) -> None:
        self._check()

    def spec(self) -> str | dict[str, str | int]:
        if self.kind == "every":
            return {"name": self.name, "every": self.every, "start": self.start}
        return self.name

    def _check(self) -> None:
        if self.kind == "every":
            assert _NAME.fullmatch(self.name) and self.name not in BUILT_IN, self
            assert MIN_EVERY <= self.every <= MAX_EVERY and T_MIN <= self.start < T_MAX, self
            assert self.offset == 0, self
        else:
            assert self.kind in BUILT_IN and self.name == self.kind, self
            assert self.every == 0 and self.start == 0, self
            assert -MAX_OFFSET < self.offset < MAX_OFFSET, self
            assert self.kind != "all" or self.offset == 0, self


# -- window specs -------------------------------------------------------------------------------


def parse_windows(windows: object, reset_offset: object = 0) -> tuple[Window, ...]:
    """A board's ``windows`` option (JSON) under its ``reset_offset``, validated.

    Raises InvalidArgument naming the bad item, or LimitExceeded past MAX_WINDOWS windows.
    """
    offset = parse_reset_offset(reset_offset)
    if type(windows) is not list or not windows:
        raise InvalidArgument(
            "windows must be a non-empty array of 'all', 'hour', 'day', 'week', 'month' or "
            f"{{name, every, start}} objects, but got {show(windows)}"
        )
    if len(windows) > MAX_WINDOWS:
        raise LimitExceeded(f"a board has at most {MAX_WINDOWS} windows, but got {len(windows)}")
    parsed: list[Window] = []
    for i, spec in enumerate(windows):
        window = _parse_window(spec, offset, f"windows[{i}]")
        if any(w.name == window.name for w in parsed):
            raise InvalidArgument(f"windows[{i}]: window {show(window.name)} is listed twice")
        parsed.append(window)
    return tuple(parsed)


def parse_reset_offset(value: object) -> int:
    if type(value) is not int or not -MAX_OFFSET < value < MAX_OFFSET:
        raise InvalidArgument(
            f"reset_offset must be an integer number of seconds above -{MAX_OFFSET} and below "
            f"{MAX_OFFSET}, but got {show(value)}"
        )
    return value


def _parse_window(spec: object, offset: int, where: str) -> Window:
    if type(spec) is str:
        if spec not in BUILT_IN:
            raise InvalidArgument(
                f"{where} must be 'all', 'hour', 'day', 'week', 'month' or an object "
                f"{{name, every, start}}, but got {show(spec)}"
            )
        kind = _KIND[spec]
        return Window(spec, kind, 0 if kind == "all" else offset)
    if type(spec) is not dict:
        raise InvalidArgument(
            f"{where} must be a window name or an object {{name, every, start}}, "
            f"but got {show(spec)}"
        )
    for key in spec:
        if key not in ("name", "every", "start"):
            raise InvalidArgument(
                f"{where} has an unknown field {show(key)}; a custom window is "
                "{name, every, start}"
            )
    name, every, start = spec.get("name"), spec.get("every"), spec.get("start")
    if type(name) is not str or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{where}.name must be 1-32 characters of a-z, 0-9 and _, starting with a letter, "
            f"but got {show(name)}"
        )
    if name in BUILT_IN:
        raise InvalidArgument(
            f"{where}.name {show(name)} is a built-in window; write {show(name)} instead of "
            "an object, or pick another name"
        )
    if type(every) is not int or not MIN_EVERY <= every <= MAX_EVERY:
        raise InvalidArgument(
            f"{where}.every must be an integer number of seconds from {MIN_EVERY} to "
            f"{MAX_EVERY}, but got {show(every)}"
        )
    if type(start) is not int or not T_MIN <= start < T_MAX:
        raise InvalidArgument(
            f"{where}.start must be an integer unix time from {T_MIN} to {T_MAX - 1}, "
            f"but got {show(start)}"
        )
    return Window(name, "every", 0, every, start)


# -- instant -> period --------------------------------------------------------------------------


def period_of(window: Window, t: float) -> Period | None:
    """The period of ``window`` containing instant ``t``; None before a custom window's start.

    Raises InvalidArgument unless ``T_MIN <= t < T_MAX`` (NaN and infinities included).
    Runtime: O(1), a few microseconds (see the module docstring); PeriodCache for hot paths.
    """
    if not T_MIN <= t < T_MAX:
        raise InvalidArgument(
            f"instant must be unix seconds from {T_MIN} to {T_MAX}, but got {show(t)}"
        )
    return _FIND[window.kind](window, floor(t))


def _all(window: Window, s: int) -> Period | None:
    return ALL


def _hour(window: Window, s: int) -> Period | None:
    local = s - window.offset
    days, sec = divmod(local, DAY)
    y, m, d = _civil(days)
    h = sec // HOUR
    start = s - sec % HOUR
    return Period(f"{y}-{_TWO[m]}-{_TWO[d]}T{_TWO[h]}", start, start + HOUR)


def _day(window: Window, s: int) -> Period | None:
    days = (s - window.offset) // DAY
    y, m, d = _civil(days)
    start = days * DAY + window.offset
    return Period(f"{y}-{_TWO[m]}-{_TWO[d]}", start, start + DAY)


def _week(window: Window, s: int) -> Period | None:
    days = (s - window.offset) // DAY
    monday = days - (days + 3) % 7  # 1970-01-01 was a Thursday
    year = _civil(monday + 3)[0]  # an ISO week belongs to the year of its Thursday
    week = (monday + 3 - _days(year, 1, 1)) // 7 + 1
    start = monday * DAY + window.offset
    return Period(f"{year}-W{_TWO[week]}", start, start + WEEK)


def _month(window: Window, s: int) -> Period | None:
    days = (s - window.offset) // DAY
    y, m, d = _civil(days)
    first = days - d + 1
    start = first * DAY + window.offset
    return Period(f"{y}-{_TWO[m]}", start, start + _month_days(y, m) * DAY)


def _every(window: Window, s: int) -> Period | None:
    if s < window.start:
        return None
    n = (s - window.start) // window.every + 1
    start = window.start + (n - 1) * window.every
    return Period(f"{window.name}-{n}", start, start + window.every)


_FIND = {"all": _all, "hour": _hour, "day": _day, "week": _week, "month": _month, "every": _every}


# -- id -> period -------------------------------------------------------------------------------


def parse_period(window: Window, period_id: object) -> Period:
    """The period of ``window`` named ``period_id`` (as in ``?period=2026-W49``).

    Only canonical ids are accepted -- exactly what ``period_of`` returns for some supported
    instant -- so ``parse_period(w, p.id) == p`` and no two spellings name one period.
    Raises InvalidArgument otherwise.
    """
    period = _parse(window, period_id) if type(period_id) is str else None
    if period is None:
        raise InvalidArgument(
            f"period must be an id of window {show(window.name)} such as "
            f"{show(_EXAMPLE.get(window.kind, window.name + '-1'))}, but got {show(period_id)}"
        )
    if (
        period.start is not None
        and period.end is not None
        and not (period.end > T_MIN and period.start < T_MAX)
    ):
        raise InvalidArgument(
            f"period {show(period_id)} is outside the supported years (unix seconds "
            f"{T_MIN} to {T_MAX})"
        )
    return period


_EXAMPLE = {
    "all": "all",
    "hour": "2026-12-02T13",
    "day": "2026-12-02",
    "week": "2026-W49",
    "month": "2026-12",
}


def _parse(window: Window, text: str) -> Period | None:
    """The period ``text`` names, or None if it is not one of ``window``'s ids."""
    kind = window.kind
    if kind == "all":
        return ALL if text == "all" else None
    if kind == "every":
        match = _SEASON_ID.fullmatch(text)
        if match is None or match[1] != window.name:
            return None
        start = window.start + (int(match[2]) - 1) * window.every
        return Period(text, start, start + window.every)
    if kind == "week":
        match = _WEEK_ID.fullmatch(text)
        if match is None:
            return None
        year, week = int(match[1]), int(match[2])
        if not 1 <= week <= _weeks_in(year):  # year 0000 fails the range check later
            return None
        start = (_week1_monday(year) + 7 * (week - 1)) * DAY + window.offset
        return Period(text, start, start + WEEK)
    if kind == "month":
        match = _MONTH_ID.fullmatch(text)
        if match is None:
            return None
        y, m = int(match[1]), int(match[2])
        if not 1 <= m <= 12:
            return None
        start = _days(y, m, 1) * DAY + window.offset
        return Period(text, start, start + _month_days(y, m) * DAY)
    match = (_HOUR_ID if kind == "hour" else _DAY_ID).fullmatch(text)
    if match is None:
        return None
    y, m, d = int(match[1]), int(match[2]), int(match[3])
    if not 1 <= m <= 12 or not 1 <= d <= _month_days(y, m):
        return None
    start = _days(y, m, d) * DAY + window.offset
    if kind == "day":
        return Period(text, start, start + DAY)
    h = int(match[4])
    if h > 23:
        return None
    return Period(text, start + h * HOUR, start + (h + 1) * HOUR)


# -- navigation ---------------------------------------------------------------------------------


def next_period(window: Window, period: Period) -> Period | None:
    """The period after ``period``; None for ``all`` and past the supported range."""
    if period.end is None or period.end >= T_MAX:
        return None
    return period_of(window, period.end)


def previous_period(window: Window, period: Period) -> Period | None:
    """The period before ``period``; None for ``all``, for a custom window's period 1, and
    before the supported range."""
    if period.start is None or period.start <= T_MIN:
        return None
    return period_of(window, period.start - 1)


def named_period(
    board: str,
    window: Window,
    current: Period | None,
    period: str | None,
    keep: int,
    kept: Callable[[Period], bool],
) -> Period:
    """The period a read names -- ``current`` (also None), ``previous`` or an id -- given the
    window's current one; PeriodNotFound when it has not begun or is no longer kept (``kept``:
    the board's rule, with ``keep`` for the message). Both backends decide through this."""
    if period is None or period == "current":
        if current is None:
            raise PeriodNotFound(
                f"window {show(window.name)} of board {show(board)} has no current period: "
                f"its first begins at {window.start}"
            )
        return current
    if period == "previous":
        before = previous_period(window, current) if current is not None else None
        if before is None:
            raise PeriodNotFound(
                f"window {show(window.name)} of board {show(board)} has no previous period"
            )
        p = before
    else:
        p = parse_period(window, period)
    if not kept(p):
        raise PeriodNotFound(
            f"period {show(p.id)} of window {show(window.name)} is not kept: board "
            f"{show(board)} keeps the current period and the {keep} before it"
        )
    return p


def recent_periods(window: Window, t: float, count: int) -> list[Period]:
    """Up to ``count`` periods, newest first: the one containing ``t``, then those before it.

    What a board with ``keep = k`` retains is ``recent_periods(w, now, k + 1)``. Runtime: O(count).
    """
    periods: list[Period] = []
    period = period_of(window, t)
    while period is not None and len(periods) < count:
        periods.append(period)
        period = previous_period(window, period)
    return periods


class PeriodCache:
    """``period_of(window, t)`` that remembers its last answer: a hit is two comparisons.

    Scores are written at "now", which moves forward, so the last period is almost always the
    answer; a write carrying an earlier ``at`` (grace) costs one full computation. One cache
    per window of a board, used by whoever owns the board: it is not for sharing across threads.
    """

    __slots__ = ("_hi", "_lo", "_period", "window")

    def __init__(self, window: Window) -> None:
        self.window = window
        self._lo: float = 1.0  # lo > hi: empty, the first call computes
        self._hi: float = 0.0
        self._period: Period | None = None

    def period_of(self, t: float) -> Period | None:
        if self._lo <= t < self._hi:
            return self._period
        period = period_of(self.window, t)
        if period is None:  # before a custom window's start
            lo, hi = T_MIN, self.window.start
        else:
            lo = T_MIN if period.start is None else period.start
            hi = T_MAX if period.end is None else period.end
        # Clipped to the supported range so an out-of-range t still raises, as uncached.
        self._lo, self._hi = max(lo, T_MIN), min(hi, T_MAX)
        self._period = period
        return period


# -- proleptic Gregorian calendar on day numbers (day 0 = 1970-01-01) ---------------------------


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number: Hinnant's civil_from_days, on ints."""
    z = days + 719468  # days since 0000-03-01: leap days then fall at the end of a year
    era = z // 146097  # 400-year cycles
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153  # month from March = 0
    d = doy - (153 * mp + 2) // 5 + 1
    if mp < 10:
        return yoe + era * 400, mp + 3, d
    return yoe + era * 400 + 1, mp - 9, d


def _days(y: int, m: int, d: int) -> int:
    """The day number of a date: Hinnant's days_from_civil, on ints."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + 9 if m <= 2 else m - 3) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _month_days(y: int, m: int) -> int:
    if m == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _week1_monday(year: int) -> int:
    """Day number of the Monday of ISO week 1: the week holding January 4."""
    jan4 = _days(year, 1, 4)
    return jan4 - (jan4 + 3) % 7


def _weeks_in(year: int) -> int:
    return (_week1_monday(year + 1) - _week1_monday(year)) // 7
