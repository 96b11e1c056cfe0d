"""``/v1/ws``: live ranks and score writes over one JSON-text WebSocket.

    client -> server
      {"op":"subscribe","id":ID,"board":B,"top":N,"window"?:W}  N in 1..100; B need not exist
                                                            yet; W: default the first window
      {"op":"subscribe","id":ID,"board":B,"member":M,"window"?:W}
      {"op":"subscribe","id":ID,"board":B,"member":M,"radius":R,"window"?:W}  R in 0..50: around M
      {"op":"unsubscribe","id":ID}                        -> {"type":"ack","id":ID}
      {"op":"score","id":ID,"board":B,"member":M,"score":S,"metadata":{..}?}
                                    -> {"type":"ack","id":ID,"by":W, ..write result}
                                       W: who wrote, "player" | "key" | "anonymous" (no keys)
    server -> client
      {"type":"top","id":ID,"board":B,"window":W,"period":P,"total":T,"entries":[..],"seq":N,
       "epoch":E}
      {"type":"period","id":ID,"board":B,"window":W,"closed":P0,"current":P1}  then the state
      {"type":"rank","id":ID,"board":B,"window":W,"period":P,"member":M,"rank":R|null,
       "score":S|null,"seq":N,"epoch":E}
      {"type":"around","id":ID,"board":B,"window":W,"period":P,"member":M,"total":T,
       "entries":[..],"seq":N,"epoch":E}                  entries [] while M is not on B
      {"type":"error","id":ID|null,"status":400|401|403|404|409|413|429|503,"detail":".."}

ID is a string (1-128 characters) or an integer. Unknown fields are refused, so a typo never
turns into a different request. Bad input of any kind gets an error frame and the connection
lives on; only abuse closes it.

Before the upgrade, the browser rules (service/browser.py) refuse a handshake whose
``Origin`` is foreign or, in protected mode, whose ``Host`` is not loopback: HTTP 403.

Connecting, when keys are configured (service/players.py has the player rules):

    Authorization: Bearer <key> | ?token=<key>   key scopes: ``read`` subscribes, ``write``
                                                 scores; with ?session=<id> (and the
                                                 ``sessions`` scope) the connection is bound to
                                                 that session: a lookup and a touch
    Authorization: Session <id> | ?session=<id>  a player (no key sent): subscribes to any
                                                 board, scores its own entry; never touches
                                                 the session
    nothing                                      subscribes to ``public_read`` boards only
                                                 (else an error frame, 401); no score

A bound or player connection is closed when its session is deleted, revoked, rotated or
expires.
Refusals happen after the upgrade, as close frames, because a browser never
shows a script the HTTP status of a failed upgrade:

    1008  unauthorized | unauthorized: the player session is not valid | session not found |
          unauthorized: the board is no longer public (no credential; service/hub.py) |
          the 'sessions' scope is needed to bind ?session= |
          session <reason> | client not reading |
          binary frames are not supported
    1013  not ready (recovery running) | too many connections
    1001  server shutting down

Sending. Every frame leaves as pre-built WebSocket bytes (``hub.ws_frame``): state frames are
built once per view and shared by every subscriber (service/hub/), replies once each. Under
uvicorn's websockets sans-I/O protocol (what ``rankd`` runs) a frame is written straight to the
connection's transport when the transport has room and nothing is queued ahead of it: no task
wake-up, no per-message ASGI call, no copy per subscriber (measured in loadtest/RESULTS.md,
"fan-out"). This is safe because that protocol keeps no state about data frames it did not
send -- the server never fragments, and permessage-deflate is off (service/cli.py), so there is
no compression context to keep in step; a connection that negotiated an extension anyway, or
another server, takes the ASGI ``send`` path. Handshake, close, ping and pong stay uvicorn's.

Otherwise the frame waits in the outbox, an insertion-ordered dict drained by the sender task:
a state frame is keyed by its subscription, so a newer state replaces an unsent older one in
place (conflation), and replies (acks, errors) take fresh keys and keep their order. Replies
are bounded by ``ws_outbox_frames``: at the bound the reader stops reading, which pushes back on
the client through TCP. State frames are bounded by the number of subscriptions. The transport
buffers at most its high-water mark (64 KiB) before it reports it is full; a frame still
waiting for room after ``hub.SEND_TIMEOUT`` (the client stopped reading and every buffer is
full) gets the connection closed with 1008 by the hub's watchdog; if even the close frame
cannot be written within ``CLOSE_TIMEOUT``, the TCP connection is aborted, so a stalled peer
never pins memory or a slot and never slows anyone else.
"""

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette import status
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from service.access import AUTH, SENT
from service.auth import ADMIN, READ, SESSIONS, WRITE, Auth
from service.errors import OUT_OF_MEMORY, Problem, store_error
from service.http import json_error
from service.hub import MAX_RADIUS, MAX_TOP, Hub, Subscription, ws_frame, ws_payload
from service.metrics import writer
from service.players import MISSING, SESSION_SCHEME, Player, is_session
from service.runtime import Runtime
from service.schemas import ErrorFrame
from store import writers
from store.errors import StoreError
from store.show import show
from store.values import check_board_name, check_member

log = logging.getLogger("rankd.ws")

CLOSE_TIMEOUT = 1.0  # then the close frame gets this long before the TCP connection is aborted
BINARY_LIMIT = 8  # binary frames answered with an error before the connection is closed
MAX_ID_CHARS = 128
MAX_SAFE_INT = 2**53  # ids must survive a JavaScript client

NORMAL = status.WS_1000_NORMAL_CLOSURE
GOING_AWAY = status.WS_1001_GOING_AWAY
POLICY = status.WS_1008_POLICY_VIOLATION
TRY_AGAIN = status.WS_1013_TRY_AGAIN_LATER
OPEN = State.OPEN
_LINGER_0 = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}

_CREDENTIAL = "connect with a key (Bearer or ?token=) or a player session (?session=)"
_FIELDS = {
    "subscribe": frozenset({"op", "id", "board", "top", "member", "radius", "window"}),
    "unsubscribe": frozenset({"op", "id"}),
    "score": frozenset({"op", "id", "board", "member", "score", "metadata"}),
}
_ALL_SCOPES = frozenset({READ, WRITE, SESSIONS, ADMIN})
_PLAYER_SCOPES = frozenset({READ})  # a player's score op is judged by Players instead


class _Bad(Exception):
    """A request the protocol refuses; becomes an error frame."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def ws_endpoint(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.rankd
    hub = runtime.hub
    # Before the upgrade (uvicorn answers a plain 403): a page on a foreign origin, or a
    # rebound DNS name in protected mode, must not even learn that the handshake would work.
    refusal = websocket.app.state.browser.ws_refusal(websocket.scope)
    if refusal is not None:
        log.info("refused a WebSocket handshake: %s", refusal)
        await websocket.close(POLICY)
        return
    await websocket.accept()
    if not runtime.backend.ready:
        await _close(websocket, TRY_AGAIN, "not ready: recovery in progress")
        return
    auth = runtime.auth
    session = websocket.query_params.get("session")
    player: Player | None = None
    public_only = False
    if auth is None:
        scopes: frozenset[str] | None = _ALL_SCOPES  # no keys: loopback-only protected mode
    else:
        header = websocket.headers.get("authorization")
        token = websocket.query_params.get("token")
        if header is not None and is_session(header):
            player_id: str | None = header[len(SESSION_SCHEME) :].strip()
        elif header is None and token is None:
            # No key: ?session= is a player's credential; nothing at all reads public boards.
            player_id = session
            public_only = session is None
        else:
            player_id = None
        if player_id is not None:
            try:
                # Never refreshes the session (service/players.py says why).
                player = await runtime.players.authenticate(player_id)
            except Problem:
                await _close(websocket, POLICY, "unauthorized: the player session is not valid")
                return
            session = player.sid  # the connection ends with the session
            scopes = _PLAYER_SCOPES
            try:  # a backend whose sessions live elsewhere (redis) subscribes to its end
                await runtime.backend.feed.watch_session(session, player.expires_at, time.time())
            except StoreError:
                await _close(websocket, POLICY, "unauthorized: the player session is not valid")
                return
        elif public_only:
            scopes = _PLAYER_SCOPES  # subscriptions to public boards only; no score
        else:
            scopes = _scopes(auth, header, token)
    if scopes is None:
        await _close(websocket, POLICY, "unauthorized: send a valid key as Bearer or ?token=")
        return
    if session is not None and player is None:
        if SESSIONS not in scopes and ADMIN not in scopes:
            # Binding is a session lookup and a touch: without this a read key could probe
            # which ids are live (and keep them alive) through the WebSocket.
            await _close(websocket, POLICY, "the 'sessions' scope is needed to bind ?session=")
            return
        try:
            # A use, like any read: refreshes its idle deadline.
            bound = await runtime.backend.sessions.get(session, touch=True)
            await runtime.backend.feed.watch_session(session, bound["expires_at"], time.time())
        except StoreError:
            await _close(websocket, POLICY, "session not found")
            return
    # For the access log (service/access.py): who, never with what; and the frame counter.
    if player is not None:
        websocket.scope[AUTH] = "player"
    elif auth is None or public_only:
        websocket.scope[AUTH] = "anonymous"
    else:
        websocket.scope[AUTH] = auth.label(scopes)
    conn = Connection(websocket, runtime, hub, scopes, player, public_only)
    websocket.scope[SENT] = conn
    if not hub.attach(conn, session):
        await _close(websocket, TRY_AGAIN, "too many connections")
        return
    try:
        await conn.run()
    finally:
        hub.detach(conn, session, list(conn.subs.values()))


def _scopes(auth: Auth, header: str | None, token: str | None) -> frozenset[str] | None:
    if header is None:
        header = None if token is None else f"Bearer {token}"
    return auth.scopes_for(header)


class Connection:
    def __init__(
        self,
        websocket: WebSocket,
        runtime: Runtime,
        hub: Hub,
        scopes: frozenset[str],
        player: Player | None = None,
        public_only: bool = False,
    ) -> None:
        self.websocket = websocket
        self.player = player
        self.public_only = public_only  # no credential: subscriptions to public boards
        self.runtime = runtime
        self.hub = hub
        self.subs: dict[object, Subscription] = {}
        limits = runtime.settings.limits
        self._max_subs = limits.ws_subscriptions
        self._max_replies = limits.ws_outbox_frames
        self._max_frame = limits.ws_frame_bytes
        self._read = READ in scopes or ADMIN in scopes
        self._write = WRITE in scopes or ADMIN in scopes
        self._outbox: dict[object, bytes] = {}
        self._replies = 0  # replies in _outbox (state frames are bounded by len(subs))
        self._keys = itertools.count()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._binary = 0
        self._busy = False
        self._gone = False  # the client disconnected: nothing more can be sent
        self._closing: tuple[int, str] | None = None
        self.send_started: float | None = None  # loop time a frame began waiting for room
        self._tasks: list[asyncio.Task[None]] = []
        self._proto = _direct_protocol(websocket)
        self.sent = 0  # frames written to this connection (the access log's close line)
        # The ack's "by" and the writer metric: who this connection's writes come from.
        self._by = writer("player" if player is not None else websocket.scope.get(AUTH))

    # -- the hub's side: never awaits ----------------------------------------------------------

    def offer(self, key: object, frame: bytes) -> None:
        outbox = self._outbox
        if type(key) is tuple:
            # A period frame (hub._offer_period): a state of the closed period still pending
            # is stale, and the new state must come after the period frame, not in its slot.
            outbox.pop(key[0], None)
        proto = self._proto
        if (
            not outbox
            and proto is not None
            and proto.writable.is_set()
            and proto.conn.state is OPEN
            and not proto.close_sent
            and self._closing is None
        ):  # _can_write, inlined: this runs once per subscriber per changed view
            proto.transport.write(frame)
            self.sent += 1
            hub = self.hub
            hub.frames_sent += 1
            hub.sent_bytes += len(frame)
            return
        if key in outbox:
            self.hub.frames_conflated += 1
        outbox[key] = frame  # an existing key keeps its place: latest state, original slot
        self._wake.set()

    def _can_write(self) -> bool:
        """The direct path is open: uvicorn's protocol is open and its transport has room."""
        proto = self._proto
        return (
            proto is not None
            and proto.writable.is_set()
            and proto.conn.state is OPEN
            and not proto.close_sent
            and self._closing is None
        )

    def close_soon(self, code: int, reason: str) -> None:
        if self._closing is None and not self._gone:
            self._closing = (code, reason)
            if self._tasks:
                reader, sender = self._tasks
                sender.cancel()  # it only ever waits for room or a frame: safe to interrupt
                if not self._busy:
                    # Never interrupt a request half-way (a write waiting for its commit);
                    # a busy reader checks _closing when the request is done.
                    reader.cancel()

    def _reply(self, value: Mapping[str, Any]) -> None:
        frame = ws_frame(orjson.dumps(value))
        if not self._outbox and self._can_write():
            self._proto.transport.write(frame)  # type: ignore[union-attr]
            self.sent += 1
            self.hub.frames_sent += 1
            self.hub.sent_bytes += len(frame)
            return
        self._outbox[next(self._keys)] = frame
        self._replies += 1
        self._wake.set()

    def _error(self, rid: object, status: int, detail: str) -> None:
        frame: ErrorFrame = {"type": "error", "id": rid, "status": status, "detail": detail}
        self._reply(frame)

    # -- tasks ---------------------------------------------------------------------------------

    async def run(self) -> None:
        if self._closing is None:
            reader = asyncio.create_task(self._read_loop())
            sender = asyncio.create_task(self._send_loop())
            self._tasks = [reader, sender]
            try:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                if self._busy:
                    await asyncio.wait([reader])  # let a write in flight finish and answer
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
            for task in self._tasks:
                if not task.cancelled() and task.exception() is not None:
                    log.error("WebSocket connection task failed", exc_info=task.exception())
                    self._closing = self._closing or (1011, "internal error")
        if not self._gone:
            code, reason = self._closing or (NORMAL, "")
            await _close(self.websocket, code, reason)

    async def _send_loop(self) -> None:
        """Drain what ``offer`` and ``_reply`` could not write at once, oldest first."""
        proto = self._proto
        send = self.websocket.send
        clock = asyncio.get_running_loop().time
        outbox = self._outbox
        hub = self.hub
        while True:
            if not outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            if proto is not None and not proto.writable.is_set():
                # The hub's watchdog closes us if this stays set for SEND_TIMEOUT: one
                # attribute store per wait instead of a timer per frame.
                self.send_started = clock()
                await proto.writable.wait()
                self.send_started = None
                continue
            key = next(iter(outbox))
            frame = outbox.pop(key)
            if type(key) is int:
                self._replies -= 1
                self._room.set()
            if proto is not None:
                if proto.conn.state is not OPEN or proto.close_sent:
                    self._gone = True  # closed under us (keepalive timeout, peer's close)
                    return
                proto.transport.write(frame)
                self.sent += 1
                hub.frames_sent += 1
                hub.sent_bytes += len(frame)
                continue
            self.send_started = clock()
            try:
                await send({"type": "websocket.send", "text": ws_payload(frame).decode()})
            except WebSocketDisconnect:
                self._gone = True
                return
            self.send_started = None
            self.sent += 1
            hub.frames_sent += 1
            hub.sent_bytes += len(frame)

    async def _read_loop(self) -> None:
        receive = self.websocket.receive
        while True:
            while self._replies >= self._max_replies:
                # Backpressure: stop reading until the sender has taken the replies.
                self._room.clear()
                await self._room.wait()
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self._gone = True
                return
            text = message.get("text")
            if text is None:
                self._binary += 1
                if self._binary > BINARY_LIMIT:
                    self.close_soon(POLICY, "binary frames are not supported")
                    return
                self._error(None, 400, "binary frames are not supported: send JSON text frames")
                continue
            self._busy = True
            try:
                await self._handle(text)
            finally:
                self._busy = False
            if self._closing is not None:
                return

    # -- requests ------------------------------------------------------------------------------

    async def _handle(self, text: str) -> None:
        rid: object = None
        try:
            size = len(text)
            if size > self._max_frame // 4:  # up to 4 UTF-8 bytes per character
                size = len(text.encode())
            if size > self._max_frame:
                raise _Bad(413, f"frame of {size} bytes exceeds the limit of {self._max_frame}")
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                if isinstance(json_error(exc), MemoryError):
                    raise MemoryError from None
                raise _Bad(400, f"malformed JSON: {exc}") from None
            if type(msg) is not dict:
                raise _Bad(400, f"a frame must be a JSON object, but got {type(msg).__name__}")
            rid = _request_id(msg.get("id"))
            op = msg.get("op")
            fields = _FIELDS.get(op) if type(op) is str else None
            if fields is None:
                raise _Bad(400, f"unknown op {show(op)}; expected one of {', '.join(_FIELDS)}")
            for name in msg:
                if name not in fields:
                    raise _Bad(400, f"unknown field {show(name)} for op {show(op)}")
            if op == "score":
                await self._score(rid, msg)
            elif op == "subscribe":
                if self.public_only:
                    board = check_board_name(_field(msg, "board"))
                    if not await self.runtime.players.is_public(board):
                        raise _Bad(
                            401, f"unauthorized: board {show(board)} is not public; {_CREDENTIAL}"
                        )
                await self._subscribe(rid, msg)
                if self.public_only and not await self.runtime.players.is_public(board):
                    # public_read went off while this subscription was being set up, before
                    # the hub knew of it (service/hub.py closes those it knows of).
                    self.close_soon(POLICY, "unauthorized: the board is no longer public")
            else:
                self._unsubscribe(rid)
        except _Bad as bad:
            self._error(rid, bad.status, bad.detail)
        except Problem as refusal:  # a player's write refused by service/players.py
            self._error(rid, refusal.status, refusal.detail)
        except StoreError as exc:
            status, _, detail = store_error(exc)
            self._error(rid, status, detail)
        except MemoryError:
            self.runtime.backend.on_memory_error()
            log.warning("a WebSocket request failed with MemoryError (answered 503)")
            self._error(rid, 503, OUT_OF_MEMORY)
        except Exception:
            log.exception("WebSocket request failed")
            self._error(rid, 500, "internal error; the server log has the details")

    async def _subscribe(self, rid: object, msg: dict[str, Any]) -> None:
        if not self._read:
            raise _Bad(403, "the API key lacks the 'read' scope subscribe needs")
        board = check_board_name(_field(msg, "board"))
        top, member = msg.get("top"), msg.get("member")
        if (top is None) == (member is None):
            raise _Bad(400, f"subscribe needs exactly one of 'top' (1-{MAX_TOP}) or 'member'")
        radius = msg.get("radius")
        if radius is not None and member is None:
            raise _Bad(400, "radius goes with 'member': the entries around that member")
        if rid in self.subs:
            raise _Bad(409, f"subscription id {show(rid)} is already in use on this connection")
        if len(self.subs) >= self._max_subs:
            raise _Bad(400, f"a connection holds at most {self._max_subs} subscriptions")
        window = msg.get("window")
        if window is not None and (type(window) is not str or not 0 < len(window) <= 64):
            raise _Bad(400, f"window must be a window name of the board, but got {show(window)}")
        head = '{"type":"%s","id":' + orjson.dumps(rid).decode()
        if top is not None:
            if type(top) is not int or not 1 <= top <= MAX_TOP:
                raise _Bad(400, f"top must be an integer from 1 to {MAX_TOP}, but got {show(top)}")
            await self.hub.prepare(board, top, None, window=window)
            self.subs[rid] = self.hub.subscribe_top(self, head % "top", board, top, window)
        elif radius is not None:
            if type(radius) is not int or not 0 <= radius <= MAX_RADIUS:
                raise _Bad(
                    400, f"radius must be an integer from 0 to {MAX_RADIUS}, but got {show(radius)}"
                )
            member = check_member(member, self.runtime.backend.boards.limits)
            await self.hub.prepare(board, 0, member, radius, window)
            around = self.hub.subscribe_around(self, head % "around", board, member, radius, window)
            self.subs[rid] = around
        else:
            member = check_member(member, self.runtime.backend.boards.limits)
            await self.hub.prepare(board, 0, member, window=window)
            self.subs[rid] = self.hub.subscribe_rank(self, head % "rank", board, member, window)

    def _unsubscribe(self, rid: object) -> None:
        sub = self.subs.pop(rid, None)
        if sub is None:
            raise _Bad(404, f"no subscription with id {show(rid)} on this connection")
        self.hub.unsubscribe(sub)
        self._outbox.pop(sub, None)  # nothing for this id after its ack
        self._outbox.pop((sub, "period"), None)
        self._reply({"type": "ack", "id": rid})

    async def _score(self, rid: object, msg: dict[str, Any]) -> None:
        player = self.player
        if self.public_only:
            raise _Bad(401, f"unauthorized: score needs a credential; {_CREDENTIAL}")
        if not self._write and player is None:
            raise _Bad(403, "the API key lacks the 'write' scope score needs")
        board = check_board_name(_field(msg, "board"))
        value = _field(msg, "score")
        if player is None:
            member = _field(msg, "member")
            writer = writers.KEY if self.runtime.auth is not None else writers.OPEN
        else:
            players = self.runtime.players
            # The session may have expired since the upgrade and the purge not reached it yet:
            # a write is a right, so it is checked again (one lookup; 401 if gone).
            await players.authenticate(player.sid)
            member = await players.authorize_write(player, board, msg.get("member", MISSING))
            writer = writers.Writer.player(player.user)  # the user id, never the session id
        result = await self.runtime.backend.boards.write(
            board, member, value, msg.get("metadata"), writer=writer
        )
        by = self._by
        self.runtime.metrics.score_writes[by] += 1
        self._reply({"type": "ack", "id": rid, "by": by, **result})


def _field(msg: dict[str, Any], name: str) -> Any:
    if name not in msg:
        raise _Bad(400, f"op {show(msg['op'])} needs the field {name!r}")
    return msg[name]


def _request_id(rid: object) -> object:
    if type(rid) is str and 0 < len(rid) <= MAX_ID_CHARS:
        return rid
    if type(rid) is int and -MAX_SAFE_INT < rid < MAX_SAFE_INT:
        return rid
    if rid is None:
        raise _Bad(400, "every request needs an 'id' (a string or an integer)")
    raise _Bad(
        400,
        f"id must be a string of 1-{MAX_ID_CHARS} characters or an integer, but got {show(rid)}",
    )


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await websocket.close(code, reason)
    except TimeoutError:
        _abort(websocket)
    except WebSocketDisconnect:
        pass


def _server_protocol(websocket: WebSocket) -> Any:
    """uvicorn's protocol object behind this connection, or None under another server.

    uvicorn's ASGI ``send`` is a bound method of its protocol object, which holds the
    transport; Starlette wraps it in closures. Follow that chain a few links.
    """
    fn: Any = websocket._send
    for _ in range(8):
        owner = getattr(fn, "__self__", None)
        if getattr(owner, "transport", None) is not None:
            return owner
        inner = None
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value):
                inner = value
                break
        if inner is None:
            return None
        fn = inner
    return None


def _direct_protocol(websocket: WebSocket) -> WebSocketsSansIOProtocol | None:
    """The protocol whose transport may take pre-built frames, or None (use ASGI send).

    Only uvicorn's websockets sans-I/O protocol, and only without extensions: a negotiated
    permessage-deflate keeps a compression context that frames written behind its back would
    leave out of step (the CLI turns it off; this guards any other configuration).
    """
    proto = _server_protocol(websocket)
    if isinstance(proto, WebSocketsSansIOProtocol) and not proto.conn.extensions:
        return proto
    return None


def _abort(websocket: WebSocket) -> None:
    """Drop the TCP connection of a peer that does not read, without waiting for it.

    ASGI can only *close*, and a graceful close waits for the send buffer to drain -- forever,
    if the peer never reads. Under another server than uvicorn this finds no transport and the
    connection ends when the peer goes.
    """
    proto = _server_protocol(websocket)
    transport = getattr(proto, "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: close() then sends RST and drops the unsent queue. Without it the
            # kernel keeps the orphaned socket and its megabytes of unsent frames until
            # the peer reads or TCP gives up, minutes later.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        transport.abort()
        return
    log.warning("could not abort a stalled WebSocket; it stays open until the peer reads")
