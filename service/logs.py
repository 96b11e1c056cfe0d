"""Log output: text lines or JSON objects, both redacted; installed once by the CLI.

    --log-format text   ``2026-12-03 02:34:24,186 INFO rankd: ready in 0.016 s``
    --log-format json   one object per line: ``{"level": "INFO", "logger": "rankd",
                        "message": "ready in 0.016 s", "time": "2026-12-03T02:34:24.186+00:00"}``
                        plus any structured fields a record carries (the access log's
                        ``request_id``, ``status``, ...), and ``exc_info`` as one string.
                        python-json-logger does the formatting: it is kept, typed and handles
                        ``extra`` fields and exceptions the way log shippers expect, which a
                        hand-written json.dumps would re-learn.

Redaction happens on the values, before serialisation, so a key that contains a JSON escape
(``"`` or ``\\``) is still found, and every field -- message, exception text, extras -- goes
through the same rules as a text line (service/redact.py): configured API keys, ``Bearer``
values and anything shaped like a session id become ``[redacted]``.

Neither setting lives in ``Settings``: they only decide how the process talks to its log, and
are read here from flags and ``RANKD_LOG_FORMAT`` / ``RANKD_ACCESS_LOG``.
"""

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

from service import redact
from service.settings import SettingsError

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# uvicorn attaches an ANSI-coloured copy of its messages; a JSON line has no use for it.
_SKIPPED = ("color_message",)


@dataclass(frozen=True, slots=True)
class LogSettings:
    format: LogFormat = "text"
    access_log: bool = False


def load(env: Mapping[str, str], flags: Mapping[str, Any]) -> LogSettings:
    """Flags win over ``RANKD_LOG_FORMAT`` / ``RANKD_ACCESS_LOG``; bad values name the setting."""
    raw_format = flags.get("log_format") or env.get("RANKD_LOG_FORMAT") or "text"
    fmt = str(raw_format).lower()
    if fmt not in LOG_FORMATS:
        raise SettingsError(
            f"--log-format / RANKD_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, "
            f"but got {raw_format!r}"
        )
    access = flags.get("access_log")
    if access is None:
        raw = env.get("RANKD_ACCESS_LOG", "") or "false"
        if raw.lower() not in _TRUE + _FALSE:
            raise SettingsError(
                f"RANKD_ACCESS_LOG must be true or false (or 1/0, yes/no, on/off), but got {raw!r}"
            )
        access = raw.lower() in _TRUE
    return LogSettings(format=fmt, access_log=bool(access))


class RedactingJsonFormatter(JsonFormatter):
    """python-json-logger's formatter with every string value passed through the redactor."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601 in UTC, what log shippers parse without a pattern
            reserved_attrs=[*_reserved(), *_SKIPPED],
        )
        self._redact = redact.Redactor(secrets)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: self._scrub(value) for key, value in log_data.items()}

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        return value


def _reserved() -> list[str]:
    from pythonjsonlogger.core import RESERVED_ATTRS

    return list(RESERVED_ATTRS)


def formatter(fmt: LogFormat, secrets: Sequence[str]) -> logging.Formatter:
    if fmt == "json":
        return RedactingJsonFormatter(secrets)
    return redact.RedactingFormatter(TEXT_FORMAT, secrets)


def install(api_keys: Sequence[str], level: str, fmt: LogFormat = "text") -> None:
    """Send every log record, redacted, to stderr in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, list(api_keys)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    redact.filter_uvicorn()
