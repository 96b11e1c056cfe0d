"""Board options: the one table that lists every option, its JSON form, default and change rule.

DESIGN.md "Boards" is the contract; ``OPTIONS`` below is its executable copy. Adding an option
is one ``BoardConfig`` field plus one ``OPTIONS`` row (a parser that turns the JSON value into
the stored one, raising InvalidArgument that quotes the bad value; the JSON form back; and
whether it may change only while the board holds no entry in any period)::

    option        stored as                       default    may change
    order         "desc" | "asc"                  "desc"     while empty  (the sort key)
    update        "best" | "latest" | "sum"       "best"     any time
    ties          "first" | "member"              "first"    while empty  (the sort key)
    ranking       "ordinal" | "competition" | "dense"  "ordinal"  any time  (store/ranks.py)
    windows       tuple[Window, ...]              ("all",)   while empty  (the tables)
    reset_offset  int, |x| < 86400                0          while empty  (period ids)
    keep          int 0..100                      4          any time
    grace         int seconds 0..MAX_GRACE        0          any time
    min_score     Score | None (inclusive)        None       any time
    max_score     Score | None (inclusive)        None       any time
    player_writes bool                            false      any time  (service/players.py)
    player_rate   int 1..PLAYER_RATE_MAX          60         any time  (writes/member/minute)
    public_read   bool                            false      any time  (service/gate.py)

Cross-option rules live in ``_finish`` (windows take the board's reset_offset; min <= max).
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from store.errors import InvalidArgument
from store.periods import Window, parse_reset_offset, parse_windows
from store.ranks import RANKINGS, Ranking
from store.show import show
from store.values import Score, check_score

Order = Literal["desc", "asc"]
Update = Literal["best", "latest", "sum"]
Ties = Literal["first", "member"]

MAX_KEEP = 100
MAX_GRACE = 7 * 86400  # a match longer than a week is not a match
PLAYER_RATE_MAX = 10_000  # writes per member per minute
DEFAULT_PLAYER_RATE = 60


class Option(NamedTuple):
    parse: Callable[[object], Any]  # JSON value -> stored value; InvalidArgument otherwise
    dump: Callable[[Any], Any]  # stored value -> JSON value
    while_empty: bool  # may change only while the board holds no entry in any period


def _same(value: Any) -> Any:
    return value


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[object], Any]:
    def parse(value: object) -> Any:
        if value not in choices or type(value) is not str:
            raise InvalidArgument(
                f"board option {show(name)} must be one of {choices}, but got {show(value)}"
            )
        return value

    return parse


def _int(name: str, low: int, high: int) -> Callable[[object], Any]:
    def parse(value: object) -> Any:
        if type(value) is not int or not low <= value <= high:
            raise InvalidArgument(
                f"board option {show(name)} must be an integer from {low} to {high}, "
                f"but got {show(value)}"
            )
        return value

    return parse


def _bool(name: str) -> Callable[[object], Any]:
    def parse(value: object) -> Any:
        if type(value) is not bool:
            raise InvalidArgument(
                f"board option {show(name)} must be true or false, but got {show(value)}"
            )
        return value

    return parse


def _player_rate(value: object) -> int:
    if type(value) is not int or not 1 <= value <= PLAYER_RATE_MAX:
        raise InvalidArgument(
            f"board option 'player_rate' must be an integer from 1 to {PLAYER_RATE_MAX} "
            f"(writes per member per minute), but got {show(value)}"
        )
    return value


def _bound(name: str) -> Callable[[object], Any]:
    def parse(value: object) -> Any:
        if value is None:
            return None
        try:
            return check_score(value)
        except InvalidArgument:
            raise InvalidArgument(
                f"board option {show(name)} must be a score (a finite number of magnitude "
                f"below 2**63) or null, but got {show(value)}"
            ) from None

    return parse


def _windows(value: object) -> tuple[Window, ...]:
    return parse_windows(value, 0)  # the board's reset_offset is applied in _finish


def _dump_windows(windows: tuple[Window, ...]) -> list[Any]:
    return [w.spec() for w in windows]


OPTIONS: dict[str, Option] = {
    "order": Option(_choice("order", ("desc", "asc")), _same, True),
    "update": Option(_choice("update", ("best", "latest", "sum")), _same, False),
    "ties": Option(_choice("ties", ("first", "member")), _same, True),
    "ranking": Option(_choice("ranking", RANKINGS), _same, False),
    "windows": Option(_windows, _dump_windows, True),
    "reset_offset": Option(parse_reset_offset, _same, True),
    "keep": Option(_int("keep", 0, MAX_KEEP), _same, False),
    "grace": Option(_int("grace", 0, MAX_GRACE), _same, False),
    "min_score": Option(_bound("min_score"), _same, False),
    "max_score": Option(_bound("max_score"), _same, False),
    # Player policy (service/players.py and service/gate.py enforce it)
    "player_writes": Option(_bool("player_writes"), _same, False),
    "player_rate": Option(_player_rate, _same, False),
    "public_read": Option(_bool("public_read"), _same, False),
}

ALL_WINDOWS: tuple[Window, ...] = (Window("all", "all"),)


@dataclass(frozen=True, slots=True)
class BoardConfig:
    order: Order = "desc"
    update: Update = "best"
    ties: Ties = "first"
    ranking: Ranking = "ordinal"
    windows: tuple[Window, ...] = ALL_WINDOWS
    reset_offset: int = 0
    keep: int = 4
    grace: int = 0
    min_score: Score | None = None
    max_score: Score | None = None
    player_writes: bool = False
    player_rate: int = DEFAULT_PLAYER_RATE
    public_read: bool = False

    @classmethod
    def from_options(
        cls, options: dict[str, Any], base: "BoardConfig | None" = None
    ) -> "BoardConfig":
        """Build from client options over ``base`` (the defaults if None); an unknown option or
        a bad value is an InvalidArgument that names it."""
        values: dict[str, Any] = {}
        for name, value in options.items():
            option = OPTIONS.get(name)
            if option is None:
                raise InvalidArgument(
                    f"unknown board option {show(name)}; expected one of {sorted(OPTIONS)}"
                )
            values[name] = option.parse(value)
        return _finish(dataclasses.replace(base or cls(), **values))

    def as_dict(self) -> dict[str, Any]:
        """Every option in its JSON form (what GET /v1/boards/{board} shows)."""
        return {name: option.dump(getattr(self, name)) for name, option in OPTIONS.items()}

    def fixed_changes(self, other: "BoardConfig") -> list[str]:
        """The options that differ from ``other`` and may change only while empty."""
        return [
            name
            for name, option in OPTIONS.items()
            if option.while_empty and getattr(self, name) != getattr(other, name)
        ]


def _finish(config: BoardConfig) -> BoardConfig:
    offset = config.reset_offset
    windows = tuple(
        w
        if w.kind in ("all", "every") or w.offset == offset
        else dataclasses.replace(w, offset=offset)
        for w in config.windows
    )
    lo, hi = config.min_score, config.max_score
    if lo is not None and hi is not None and lo > hi:
        raise InvalidArgument(
            f"board option 'min_score' ({show(lo)}) must not exceed 'max_score' ({show(hi)})"
        )
    if windows != config.windows:
        config = dataclasses.replace(config, windows=windows)
    return config
