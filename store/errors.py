"""Domain errors raised by the store; the service maps each class to one HTTP status.

    StoreError
    ├── InvalidArgument        a value the store will never accept (bad type, NaN, range)
    │   └── LimitExceeded      a value over a configured size or count limit
    │       └── TooManySessions  the user holds --sessions-per-user sessions (policy refuse)
    ├── NotFound
    │   ├── BoardNotFound
    │   ├── MemberNotFound
    │   └── SessionNotFound    absent, expired or deleted: indistinguishable on purpose
    ├── Conflict               the request contradicts current state
    │   ├── VersionConflict    compare-and-set on a session lost the race
    │   ├── SessionExists      a caller-chosen id that names a live session
    │   └── SessionEnded       a caller-chosen id that ended too recently to be used again
    ├── InsufficientStorage    the data may not grow: a count cap (boards, sessions without a
    │                          user) or the process's memory limit; deletes and reads go on
    └── Unavailable            persistence is unhealthy: writes are refused, reads go on
        └── WriteUnconfirmed   applied, but the configured durability is unconfirmed (redis
                               backend, --redis-wait-*): "maybe written"

Messages quote the offending value (``... but got {x!r}``) so a client can fix its request.
"""


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class InvalidArgument(StoreError, ValueError):
    pass


class LimitExceeded(InvalidArgument):
    pass


class BatchTooLarge(LimitExceeded):
    """More items than one batch may hold: the request as a whole is too large (413)."""


class TooManySessions(LimitExceeded):
    pass


class NotFound(StoreError, KeyError):
    def __str__(self) -> str:
        # KeyError.__str__ repr()s its argument; we want the plain message.
        return str(self.args[0]) if self.args else ""


class BoardNotFound(NotFound):
    pass


class MemberNotFound(NotFound):
    pass


class PeriodNotFound(NotFound):
    """A period a board does not keep (older than ``keep``, or not begun)."""


class SessionNotFound(NotFound):
    pass


class Conflict(StoreError):
    pass


class VersionConflict(Conflict):
    pass


class SessionExists(Conflict):
    pass


class SessionEnded(Conflict):
    pass


class InsufficientStorage(StoreError):
    pass


class Unavailable(StoreError):
    pass


class WriteUnconfirmed(Unavailable):
    """The write was applied but its configured durability (replicas, fsync) is unconfirmed:
    the one 503 that means "maybe written" (the redis backend's --redis-wait-* settings)."""
