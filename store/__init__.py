"""rankd's data: leaderboards (skip-list sorted sets) and sessions (TTL maps).

Pure and synchronous: no web imports, no event loop, time handed in. The only code that mutates
data. The service layer translates HTTP and WebSocket requests into calls on these objects.
"""

from store.boards import Board, BoardConfig
from store.clock import Clock, ManualClock, SystemClock
from store.errors import (
    BatchTooLarge,
    BoardNotFound,
    Conflict,
    InsufficientStorage,
    InvalidArgument,
    LimitExceeded,
    MemberNotFound,
    NotFound,
    PeriodNotFound,
    SessionEnded,
    SessionExists,
    SessionNotFound,
    StoreError,
    TooManySessions,
    Unavailable,
    VersionConflict,
    WriteUnconfirmed,
)
from store.keyspace import Keyspace
from store.sessions import Session, SessionStore
from store.skiplist import SkipList
from store.ttl import TTLMap
from store.values import Limits

__all__ = [
    "BatchTooLarge",
    "Board",
    "BoardConfig",
    "BoardNotFound",
    "Clock",
    "Conflict",
    "InsufficientStorage",
    "InvalidArgument",
    "Keyspace",
    "LimitExceeded",
    "Limits",
    "ManualClock",
    "MemberNotFound",
    "NotFound",
    "PeriodNotFound",
    "Session",
    "SessionEnded",
    "SessionExists",
    "SessionNotFound",
    "SessionStore",
    "SkipList",
    "StoreError",
    "SystemClock",
    "TTLMap",
    "TooManySessions",
    "Unavailable",
    "VersionConflict",
    "WriteUnconfirmed",
]
