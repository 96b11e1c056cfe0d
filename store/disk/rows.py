"""On-disk row layouts, one codec per record kind, kept apart from the in-memory types.

Like ``rdb.c`` keeps its encodings apart from ``server.h``'s structs: a field added to, or
reordered in, ``Session`` or ``BoardConfig`` must never change what a file on disk means. Every
layout below is fixed forever; a new field means a new format version, decoded here.

    session row   [id, user, data, created_at, ttl, idle_deadline, max_expires_at, version]
                  (snapshot SESSIONS items, journal ``sput`` payloads)
    config row    {"order", "update", "ties"}  (snapshot BOARD heads, journal ``bcfg``)
                  + {"player_writes", "player_rate", "public_read"} each only when not its
                  default: absent = the default, so rows written before they existed decode
                  unchanged and boards that do not use them write the same bytes as before
    entry row     [member, score, seq, metadata | null]  (journal ``bbatch`` items; ``bset``
                  is [board, *entry row])

Decoders raise ValueError/TypeError on a malformed row; callers turn that into CorruptData
with the file and offset.
"""

from typing import Any

from store.boards import DEFAULT_PLAYER_RATE, BoardConfig
from store.sessions import Session

SESSION_FIELDS = 8


def session_row(s: Session) -> list[Any]:
    return [
        s.id,
        s.user,
        s.data,
        s.created_at,
        s.ttl,
        s.idle_deadline,
        s.max_expires_at,
        s.version,
    ]


def session_from_row(row: Any) -> Session:
    sid, user, data, created_at, ttl, idle_deadline, max_expires_at, version = row
    return Session(
        id=sid,
        user=user,
        data=data,
        created_at=created_at,
        ttl=ttl,
        idle_deadline=idle_deadline,
        max_expires_at=max_expires_at,
        version=version,
    )


def config_row(config: BoardConfig) -> dict[str, Any]:
    row: dict[str, Any] = {"order": config.order, "update": config.update, "ties": config.ties}
    if config.player_writes:
        row["player_writes"] = True
    if config.player_rate != DEFAULT_PLAYER_RATE:
        row["player_rate"] = config.player_rate
    if config.public_read:
        row["public_read"] = True
    return row


def config_from_row(row: Any) -> BoardConfig:
    if type(row) is not dict:
        raise ValueError(f"a board config row must be an object, but got {type(row).__name__}")
    return BoardConfig.from_options(row)


def entry_row(member: str, score: Any, seq: int, metadata: Any) -> tuple[Any, ...]:
    return (member, score, seq, metadata)
