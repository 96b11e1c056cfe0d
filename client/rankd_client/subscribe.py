"""A live subscription over ``/v1/ws`` that survives the server going away.

    async with client.subscribe("global", top=10) as sub:
        async for update in sub:
            if update.epoch_changed:
                ...  # a different server process: anything derived from old frames is stale
            show(update.frame["entries"])

One WebSocket per subscription, one ``subscribe`` request on it. The server sends the full
state at once and then a frame whenever that state changes (coalesced per tick), so every
frame is the whole truth for the view: after a reconnect the first frame *is* the resync, and
nothing needs replaying.

Lifecycle of ``__anext__``::

    connect + send subscribe ──► recv ──► top/rank frame ──► yield Update
          ▲                        │       error frame   ──► raise (errors.from_frame)
          │  backoff (Retry)       │       ack / other   ──► ignore
          └──── reconnect ◄────────┘ closed: 1001 shutdown, 1006 lost, 1011, 1012, 1013 busy,
                                             1008 "client not reading"
                                     closed: 1008 otherwise (unauthorized, session gone)
                                             and anything else ──► raise SubscriptionClosed

``Update.reconnected`` marks the first frame after a new connection; ``Update.epoch_changed``
marks it when the server's ``epoch`` differs from the last frame's (rankd restarted: its
``seq`` counts from a new start, and a client that cached seq or derived state must drop it).
A handshake the server refuses with HTTP 401/403 raises at once; other failures to connect, and
connections closed before they delivered a frame, count against the ``reconnect`` policy
(backoff between them; when it is exhausted, ``TransportError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from rankd_client.errors import (
    Forbidden,
    SessionNotFound,
    SubscriptionClosed,
    TransportError,
    Unauthorized,
    error_class,
    from_frame,
)
from rankd_client.retry import Retry
from rankd_client.types import RankFrame, TopFrame

F = TypeVar("F", TopFrame, RankFrame)

_RECONNECT_CODES = frozenset({1000, 1001, 1006, 1011, 1012, 1013})
_STATE_FRAMES = frozenset({"top", "rank"})


@dataclass(frozen=True, slots=True)
class Update(Generic[F]):
    frame: F
    reconnected: bool  # the first frame on a new connection (a full state, as on subscribe)
    epoch_changed: bool  # ... and the server is a different process than before


def ws_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/v1/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/v1/ws"
    raise ValueError(f"base_url must start with http:// or https://, but got {base_url!r}")


def _fatal_close(code: int, reason: str) -> Exception | None:
    """The exception a close ends the subscription with, or None to reconnect."""
    if code in _RECONNECT_CODES:
        return None
    if code == 1008:
        if reason.startswith("client not reading"):
            return None  # we were too slow once; a fresh connection starts from full state
        if reason.startswith("unauthorized"):
            return Unauthorized(401, "about:blank", "Unauthorized", reason)
        if reason.startswith("session"):
            return SessionNotFound(404, "about:blank", "Not Found", reason)
        if "scope" in reason:
            return Forbidden(403, "about:blank", "Forbidden", reason)
    return SubscriptionClosed(code, reason)


class Subscription(Generic[F]):
    """An async iterator of ``Update``s; also an async context manager that closes it."""

    def __init__(
        self,
        base_url: str,
        request: dict[str, Any],
        *,
        authorization: str | None,
        reconnect: Retry,
        trust_env: bool = True,
        open_timeout: float = 10.0,
        on_close: Callable[[Subscription[Any]], None] | None = None,
    ) -> None:
        self.url = ws_url(base_url)
        self.request = request
        self.reconnect = reconnect
        self.epoch: str | None = None  # of the last frame delivered
        self.connects = 0  # connections opened so far (1 + reconnections)
        self._headers = {} if authorization is None else {"Authorization": authorization}
        self._proxy: Literal[True] | None = True if trust_env else None
        self._open_timeout = open_timeout
        self._on_close = on_close
        self._ws: ClientConnection | None = None
        self._fresh = False  # no frame delivered yet on the current connection
        self._failures = 0  # connection attempts failed (or closed) since the last frame
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Update[F]:
        while not self._closed:
            ws = self._ws or await self._connect()
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                await self._drop()
                code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
                fatal = _fatal_close(code, reason)
                if fatal is not None:
                    await self.aclose()
                    raise fatal from exc
                if not self._closed:
                    await self._pause(exc)
                continue
            frame = json.loads(raw)
            kind = frame.get("type") if isinstance(frame, dict) else None
            if kind == "error":
                await self.aclose()
                raise from_frame(frame)
            if kind not in _STATE_FRAMES:
                continue  # acks, and frame types a newer server may add
            reconnected = self._fresh and self.connects > 1
            changed = reconnected and self.epoch is not None and frame.get("epoch") != self.epoch
            self._fresh = False
            self._failures = 0  # a connection that delivers is a success
            self.epoch = frame.get("epoch")
            update: Update[F] = Update(frame, reconnected, changed)
            return update
        raise StopAsyncIteration

    async def _connect(self) -> ClientConnection:
        while True:
            failure: Exception
            try:
                ws = await connect(
                    self.url,
                    additional_headers=self._headers,
                    proxy=self._proxy,
                    open_timeout=self._open_timeout,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise error_class(status)(
                        status, "about:blank", exc.response.reason_phrase, str(exc)
                    ) from exc
                failure = exc
            except (OSError, TimeoutError, WebSocketException) as exc:
                failure = exc
            else:
                try:
                    await ws.send(json.dumps(self.request))
                except ConnectionClosed as exc:
                    failure = exc
                else:
                    self._ws = ws
                    self._fresh = True
                    self.connects += 1
                    return ws
            await self._pause(failure)

    async def _pause(self, failure: Exception) -> None:
        """Back off before the next connection, or give up under the ``reconnect`` policy.

        Failures count across connections until one delivers a frame: a server that accepts
        and at once closes (1013 not ready, too many connections) is backed off from like
        one that refuses, not hammered in a tight loop.
        """
        if self.reconnect.exhausted(self._failures):
            raise TransportError(
                f"could not subscribe at {self.url} after {self._failures + 1} attempts: "
                f"{type(failure).__name__}: {failure}",
                maybe_applied=False,
            ) from failure
        await asyncio.sleep(self.reconnect.wait(self._failures))
        self._failures += 1

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def aclose(self) -> None:
        """Close the connection; iteration ends (StopAsyncIteration) from here on."""
        self._closed = True
        await self._drop()
        if self._on_close is not None:
            self._on_close(self)
            self._on_close = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
