"""What can go wrong, as one small tree of exceptions (catch ``RankdError`` for all of them).

    RankdError
    ├── TransportError            no HTTP answer: connect failed, connection lost, timeout
    ├── SubscriptionClosed        the server closed a WebSocket for good (code, reason)
    └── ProblemError              rankd answered with a problem (RFC 9457): .status .type
        │                         .title .detail .retry_after
        ├── ClientError           4xx: the request itself is wrong; retrying cannot help
        │   ├── BadRequest            400 malformed-json, bad-request, invalid-argument,
        │   │                             limit-exceeded
        │   ├── Unauthorized          401 unauthorized
        │   ├── Forbidden             403 forbidden, origin-not-allowed, host-not-allowed
        │   ├── NotFound              404 not-found (no such route)
        │   │   ├── BoardNotFound         404 board-not-found
        │   │   ├── MemberNotFound        404 member-not-found
        │   │   └── SessionNotFound       404 session-not-found
        │   ├── MethodNotAllowed      405 method-not-allowed
        │   ├── Conflict              409 conflict (order/ties of a non-empty board)
        │   ├── Gone                  410
        │   │   └── SessionEnded          410 session-ended (a caller-chosen session id
        │   │                                 that ended before: ids are never reused)
        │   ├── PreconditionFailed    412 precondition-failed (a stale if_match version)
        │   ├── PayloadTooLarge       413 payload-too-large, batch-too-large
        │   ├── UnsupportedMediaType  415 unsupported-media-type
        │   └── TooManyRequests       429 too-many-sessions, a player's rate (.retry_after)
        └── ServerError           5xx
            ├── Unavailable           503 unavailable, not-ready, out-of-memory,
            │                             too-many-connections, shutting-down (retryable)
            └── InsufficientStorage   507 insufficient-storage (memory or count limit)

The problem ``type`` URN decides the class; a type this version does not know (a newer server)
falls back to the class of its status, then to ClientError / ServerError, so an upgrade of the
server never turns a 404 into something a ``except NotFound`` misses. WebSocket error frames
carry a status but no type, and map by status alone.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

PREFIX = "urn:rankd:problem:"


class RankdError(Exception):
    """Base of every error this client raises."""


class TransportError(RankdError):
    """No HTTP answer. ``maybe_applied`` is False only when the request never left (connect
    failed): then a POST certainly did nothing; otherwise the server may have applied it."""

    def __init__(self, message: str, *, maybe_applied: bool) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


class SubscriptionClosed(RankdError):
    """The server closed a subscription's WebSocket with a code that reconnecting cannot fix."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"WebSocket closed with {code}: {reason or '(no reason)'}")
        self.code = code
        self.reason = reason


class ProblemError(RankdError):
    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail} ({type})")
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.retry_after = retry_after  # seconds, from Retry-After when the server sent one


class ClientError(ProblemError): ...


class BadRequest(ClientError): ...


class Unauthorized(ClientError): ...


class Forbidden(ClientError): ...


class NotFound(ClientError): ...


class BoardNotFound(NotFound): ...


class MemberNotFound(NotFound): ...


class SessionNotFound(NotFound): ...


class MethodNotAllowed(ClientError): ...


class Conflict(ClientError): ...


class Gone(ClientError): ...


class SessionEnded(Gone): ...


class PreconditionFailed(ClientError): ...


class PayloadTooLarge(ClientError): ...


class UnsupportedMediaType(ClientError): ...


class TooManyRequests(ClientError): ...


class ServerError(ProblemError): ...


class Unavailable(ServerError): ...


class InsufficientStorage(ServerError): ...


_BY_TYPE: dict[str, type[ProblemError]] = {
    "board-not-found": BoardNotFound,
    "member-not-found": MemberNotFound,
    "session-not-found": SessionNotFound,
    "session-ended": SessionEnded,
}

_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: Gone,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: TooManyRequests,
    503: Unavailable,
    507: InsufficientStorage,
}


def error_class(status: int, kind: str = "") -> type[ProblemError]:
    if kind.startswith(PREFIX) and kind[len(PREFIX) :] in _BY_TYPE:
        return _BY_TYPE[kind[len(PREFIX) :]]
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    return ClientError if status < 500 else ServerError


def from_response(response: httpx.Response) -> ProblemError:
    """The exception for a non-2xx answer (problem+json or not: a proxy may answer in HTML)."""
    status = response.status_code
    body: Any = None
    if response.headers.get("content-type", "").split(";")[0].strip().endswith("json"):
        try:
            body = response.json()
        except ValueError:
            body = None
    if not isinstance(body, dict):
        body = {}
    kind = body.get("type")
    kind = kind if isinstance(kind, str) else "about:blank"
    title = body.get("title")
    title = title if isinstance(title, str) else response.reason_phrase or "Error"
    detail = body.get("detail")
    if not isinstance(detail, str):
        detail = response.text[:200] or title
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return error_class(status, kind)(status, kind, title, detail, retry_after)


def from_frame(frame: dict[str, Any]) -> ProblemError:
    """The exception for a WebSocket error frame ``{"type":"error","status":..,"detail":..}``."""
    status = frame.get("status")
    status = status if isinstance(status, int) else 400
    detail = str(frame.get("detail", ""))
    return error_class(status)(status, "about:blank", f"WebSocket error {status}", detail)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def from_transport(exc: httpx.TransportError) -> TransportError:
    # A connect error (refused, DNS, connect timeout) happens before a byte of the request is
    # sent; anything later may come after the server applied it.
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    error = TransportError(f"{type(exc).__name__}: {exc}", maybe_applied=not never_sent)
    error.__cause__ = exc
    return error
