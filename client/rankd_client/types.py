"""The wire shapes of rankd's answers, as TypedDicts (README "API" and "Real time").

Results are the decoded JSON as it came, typed: no copying into objects, no validation, so a
newer server's extra fields pass through untouched. Timestamps are Unix epoch seconds (floats).
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Score = int | float
Metadata = dict[str, Any]
Order = Literal["desc", "asc"]
UpdateRule = Literal["best", "latest", "sum"]
Ties = Literal["first", "member"]


class Board(TypedDict):
    board: str
    order: Order
    update: UpdateRule
    ties: Ties
    player_writes: bool
    player_rate: int
    public_read: bool
    size: int


class BoardList(TypedDict):
    total: int
    offset: int
    boards: list[Board]


class Entry(TypedDict):
    rank: int
    member: str
    score: Score
    metadata: NotRequired[Metadata]


class Entries(TypedDict):
    """``top`` and ``around``: a slice of the board in rank order."""

    board: str
    total: int
    entries: list[Entry]


class Previous(TypedDict):
    score: Score
    rank: int


class WriteResult(TypedDict):
    member: str
    score: Score
    rank: int
    previous: Previous | None
    changed: bool


class ScoreItem(TypedDict):
    """One item of ``post_batch``."""

    member: str
    score: Score
    metadata: NotRequired[Metadata]


class RankForScore(TypedDict):
    board: str
    score: Score
    rank: int


class Session(TypedDict):
    id: str
    user: str | None
    data: dict[str, Any]
    created_at: float
    expires_at: float
    ttl: int
    max_expires_at: float
    version: int  # the ETag; pass it as ``if_match`` to write only over this version


class UserSessions(TypedDict):
    user: str
    sessions: list[Session]


class Revoked(TypedDict):
    user: str
    revoked: int


class SnapshotResult(TypedDict):
    bytes: int
    seconds: float
    boards: int
    entries: int
    sessions: int


class Health(TypedDict):
    status: str


class Ready(TypedDict):
    status: str
    epoch: str


# -- WebSocket frames (server -> client) -----------------------------------------------------


class TopFrame(TypedDict):
    type: Literal["top"]
    id: str | int
    board: str
    total: int
    entries: list[Entry]
    seq: int
    epoch: str


class RankFrame(TypedDict):
    type: Literal["rank"]
    id: str | int
    board: str
    member: str
    rank: int | None  # None while the member is not on the board
    score: Score | None
    seq: int
    epoch: str
