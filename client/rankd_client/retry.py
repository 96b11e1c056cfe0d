"""When to send a call again, and after how long: shared by both transports and the subscriber.

    attempt 0 fails -> wait ~backoff      (uniform in [d/2, d]: "equal jitter", so a crowd of
    attempt 1 fails -> wait ~backoff * 2   clients that lost one server does not come back in
    ...                                    lockstep), capped at max_backoff
    attempt attempts-1 fails -> raise

A server that says ``Retry-After`` is believed: that wait replaces the backoff, and a wait longer
than ``max_backoff`` is not taken at all (the error is raised, carrying ``retry_after``), so a
call never blocks longer than the caller's policy allows. Only idempotent calls are retried
(see ``calls``), and only on what may pass by itself: no answer at all, or a 503.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rankd_client.errors import RankdError, TransportError, Unavailable


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int | None = 4  # tries in all, the first included; None: never give up
    backoff: float = 0.1  # seconds before the second try; doubles each time
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1 (or None), but got {self.attempts!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(
                f"backoff and max_backoff must be >= 0, but got {self.backoff!r}, "
                f"{self.max_backoff!r}"
            )

    def wait(self, attempt: int) -> float:
        """The jittered pause after failed try number ``attempt`` (0-based)."""
        delay = min(self.max_backoff, self.backoff * 2 ** min(attempt, 32))
        return random.uniform(delay / 2, delay)

    def exhausted(self, attempt: int) -> bool:
        return self.attempts is not None and attempt + 1 >= self.attempts

    def delay(self, idempotent: bool, attempt: int, error: RankdError) -> float | None:
        """Seconds to wait before trying again, or None to raise ``error`` now."""
        if not idempotent or self.exhausted(attempt):
            return None
        if isinstance(error, TransportError):
            return self.wait(attempt)
        if isinstance(error, Unavailable):
            if error.retry_after is not None:
                return error.retry_after if error.retry_after <= self.max_backoff else None
            return self.wait(attempt)
        return None


NO_RETRY = Retry(attempts=1)
