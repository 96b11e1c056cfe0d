"""Time as a parameter: the store never reads the clock itself, it is handed one.

Times are wall-clock seconds since the epoch as floats, because deadlines are persisted and must
mean the same instant after a restart (a monotonic clock restarts from an arbitrary origin).
"""

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock tests move by hand, so nothing ever sleeps."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t
