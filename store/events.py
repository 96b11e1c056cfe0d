"""Typed event records: what the store announces after every mutation, as plain tuples.

The store emits these tuples to its observers (the journal, the change feed, undo); they carry
the *resulting* state, plus the state each replaced (the trailing fields) so a change whose
journal record was lost can be undone. Tuples, not dataclasses: building one costs a single
allocation on the write path, and the ``Literal`` tag in position 0 lets mypy narrow the union
on ``e[0] == "bset"`` so ``e[6]`` is known to be the rank, with nothing paid at run time.

    bcfg    board created (previous None) or reconfigured: every option, the previous config,
            the instant (closed periods are trimmed to ``keep`` then)
    bdrop   board dropped, with every entry (the Board rides along, for undo)
    bset    an entry's resulting state in one period of one window: score, seq, metadata,
            rank, previous rank, what it replaced (old sort key, old metadata), window, period
    bdel    an entry removed from one period: seq after, previous rank, what it replaced
    bbatch  every bset/bdel of one scores:batch, or of one write or delete that touched
            several windows: all or nothing
    broll   a window's period ended: the closed period's id and the current one's (None
            before a custom window's start); derived from the clock, never journalled
    sput    a session's resulting state (create, data change, rotate's new id); prior state
    stouch  an idle deadline moved; the previous one
    sdel    a session ended: id, reason (deleted | revoked | rotated | expired | evicted), the
            session as it was

Position reference (0 is the tag)::

    ("bset",  board, member, score, seq, metadata, rank, previous_rank, old_key, old_metadata,
              window, period)
    ("bdel",  board, member, seq, previous_rank, old_key, old_metadata, window, period)
    ("broll", board, window, closed_period, current_period)
"""

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from store.boards import Board, BoardConfig
    from store.sessions import Session

Score = int | float
Metadata = dict[str, Any] | None

BoardConfigured = tuple[Literal["bcfg"], str, dict[str, Any], "BoardConfig | None", float]
BoardDropped = tuple[Literal["bdrop"], str, "Board"]
EntrySet = tuple[
    Literal["bset"],
    str,
    str,
    Score,
    int,
    Metadata,
    int,
    int | None,
    bytes | None,
    Metadata,
    str,
    str,
]
EntryDeleted = tuple[Literal["bdel"], str, str, int, int, bytes, Metadata, str, str]
EntryChange = EntrySet | EntryDeleted  # what a "bbatch" holds, and what an undo restores
BatchSet = tuple[Literal["bbatch"], str, list[EntryChange]]
PeriodRolled = tuple[Literal["broll"], str, str, str | None, str | None]

BoardEvent = BoardConfigured | BoardDropped | EntrySet | EntryDeleted | BatchSet | PeriodRolled

SessionPut = tuple[Literal["sput"], "Session", tuple[dict[str, Any], int, float] | None]
SessionTouched = tuple[Literal["stouch"], str, float, float]
SessionEnded = tuple[Literal["sdel"], str, str, "Session"]

SessionEvent = SessionPut | SessionTouched | SessionEnded

StoreEvent = BoardEvent | SessionEvent
