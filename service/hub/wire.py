"""What the hub hands a connection: pre-built WebSocket frames, and the ``Peer`` it hands them to.

Fan-out cost grows with distinct views, not subscribers. A changed view is encoded once (one
``orjson.dumps`` of everything after the subscription id: the *tail*) and then framed once per
distinct subscription head (``{"type":"top","id":<id>``): clients that use the same id -- every
copy of the live page does -- share one pre-built WebSocket frame, ``bytes`` ready for the socket
(``ws_frame``; the server never compresses, so one frame fits every connection). Heads are
interned (``intern_head``), so the fan-out loop tells equal heads apart by identity.

Delivery is ``Peer.offer(key, frame)``, which never awaits: the connection (service/ws.py) writes
the bytes straight to its transport when it has room and nothing queued, else drops them into its
conflating outbox (keyed by subscription, so an unsent older state is replaced) for its sender
task. A slow connection holds at most one pending frame per subscription and never delays
anyone else. A client that stops reading leaves frames waiting for room; the hub's watchdog
scans the connections once a second and closes those that waited ``SEND_TIMEOUT``.
"""

from typing import Protocol

from starlette import status
from websockets.frames import Frame, Opcode

# Close codes the hub itself asks for (the protocol edge owns the rest).
POLICY = status.WS_1008_POLICY_VIOLATION
GOING_AWAY = status.WS_1001_GOING_AWAY

SEND_TIMEOUT = 5.0  # seconds one frame may wait for a client to make room before it is closed


def ws_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed, unfragmented WebSocket text frame, as the server sends it.

    websockets' own frame writer (the library uvicorn speaks the protocol with), called once
    per distinct frame rather than once per subscriber.
    """
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def ws_payload(frame: bytes) -> bytes:
    """The payload of a frame made by ``ws_frame`` (for senders that need the text back)."""
    n = frame[1] & 0x7F
    return frame[2 if n < 126 else 4 if n == 126 else 10 :]


class Peer(Protocol):
    """The hub's view of one connection (service/ws.py ``Connection``)."""

    send_started: float | None  # loop time a frame began waiting for room, None when idle
    public_only: bool  # connected with no credential: may watch public_read boards only

    def offer(self, key: object, frame: bytes) -> None:
        """Deliver ``frame`` (a complete WebSocket frame), replacing any unsent one for key."""
        ...

    def close_soon(self, code: int, reason: str) -> None: ...


# Distinct subscription heads seen since start: bounded by what clients choose as ids, so a
# size cap keeps a client cycling through random ids from growing it without end.
_HEADS: dict[bytes, bytes] = {}
_MAX_HEADS = 10_000


def intern_head(head: str) -> bytes:
    """'{"type":"top","id":<id>' as bytes, one object per distinct head."""
    raw = head.encode()
    if len(_HEADS) >= _MAX_HEADS and raw not in _HEADS:
        _HEADS.clear()  # interning is only a speed-up: starting over is always correct
    return _HEADS.setdefault(raw, raw)
