"""On-disk row layouts, one codec per record kind, kept apart from the in-memory types.

Like ``rdb.c`` keeps its encodings apart from ``server.h``'s structs: a field added to, or
reordered in, ``Session`` or ``BoardConfig`` must never change what a file on disk means. Every
layout below is fixed forever; a new field means a new format version, decoded here.

    session row   [id, user, data, created_at, ttl, idle_deadline, max_expires_at, version]
                  (snapshot SESSIONS items, journal ``sput`` payloads)
    config row    {"order", "update", "ties", other option: JSON value}  (snapshot BOARD
                  heads, journal ``bcfg``): the options of store/options.py that differ from
                  their defaults beyond the three v1 ones; an absent option is its default
                  (ranking; windows, periods and bounds; player_writes, player_rate, public_read)
    entry row     [member, score, seq, metadata | null]  (journal ``bbatch`` items; ``bset``
                  is [board, *entry row])

Decoders raise ValueError/TypeError on a malformed row; callers turn that into CorruptData
with the file and offset.
"""

from typing import Any

from store.options import BoardConfig
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


LEGACY_OPTIONS = frozenset({"order", "update", "ties"})
_DEFAULTS = BoardConfig().as_dict()


def config_row(config: BoardConfig) -> dict[str, Any]:
    """order, update and ties always (the v1 row), every other option only when it is not
    its default: a plain board's row, and its snapshot, stay byte for byte what they were."""
    row = config.as_dict()
    return {k: v for k, v in row.items() if k in LEGACY_OPTIONS or v != _DEFAULTS[k]}


def config_from_row(row: Any) -> BoardConfig:
    if type(row) is not dict:
        raise ValueError(f"a board config row must be an object, but got {type(row).__name__}")
    return BoardConfig.from_options(row)


def entry_row(member: str, score: Any, seq: int, metadata: Any) -> tuple[Any, ...]:
    return (member, score, seq, metadata)
