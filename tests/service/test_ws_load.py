"""/v1/ws under load, against the real process: settling, coalescing and slow clients.

* After a burst of 1,000 writes settles, a top-10 subscriber's last frame equals HTTP's top 10.
* Coalescing: during a burst a subscription gets at most one frame per tick (+1 trailing).
* A client that stops reading is disconnected within bounded time, while writers and another
  subscriber carry on. The non-reader is a raw socket that does the WebSocket handshake by hand
  and then never calls recv(), with a tiny receive buffer: a client library would keep
  reading in the background and hide the stall.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import socket
import struct
import time
from typing import Any

import orjson

from tests.contract.test_ws import Client, http_client, run, ws_client

TCP_ESTABLISHED = 1


async def _settle(ws: Client, quiet: float = 0.5) -> list[dict[str, Any]]:
    """Frames until none arrived for ``quiet`` seconds."""
    frames = []
    while True:
        batch = await ws.quiet(quiet)
        if not batch:
            return frames
        frames += batch


def test_after_a_burst_settles_the_last_frame_equals_http_top(server: Any, name: str) -> None:
    rng = random.Random(1234)
    members = [f"p{i}" for i in range(300)]

    async def main() -> None:
        async with ws_client(server) as sub, ws_client(server) as writer:
            await sub.send(op="subscribe", id="top", board=name, top=10)
            await sub.expect("top", "top")
            started = time.monotonic()
            for i in range(1000):
                score: float = rng.randrange(-1000, 100_000)
                if i % 7 == 0:
                    score += 0.5
                meta = {"i": i} if i % 3 == 0 else None
                frame: dict[str, Any] = {"member": rng.choice(members), "score": score}
                if meta:
                    frame["metadata"] = meta
                await writer.send(op="score", id=i, board=name, **frame)
            for i in range(1000):
                await writer.expect("ack", i)
            burst = time.monotonic() - started
            frames = await _settle(sub)
            assert frames, "no update at all"
            # Coalesced: not one frame per write.
            assert len(frames) <= burst / 0.1 + 2, (len(frames), burst)
            async with http_client(server) as http:
                truth = (await http.get(f"/v1/boards/{name}/top", params={"limit": 10})).json()
            last = frames[-1]
            assert last["entries"] == truth["entries"]
            assert last["total"] == truth["total"]

    run(main)


def test_coalescing_at_most_one_frame_per_tick(server: Any, name: str) -> None:
    async def main() -> None:
        async with ws_client(server) as sub, ws_client(server) as writer:
            await sub.send(op="subscribe", id="t", board=name, top=3)
            await sub.send(op="subscribe", id="me", board=name, member="w")
            await sub.expect("top", "t")
            await sub.expect("rank", "me")
            received: list[tuple[float, dict[str, Any]]] = []

            async def collect() -> None:
                while True:
                    frame = await sub.recv(timeout=30)
                    received.append((time.monotonic(), frame))

            collector = asyncio.create_task(collect())
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < 1.5:
                n += 1
                # Every write changes both views: a new best score for "w" and for the top.
                await writer.send(op="score", id=n, board=name, member="w", score=n)
                await writer.expect("ack", n)
                await asyncio.sleep(0.004)
            duration = time.monotonic() - started
            await asyncio.sleep(0.5)
            collector.cancel()
            assert n > 100
            for kind in ("t", "me"):
                frames = [(t, f) for t, f in received if f["id"] == kind]
                # At most one per tick: flushes are >= one tick apart, the first comes after the
                # first write, and each frame arrives after its flush.
                window = frames[-1][0] - started
                assert 3 <= len(frames) <= window / 0.1 + 1, (kind, len(frames), window)
                assert window < duration + 0.5  # ... and the trailing frame came promptly
                seqs = [f["seq"] for _, f in frames]
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            last_top = [f for _, f in received if f["id"] == "t"][-1]
            last_me = [f for _, f in received if f["id"] == "me"][-1]
            assert last_top["entries"][0]["score"] == n  # the latest state won
            assert (last_me["rank"], last_me["score"]) == (1, n)

    run(main)


def test_many_subscribers_of_one_view_get_the_same_frame_in_one_tick(
    server: Any, name: str
) -> None:
    """300 connections on one top-10 with the same id (as copies of the live page): one write,
    and every one of them gets the identical frame, with none left out."""

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            subs = [await stack.enter_async_context(ws_client(server)) for _ in range(300)]
            for ws in subs:
                await ws.send(op="subscribe", id="t", board=name, top=10)
            for ws in subs:
                await ws.expect("top", "t")
            async with http_client(server) as http:
                r = await http.post(
                    f"/v1/boards/{name}/scores", json={"member": "a", "score": 2**62}
                )
                assert r.status_code == 200, r.text
            frames = [await ws.conn.recv() for ws in subs]
            assert len(set(frames)) == 1
            frame = orjson.loads(frames[0])
            assert frame["entries"] == [{"rank": 1, "member": "a", "score": 2**62}]

    run(main)


def _masked_text_frame(payload: dict[str, Any]) -> bytes:
    data = orjson.dumps(payload)
    mask = os.urandom(4)
    n = len(data)
    head = b"\x81" + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _raw_websocket(port: int) -> socket.socket:
    """Handshake by hand, read exactly the 101 response, and hand back the socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: not one byte of frames beyond the headers
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def test_a_client_that_never_reads_is_dropped_and_nobody_waits_for_it(rankd_server: Any) -> None:
    srv = rankd_server()
    boards = [f"heavy{i}" for i in range(10)]
    pad = {"pad": "x" * 900}  # ~1 KB per entry: a top-100 frame is ~100 KB

    async def main() -> None:
        async with http_client(srv) as http:
            for board in boards:
                for half in (0, 50):
                    batch = [
                        {"member": f"m{j}", "score": j, "metadata": pad}
                        for j in range(half, half + 50)
                    ]
                    r = await http.post(f"/v1/boards/{board}/scores:batch", json=batch)
                    assert r.status_code == 200, r.text
        raw = _raw_websocket(srv.port)
        for i, board in enumerate(boards):
            raw.sendall(
                _masked_text_frame({"op": "subscribe", "id": i, "board": board, "top": 100})
            )
        async with ws_client(srv) as good, ws_client(srv) as writer:
            await good.send(op="subscribe", id="g", board=boards[0], top=10)
            await good.expect("top", "g")
            gaps: list[float] = []
            acks: list[float] = []
            stop = asyncio.Event()

            async def watch() -> None:
                last = time.monotonic()
                while not stop.is_set():
                    await good.recv(timeout=10)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            async def write() -> None:
                n = 1000
                while not stop.is_set():
                    n += 1
                    t0 = time.monotonic()
                    for board in boards:  # a new leader on every board: every view changes
                        await writer.send(
                            op="score", id=n, board=board, member=f"w{n % 5}", score=n, metadata=pad
                        )
                    for _ in boards:
                        await writer.expect("ack", n)
                    acks.append(time.monotonic() - t0)
                    await asyncio.sleep(0.02)

            tasks = [asyncio.create_task(watch()), asyncio.create_task(write())]
            started = time.monotonic()
            dropped_after = None
            while time.monotonic() - started < 20:
                await asyncio.sleep(0.1)
                if _tcp_state(raw) != TCP_ESTABLISHED:
                    dropped_after = time.monotonic() - started
                    break
            await asyncio.sleep(1.0)  # the others keep going after the drop too
            stop.set()
            await asyncio.gather(*tasks)
        raw.close()
        # Send timeout (5 s) + close timeout (1 s) once the buffers are full.
        assert dropped_after is not None, "the non-reading client was never disconnected"
        assert dropped_after < 15, dropped_after
        assert len(gaps) > 20
        # Typically a frame every 0.1 s tick and acks in a few ms; bounds leave room for a
        # loaded CI box, and are still far below the 5 s a blocked writer would show.
        assert max(gaps) < 0.5, sorted(gaps)[-5:]
        assert max(acks) < 0.5, sorted(acks)[-5:]

    run(main)
    logs = srv.logs()
    assert "Traceback" not in logs, logs
