"""A clock for tests of the real process: ``RANKD_TEST_CLOCK_FILE`` names a file holding unix
seconds, and that is "now" for the boards and sessions of the server (periods roll over when
the test moves it, with no sleeping).

Not a user feature, and guarded so it cannot become one by accident: it is read only from the
environment (no flag, no help text), only while the server is bound to loopback, and the
server logs a warning at start. Connection timeouts keep the real monotonic clock.
"""

import logging
from pathlib import Path

from service.settings import Settings

ENV = "RANKD_TEST_CLOCK_FILE"

log = logging.getLogger("rankd")


class FileClock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.now()  # fail at start, not at the first write

    def now(self) -> float:
        return float(self.path.read_text())


def from_environment(settings: Settings, environ: dict[str, str]) -> FileClock | None:
    """The test clock if ``RANKD_TEST_CLOCK_FILE`` is set; ValueError if it may not be used."""
    path = environ.get(ENV)
    if not path:
        return None
    if not settings.loopback_only:
        raise ValueError(f"{ENV} is for tests only: it needs a loopback bind (--host 127.0.0.1)")
    log.warning("TEST CLOCK: time is read from %s (%s); never use this in production", path, ENV)
    return FileClock(Path(path))
