"""Log redaction: API keys and session ids are credentials and never reach a log line.

Installed once by the CLI (service/logs.py), not at import time: importing a module must not
change the process's logging.

    Redactor             one string: configured keys, ``Bearer <x>``, session-id-shaped runs
    RedactingFormatter   every record: configured keys, ``Bearer <x>``, ``Session <x>``
    _RedactQuery         uvicorn logs each upgrade's path *with* its query string:
                         ``?token=`` and ``?session=`` values are hidden before formatting
"""

import logging
import re
from collections.abc import Sequence

# 43-char session ids, and any long URL-safe token; "Bearer <anything>".
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{32,}")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


class Redactor:
    """``redactor(text)``: configured keys, bearer values and session-id-shaped tokens hidden."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        text = _BEARER.sub(r"\1[redacted]", text)
        return _TOKEN.sub("[redacted]", text)


def looks_secret(text: str) -> bool:
    """True if ``text`` holds a run the redactor would hide (a session id, a long token)."""
    return _TOKEN.search(text) is not None


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, secrets: Sequence[str]) -> None:
        super().__init__(fmt)
        self._redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class _RedactQuery(logging.Filter):
    _SECRET = re.compile(r"(?<=[?&])(token|session)=[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) for a in record.args):
            record.args = tuple(
                self._SECRET.sub(r"\1=<redacted>", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


_REDACT_QUERY = _RedactQuery()


def filter_uvicorn() -> None:
    """Hide ``?token=`` / ``?session=`` values in uvicorn's own log records."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if _REDACT_QUERY not in logger.filters:
            logger.addFilter(_REDACT_QUERY)
