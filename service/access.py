"""The access log (``--access-log``): one line per HTTP request, two per WebSocket, with a
request id and who the caller was.

    rankd.access INFO  GET /v1/boards/b/top 200 812B 0.41ms id=5f0c2a9e1b7d4c3a client=127.0.0.1
                       auth=key:read
    rankd.access INFO  WS /v1/ws 101 id=0b4d1e2f3a4c5d6e client=127.0.0.1
    rankd.access INFO  WS /v1/ws closed 1000 after 12.40s, 37 frames sent id=0b4d1e2f3a4c5d6e
                       client=127.0.0.1 auth=player

``auth`` says which credential the request was served under, never the credential itself:
``key:<its scopes>`` (keys have no names; their scopes are what an operator configured),
``player`` (a session credential; never its id), ``anonymous`` (no credential, allowed: a
public board, or protected mode where no keys exist) or ``-`` (none established: an open route
such as /healthz, or a request refused before). The wrapped app says so in the ASGI scope
(``scope[AUTH]``, set by service/app.py, service/gate.py and service/ws.py).

WebSockets. The upgrade is logged when the app answers it: ``101`` when accepted, else the
status the client got (403 for a handshake the browser rules refuse). The close is logged when
the connection ends, with its duration, the close code (the server's if it closed first, else
the client's; 1006 for a connection that ended without a close frame) and the frames the server
sent (counted by the connection, service/ws.py: most frames are written straight to the
transport, not through ASGI). The accept carries ``X-Request-Id`` like an HTTP response.

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
AUTH = "rankd.auth"  # scope key: how the request was authorised (see above)
SENT = "rankd.ws_sent"  # scope key: a WebSocket connection's frame counter (service/ws.py)
NO_CLOSE = 1006  # RFC 6455: the connection ended without a close frame
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
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
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
            auth = scope.get(AUTH, "-")
            log.info(
                "%s %s %d %dB %.2fms id=%s client=%s auth=%s",
                scope["method"],
                scope["path"],
                status,
                sent,
                ms,
                rid,
                host,
                auth,
                extra={
                    "request_id": rid,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "bytes": sent,
                    "duration_ms": round(ms, 3),
                    "client": host,
                    "auth": auth,
                },
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        client = scope.get("client")
        host = client[0] if client else "-"
        path = scope["path"]  # never the query: it may hold ?token= or ?session=
        accepted = False
        answered = False
        code: int | None = None
        start = time.perf_counter()

        def upgrade(status: int) -> None:
            nonlocal answered
            answered = True
            log.info(
                "WS %s %d id=%s client=%s",
                path,
                status,
                rid,
                host,
                extra={
                    "request_id": rid,
                    "method": "WS",
                    "path": path,
                    "status": status,
                    "client": host,
                },
            )

        async def send_with_id(message: Message) -> None:
            nonlocal accepted, code
            kind = message["type"]
            if kind == "websocket.accept":
                accepted = True
                message["headers"] = [*message.get("headers", ()), (HEADER, rid.encode())]
                upgrade(101)
            elif kind == "websocket.close":
                if not accepted:
                    # Closed before the upgrade: the server answers the handshake with 403.
                    upgrade(403)
                elif code is None:
                    code = message.get("code", 1000)
            elif kind == "websocket.http.response.start" and not answered:
                upgrade(message["status"])
            await send(message)

        async def receive_close() -> Message:
            nonlocal code
            message = await receive()
            if message["type"] == "websocket.disconnect" and code is None and accepted:
                code = message.get("code", NO_CLOSE)
            return message

        try:
            await self.app(scope, receive_close, send_with_id)
        finally:
            if not answered:
                upgrade(500)  # the app ended (or failed) without answering the handshake
            if accepted:
                seconds = time.perf_counter() - start
                frames = scope.get(SENT)
                sent = frames.sent if frames is not None else 0
                auth = scope.get(AUTH, "-")
                closed = NO_CLOSE if code is None else code
                log.info(
                    "WS %s closed %d after %.2fs, %d frames sent id=%s client=%s auth=%s",
                    path,
                    closed,
                    seconds,
                    sent,
                    rid,
                    host,
                    auth,
                    extra={
                        "request_id": rid,
                        "method": "WS",
                        "path": path,
                        "close_code": closed,
                        "duration_ms": round(seconds * 1000, 3),
                        "frames_sent": sent,
                        "client": host,
                        "auth": auth,
                    },
                )
