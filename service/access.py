"""The access log (``--access-log``): one line per HTTP request, with a request id.

    rankd.access INFO  GET /v1/boards/b/top 200 812B 0.41ms id=5f0c2a9e1b7d4c3a client=127.0.0.1

Only when asked for: it is an ASGI wrapper around the whole app, and the app has no middleware
of its own because each one costs every request an extra hop (service/app.py). Uvicorn's own
access log is not used: it logs the query string (``?session=`` on WebSocket upgrades), has no
request id and no duration.

Request ids. ``X-Request-Id`` from the client is kept when it is 1-64 characters of
``[A-Za-z0-9._:-]`` and does not look like a credential; otherwise rankd makes one (16 hex
digits). A UUID or any run of 32+ URL-safe characters is shaped like a session id, and the
log redactor would hide it anyway, so it is replaced rather than logged as ``[redacted]``:
the id in the response header is always the one in the log line. Every HTTP response carries
it (``X-Request-Id``), errors included.

What is never logged: the query string (it may carry ``session=`` or ``token=``), any header
(``Authorization`` holds keys and session ids), bodies. Paths can hold session ids
(``/v1/sessions/{id}``): the line goes through the same redacting formatter as every other
record (service/logs.py), which hides them.
"""

import logging
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.redact import looks_secret

log = logging.getLogger("rankd.access")

HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")


def request_id(scope: Scope) -> str:
    """The client's X-Request-Id if it is safe to echo and log, else a fresh one."""
    for name, value in scope["headers"]:
        if name == HEADER:
            if _VALID_ID.fullmatch(value):
                text: str = value.decode("ascii")
                if not looks_secret(text):
                    return text
            break
    return secrets.token_hex(8)


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        status = 0
        sent = 0
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, rid.encode())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            ms = (time.perf_counter() - start) * 1000
            client = scope.get("client")
            host = client[0] if client else "-"
            log.info(
                "%s %s %d %dB %.2fms id=%s client=%s",
                scope["method"],
                scope["path"],
                status,
                sent,
                ms,
                rid,
                host,
                extra={
                    "request_id": rid,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "bytes": sent,
                    "duration_ms": round(ms, 3),
                    "client": host,
                },
            )
