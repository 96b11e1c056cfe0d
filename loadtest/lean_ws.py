"""A WebSocket ``score`` endpoint with no framework: the floor under bench_write_floor's ``bare``.

    python -m loadtest.lean_ws PORT parsed   # websockets' sans-I/O parser, answered in the callback
    python -m loadtest.lean_ws PORT queued   # the same, each message handed to a task by a queue

Issue #17's 1,000-subscriber target is bounded below by what an isolated write costs a Python
server at all. ``bare`` (uvicorn + Starlette, loadtest/bare_app.py) answers that for the stack
rankd runs on; these two answer it for less than that stack, to show where its cost goes:

    parsed   the parser uvicorn's sans-I/O protocol uses (``websockets.server.ServerProtocol``),
             on a plain uvloop ``asyncio.Protocol``: the op is parsed and acked inside
             ``data_received``, with no ASGI message, no task and no queue
    queued   ``parsed`` plus the hop every ASGI server makes: the message goes through an
             ``asyncio.Queue`` to a reader task, which answers it

Each does what bare_app's route does (parse the JSON op, answer an ack of the same shape) and
nothing else: no limits, no keepalive pings, no close handshake beyond the parser's own. A
benchmark server only; loopback only.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import orjson
import uvloop
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from loadtest._procs import LOOPBACK


def _ack(text: bytes) -> bytes:
    op = orjson.loads(text)
    return orjson.dumps({"type": "ack", "id": op["id"], "by": "anonymous", "rank": 1})


class _Lean(asyncio.Protocol):
    def __init__(self, queued: bool) -> None:
        self.conn = ServerProtocol()
        self.queued = queued
        self.transport: asyncio.Transport | None = None
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.queued:
            self.reader = asyncio.get_running_loop().create_task(self._read())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reader is not None:
            self.reader.cancel()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        for event in conn.events_received():
            if isinstance(event, Request):
                conn.send_response(conn.accept(event))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                text = bytes(event.data)
                if self.queued:
                    self.inbox.put_nowait(text)
                else:
                    conn.send_text(_ack(text))
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.conn.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                self.transport.close()  # the parser's end of the connection

    async def _read(self) -> None:
        while True:
            text = await self.inbox.get()
            self.conn.send_text(_ack(text))
            self._flush()


async def _serve(port: int, queued: bool) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Lean(queued), LOOPBACK, port)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    port, mode = int(argv[0]), argv[1]
    if mode not in ("parsed", "queued"):
        raise SystemExit(f"mode must be parsed or queued, not {mode!r}")
    uvloop.run(_serve(port, mode == "queued"))


if __name__ == "__main__":
    main(sys.argv[1:])
