"""rankd's data: leaderboards (skip-list sorted sets) and sessions (TTL maps).

Pure and synchronous: no web imports, no event loop, time handed in. The only code that mutates
data. The service layer translates HTTP and WebSocket requests into calls on these objects.
"""

from store.clock import Clock, ManualClock, SystemClock
from store.errors import (
    BoardNotFound,
    Conflict,
    InvalidArgument,
    LimitExceeded,
    MemberNotFound,
    NotFound,
    SessionNotFound,
    StoreError,
    Unavailable,
    VersionConflict,
)
from store.values import Limits

__all__ = [
    "BoardNotFound",
    "Clock",
    "Conflict",
    "InvalidArgument",
    "LimitExceeded",
    "Limits",
    "ManualClock",
    "MemberNotFound",
    "NotFound",
    "SessionNotFound",
    "StoreError",
    "SystemClock",
    "Unavailable",
    "VersionConflict",
]
