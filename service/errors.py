"""HTTP errors as ``application/problem+json`` (RFC 9457), the only place statuses are chosen.

    Exception                          status  type (urn:rankd:problem:...)
    ├── Problem (raised by service/)   own     own (bad-request, payload-too-large, ...)
    ├── store.InvalidArgument          400     invalid-argument
    │   └── store.LimitExceeded        400     limit-exceeded
    │       ├── store.TooManySessions  429     too-many-sessions (--sessions-over-limit refuse)
    │       └── store.BatchTooLarge    413     batch-too-large  (the body cap is checked here)
    ├── store.BoardNotFound            404     board-not-found
    ├── store.MemberNotFound           404     member-not-found
    ├── store.PeriodNotFound           404     period-not-found (older than keep, not begun)
    ├── store.SessionNotFound          404     session-not-found
    ├── store.VersionConflict          412     precondition-failed (If-Match, RFC 9110)
    ├── store.SessionExists            412     precondition-failed (If-None-Match: *)
    ├── store.SessionEnded             410     session-ended (a caller-chosen id ended recently)
    ├── store.Conflict                 409     conflict
    ├── store.InsufficientStorage      507     insufficient-storage (memory limit, count caps)
    ├── store.Unavailable              503     unavailable
    │   └── store.WriteUnconfirmed     503     write-unconfirmed (applied, durability unconfirmed)
    ├── MemoryError                    503     out-of-memory   (an allocation failed: retry)
    ├── HTTPException (router)         404/405 not-found / method-not-allowed
    └── anything else                  500     internal         (logged with its traceback)

Problem types are URNs: stable names a client can switch on, documented in the README, never
dereferenced. ``detail`` is written for the human who sent the request and quotes the bad value.
"""

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

import store

log = logging.getLogger("rankd.http")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:rankd:problem:"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


class Problem(Exception):
    """An HTTP error raised by the service layer itself (bad query, body too large, auth)."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers


def bad_request(detail: str) -> Problem:
    return Problem(400, "bad-request", detail)


# Most specific first: the first isinstance match wins.
_STORE_ERRORS: tuple[tuple[type[store.StoreError], int, str], ...] = (
    (store.BatchTooLarge, 413, "batch-too-large"),
    (store.TooManySessions, 429, "too-many-sessions"),
    (store.LimitExceeded, 400, "limit-exceeded"),
    (store.InvalidArgument, 400, "invalid-argument"),
    (store.BoardNotFound, 404, "board-not-found"),
    (store.MemberNotFound, 404, "member-not-found"),
    (store.PeriodNotFound, 404, "period-not-found"),
    (store.SessionNotFound, 404, "session-not-found"),
    (store.NotFound, 404, "not-found"),
    (store.VersionConflict, 412, "precondition-failed"),
    (store.SessionExists, 412, "precondition-failed"),
    (store.SessionEnded, 410, "session-ended"),
    (store.Conflict, 409, "conflict"),
    (store.InsufficientStorage, 507, "insufficient-storage"),
    (store.WriteUnconfirmed, 503, "write-unconfirmed"),
    (store.Unavailable, 503, "unavailable"),
)

# Never echo a session id back in a detail: the id is a bearer credential and error bodies are
# the kind of thing people paste into tickets.
_FIXED_DETAIL = {
    "session-not-found": "session not found (it never existed, expired or was deleted)",
    "session-ended": "a session with this id ended recently; choose a new id",
}


def store_error(exc: store.StoreError) -> tuple[int, str, str]:
    """(status, problem kind, detail) for a store error; shared by HTTP and WebSocket answers."""
    for cls, status, kind in _STORE_ERRORS:
        if isinstance(exc, cls):
            return status, kind, _FIXED_DETAIL.get(kind, str(exc))
    return 400, "invalid-argument", str(exc)  # a StoreError subclass not in the table


def problem_response(
    status: int, kind: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps(
        {
            "type": TYPE_PREFIX + kind,
            "title": _TITLES.get(status, "Error"),
            "status": status,
            "detail": detail,
        }
    )
    return Response(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def response_for(exc: Exception, where: str) -> Response:
    """The problem response for any exception an endpoint raised; ``where`` = route template."""
    if isinstance(exc, Problem):
        return problem_response(exc.status, exc.kind, exc.detail, exc.headers)
    if isinstance(exc, store.StoreError):
        return problem_response(*store_error(exc))
    if isinstance(exc, MemoryError):
        return out_of_memory()
    if isinstance(exc, ClientDisconnect):
        # Nobody will read this answer; 400 keeps it out of the 5xx (server fault) counters.
        return problem_response(400, "client-disconnected", "the client went away mid-request")
    # The template, never the concrete path: paths carry session ids.
    log.error("unhandled error in %s", where, exc_info=exc)
    return problem_response(500, "internal", "internal error; the server log has the details")


OUT_OF_MEMORY = "the server ran out of memory for this request; retry later"


def out_of_memory() -> Response:
    """A MemoryError's answer: no traceback logged (formatting one allocates), no id echoed."""
    log.warning("a request failed with MemoryError (answered 503)")
    return problem_response(503, "out-of-memory", OUT_OF_MEMORY, {"Retry-After": "1"})


async def http_exception(request: Request, exc: Exception) -> Response:
    """Router-level errors (no route matched the path or the method) as problem+json."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return problem_response(
            405,
            "method-not-allowed",
            f"method {request.method} is not allowed here",
            dict(exc.headers or {}),
        )
    if exc.status_code == 404:
        return problem_response(404, "not-found", "no such route")
    return problem_response(exc.status_code, "http-error", str(exc.detail))


async def server_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, MemoryError):
        return out_of_memory()
    log.error("unhandled error outside any endpoint", exc_info=exc)
    return problem_response(500, "internal", "internal error; the server log has the details")
