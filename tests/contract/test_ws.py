"""/v1/ws against the real ``rankd`` process, driven by a real WebSocket client (``websockets``).

Protocol semantics (full state, updates, unsubscribe), "frames only on change", acks equal to
the HTTP write results, error frames for every kind of bad input, auth, the connection limit
and session binding. Fan-out under load and slow clients live in test_ws_load.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TICK = 0.1  # the server default (settings.limits.ws_tick)
QUIET = 3 * TICK + 0.15  # long enough that a pending flush would have happened

READ_KEY = "read-key-0123456789abcdef"
WRITE_KEY = "write-key-0123456789abcdef"


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 60))


class Client:
    """A thin wrapper: JSON frames in and out, with timeouts that fail tests instead of hanging."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    async def send(self, **frame: Any) -> None:
        await self.conn.send(orjson.dumps(frame).decode())

    async def send_raw(self, data: str | bytes) -> None:
        await self.conn.send(data)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        frame: dict[str, Any] = orjson.loads(raw)
        return frame

    async def expect(self, kind: str, id: object, timeout: float = 5.0) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["type"] == kind and frame.get("id") == id, frame
        return frame

    async def quiet(self, seconds: float = QUIET) -> list[dict[str, Any]]:
        """Every frame that arrives within ``seconds``."""
        frames = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frames.append(await self.recv(left))
            except TimeoutError:
                break
        return frames

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str | None]:
        """Wait for the server to close; (code, reason) it sent."""
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(timeout):
                while True:
                    await self.conn.recv()
        return self.conn.close_code, self.conn.close_reason


@contextlib.asynccontextmanager
async def ws_client(
    srv: Any, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    url = srv.url.replace("http://", "ws://") + "/v1/ws" + query
    async with connect(url, additional_headers=headers, proxy=None, max_size=None) as conn:
        yield Client(conn)


def http_client(srv: Any, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=srv.url, trust_env=False, timeout=10.0, **kwargs)


def test_subscribe_full_state_updates_unsubscribe(server: Any, name: str) -> None:
    async def main() -> None:
        async with ws_client(server) as ws, http_client(server) as http:
            await ws.send(op="subscribe", id="s1", board=name, top=3)
            first = await ws.expect("top", "s1")
            epoch = first["epoch"]
            assert isinstance(epoch, str) and epoch
            assert first == {
                "type": "top",
                "id": "s1",
                "board": name,
                "window": None,  # the board does not exist yet
                "period": None,
                "total": 0,
                "entries": [],
                "seq": 0,
                "epoch": epoch,
            }
            r = await http.post(
                f"/v1/boards/{name}/scores",
                json={"member": "alice", "score": 10, "metadata": {"c": "fr"}},
            )
            assert r.status_code == 200, r.text
            update = await ws.expect("top", "s1")
            assert update["entries"] == [
                {"rank": 1, "member": "alice", "score": 10, "metadata": {"c": "fr"}}
            ]
            assert (update["total"], update["seq"], update["epoch"]) == (1, 1, epoch)
            await http.post(f"/v1/boards/{name}/scores", json={"member": "bob", "score": 20})
            update = await ws.expect("top", "s1")
            assert [e["member"] for e in update["entries"]] == ["bob", "alice"]
            assert update["seq"] == 2

            await ws.send(op="unsubscribe", id="s1")
            assert await ws.recv() == {"type": "ack", "id": "s1"}
            await http.post(f"/v1/boards/{name}/scores", json={"member": "carol", "score": 30})
            assert await ws.quiet() == []
            # The id is free again, and a new subscription starts with the full state.
            await ws.send(op="subscribe", id="s1", board=name, top=1)
            again = await ws.expect("top", "s1")
            assert again["entries"] == [{"rank": 1, "member": "carol", "score": 30}]

    run(main)


def test_member_rank_frames_only_on_change(server: Any, name: str) -> None:
    async def main() -> None:
        async with ws_client(server) as ws, http_client(server) as http:

            async def post(member: str, score: int) -> None:
                r = await http.post(
                    f"/v1/boards/{name}/scores", json={"member": member, "score": score}
                )
                assert r.status_code == 200, r.text

            await ws.send(op="subscribe", id=7, board=name, member="alice")
            frame = await ws.expect("rank", 7)
            assert (frame["member"], frame["rank"], frame["score"]) == ("alice", None, None)
            await post("alice", 50)
            frame = await ws.expect("rank", 7)
            assert (frame["rank"], frame["score"], frame["seq"]) == (1, 50, 1)
            await post("bob", 10)  # below alice: her rank is unchanged
            await post("alice", 40)  # "best": not an improvement, nothing changes
            assert await ws.quiet() == []
            await post("carol", 60)  # overtakes her
            frame = await ws.expect("rank", 7)
            assert (frame["rank"], frame["score"]) == (2, 50)
            r = await http.delete(f"/v1/boards/{name}/members/carol")
            assert r.status_code in (200, 204), r.text
            frame = await ws.expect("rank", 7)
            assert (frame["rank"], frame["score"]) == (1, 50)
            r = await http.delete(f"/v1/boards/{name}")
            assert r.status_code in (200, 204), r.text
            frame = await ws.expect("rank", 7)
            assert (frame["rank"], frame["score"]) == (None, None)
            assert await ws.quiet() == []

    run(main)


def test_around_me_frames_match_the_http_around_read(server: Any, name: str) -> None:
    async def main() -> None:
        async with ws_client(server) as ws, http_client(server) as http:
            batch = [{"member": f"m{i:02}", "score": 1000 - 10 * i} for i in range(30)]
            r = await http.post(f"/v1/boards/{name}/scores:batch", json=batch)
            assert r.status_code == 200, r.text

            async def around() -> list[Any]:
                r = await http.get(f"/v1/boards/{name}/members/m10/around?radius=2")
                assert r.status_code == 200, r.text
                entries: list[Any] = r.json()["entries"]
                return entries

            await ws.send(op="subscribe", id="near", board=name, member="m10", radius=2)
            frame = await ws.expect("around", "near")
            assert frame["member"] == "m10" and frame["total"] == 30
            assert frame["entries"] == await around()
            assert [e["member"] for e in frame["entries"]] == ["m08", "m09", "m10", "m11", "m12"]
            # Far below the window (an insert at rank 31, a move inside ranks 20-25): nothing.
            for member, score in (("new", 1), ("m25", 795)):
                r = await http.post(
                    f"/v1/boards/{name}/scores", json={"member": member, "score": score}
                )
                assert r.status_code == 200, r.text
            assert await ws.quiet() == []
            # m20 jumps from rank 21 to rank 1: everyone from 1 to 20 moves down by one.
            r = await http.post(f"/v1/boards/{name}/scores", json={"member": "m20", "score": 5000})
            assert r.status_code == 200, r.text
            frame = await ws.expect("around", "near")
            assert frame["entries"] == await around()
            assert frame["entries"][2] == {"rank": 12, "member": "m10", "score": 900}
            r = await http.delete(f"/v1/boards/{name}/members/m10")
            assert r.status_code in (200, 204), r.text
            frame = await ws.expect("around", "near")
            assert frame["entries"] == []
            await ws.send(op="subscribe", id="bad", board=name, radius=2, top=3)
            error = await ws.expect("error", "bad")
            assert error["status"] == 400 and "radius" in error["detail"]
            await ws.send(op="subscribe", id="big", board=name, member="m1", radius=51)
            error = await ws.expect("error", "big")
            assert error["status"] == 400 and "0 to 50" in error["detail"]

    run(main)


def test_write_far_below_the_view_sends_no_top_frame(server: Any, name: str) -> None:
    async def main() -> None:
        async with ws_client(server) as ws, http_client(server) as http:
            batch = [{"member": f"m{i:02}", "score": 1000 - i} for i in range(30)]
            r = await http.post(f"/v1/boards/{name}/scores:batch", json=batch)
            assert r.status_code == 200, r.text
            await ws.send(op="subscribe", id="t", board=name, top=5)
            first = await ws.expect("top", "t")
            assert [e["member"] for e in first["entries"]] == ["m00", "m01", "m02", "m03", "m04"]
            assert first["total"] == 30
            await http.post(f"/v1/boards/{name}/scores", json={"member": "new", "score": 1})
            await http.post(f"/v1/boards/{name}/scores", json={"member": "m20", "score": 995 - 9})
            assert await ws.quiet() == []
            await http.post(f"/v1/boards/{name}/scores", json={"member": "m29", "score": 2000})
            frame = await ws.expect("top", "t")
            assert frame["entries"][0] == {"rank": 1, "member": "m29", "score": 2000}
            assert frame["total"] == 31

    run(main)


def test_score_op_acks_exactly_like_http(server: Any, name: str) -> None:
    writes: list[dict[str, Any]] = [
        {"member": "alice", "score": 10},
        {"member": "bob", "score": 12.5, "metadata": {"level": 3}},
        {"member": "alice", "score": 5},  # not better: changed false
        {"member": "alice", "score": 30, "metadata": {"x": [1, 2]}},
        {"member": "carol", "score": -(2**62)},
    ]
    bad: list[dict[str, Any]] = [
        {"member": "dave", "score": "12"},
        {"member": "", "score": 1},
        {"member": "dave", "score": 2**63},
        {"member": "dave", "score": 1, "metadata": [1]},
    ]

    async def main() -> None:
        async with ws_client(server) as ws, http_client(server) as http:
            for i, body in enumerate(writes + bad):
                r = await http.post(f"/v1/boards/{name}-http/scores", json=body)
                await ws.send(op="score", id=i, board=f"{name}-ws", **body)
                frame = await ws.recv()
                if r.status_code == 200:
                    # "by": who wrote; no keys on this server (protected mode): anonymous.
                    assert frame == {"type": "ack", "id": i, "by": "anonymous", **r.json()}
                else:
                    problem = r.json()
                    assert frame == {
                        "type": "error",
                        "id": i,
                        "status": problem["status"],
                        "detail": problem["detail"],
                    }
            top_http = (await http.get(f"/v1/boards/{name}-http/top")).json()
            top_ws = (await http.get(f"/v1/boards/{name}-ws/top")).json()
            assert top_http["entries"] == top_ws["entries"] and len(top_ws["entries"]) == 3

    run(main)


BAD_FRAMES: list[tuple[str, object, int, str]] = [
    ("{bad", None, 400, "malformed JSON"),
    ("[1, 2]", None, 400, "JSON object"),
    ('"subscribe"', None, 400, "JSON object"),
    ('{"op": "subscribe", "board": "b", "top": 3}', None, 400, "needs an 'id'"),
    ('{"op": "subscribe", "id": {"a": 1}, "board": "b", "top": 3}', None, 400, "id must be"),
    ('{"op": "subscribe", "id": true, "board": "b", "top": 3}', None, 400, "id must be"),
    ('{"op": "subscribe", "id": "' + "x" * 129 + '", "board": "b", "top": 3}', None, 400, "id"),
    ('{"op": "dance", "id": "a"}', "a", 400, "unknown op 'dance'"),
    ('{"id": "a"}', "a", 400, "unknown op None"),
    ('{"op": "subscribe", "id": "a", "top": 3}', "a", 400, "needs the field 'board'"),
    ('{"op": "subscribe", "id": "a", "board": "b"}', "a", 400, "exactly one of"),
    ('{"op": "subscribe", "id": "a", "board": "b", "top": 3, "member": "m"}', "a", 400, "one of"),
    ('{"op": "subscribe", "id": "a", "board": "b", "top": 0}', "a", 400, "from 1 to 100"),
    ('{"op": "subscribe", "id": "a", "board": "b", "top": 101}', "a", 400, "from 1 to 100"),
    ('{"op": "subscribe", "id": "a", "board": "b", "top": "10"}', "a", 400, "from 1 to 100"),
    ('{"op": "subscribe", "id": "a", "board": "b", "top": true}', "a", 400, "from 1 to 100"),
    ('{"op": "subscribe", "id": "a", "board": "no spaces", "top": 3}', "a", 400, "board name"),
    ('{"op": "subscribe", "id": "a", "board": "b", "member": ""}', "a", 400, "member"),
    ('{"op": "subscribe", "id": "a", "board": "b", "limt": 3}', "a", 400, "unknown field 'limt'"),
    ('{"op": "unsubscribe", "id": "nope"}', "nope", 404, "no subscription"),
    ('{"op": "score", "id": 5, "board": "b", "score": 1}', 5, 400, "needs the field 'member'"),
    ('{"op": "score", "id": 5, "board": "b", "member": "m"}', 5, 400, "needs the field 'score'"),
    ('{"op": "score", "id": 5, "board": 7, "member": "m", "score": 1}', 5, 400, "board name"),
    ('{"op": "score", "id": 5, "board": "b", "member": "m", "score": NaN}', None, 400, "JSON"),
]


def test_bad_frames_get_error_frames_and_the_connection_lives_on(server: Any, name: str) -> None:
    async def main() -> None:
        async with ws_client(server) as ws:
            await ws.send(op="subscribe", id="dup", board=name, top=1)
            await ws.expect("top", "dup")
            await ws.send(op="subscribe", id="dup", board=name, member="x")
            frame = await ws.expect("error", "dup")
            assert frame["status"] == 409 and "already in use" in frame["detail"]
            for raw, rid, status, detail in BAD_FRAMES:
                await ws.send_raw(raw)
                frame = await ws.recv()
                assert frame["type"] == "error", (raw, frame)
                assert (frame["id"], frame["status"]) == (rid, status), (raw, frame)
                assert detail in frame["detail"], (raw, frame)
            await ws.send_raw(b"\x00\x01binary")
            frame = await ws.expect("error", None)
            assert frame["status"] == 400 and "binary" in frame["detail"]
            # Still the same, healthy connection.
            await ws.send(op="score", id="ok", board=name, member="m", score=1)
            # The write also moves subscription "dup"'s top 1: on the redis backend that frame
            # comes through the change feed and may arrive before the ack.
            frame = await ws.recv()
            if frame["type"] == "top":
                assert frame["id"] == "dup" and frame["entries"][0]["member"] == "m", frame
                frame = await ws.recv()
            assert (frame["type"], frame["id"], frame["rank"]) == ("ack", "ok", 1), frame

    run(main)


def test_subscription_limit_per_connection(rankd_server: Any) -> None:
    srv = rankd_server(ws_subscriptions=3)

    async def main() -> None:
        async with ws_client(srv) as ws:
            for i in range(3):
                await ws.send(op="subscribe", id=i, board="b", top=10)
                await ws.expect("top", i)
            await ws.send(op="subscribe", id=3, board="b", top=10)
            frame = await ws.expect("error", 3)
            assert frame["status"] == 400 and "at most 3 subscriptions" in frame["detail"]
            await ws.send(op="unsubscribe", id=0)
            await ws.expect("ack", 0)
            await ws.send(op="subscribe", id=3, board="b", top=10)
            await ws.expect("top", 3)

    run(main)


def test_a_frame_over_the_limit_gets_413(rankd_server: Any) -> None:
    srv = rankd_server(ws_frame_bytes=1024)

    async def main() -> None:
        async with ws_client(srv) as ws:
            await ws.send(op="score", id="big", board="b", member="m", score=1, pad="x" * 1100)
            frame = await ws.expect("error", None)
            assert frame["status"] == 413 and "exceeds the limit of 1024" in frame["detail"]
            await ws.send(op="score", id="small", board="b", member="m", score=1)
            await ws.expect("ack", "small")

    run(main)


def test_a_frame_far_over_the_limit_closes_with_1009(rankd_server: Any) -> None:
    srv = rankd_server(ws_frame_bytes=1024)

    async def main() -> None:
        async with ws_client(srv) as ws:
            await ws.send(op="score", id="ok", board="b", member="m", score=1, pad="x" * 900)
            frame = await ws.expect("error", "ok")  # the unknown field, not the size
            assert frame["status"] == 400
            with contextlib.suppress(ConnectionClosed):
                await ws.send_raw("x" * 64 * 1024)
            code, _ = await ws.closed()
            assert code == 1009

    run(main)


def test_a_binary_flood_is_closed_with_1008(server: Any) -> None:
    async def main() -> None:
        async with ws_client(server) as ws:
            for _ in range(20):
                with contextlib.suppress(ConnectionClosed):
                    await ws.send_raw(b"\xff" * 10)
            code, reason = await ws.closed()
            assert (code, reason) == (1008, "binary frames are not supported")

    run(main)


def test_auth_by_header_or_token_with_scopes(rankd_server: Any) -> None:
    srv = rankd_server(api_key=[f"{READ_KEY}:read", f"{WRITE_KEY}:write"])

    async def main() -> None:
        async with ws_client(srv, "?token=wrong-key-0123456789") as ws:
            code, reason = await ws.closed()
            assert code == 1008 and reason and reason.startswith("unauthorized"), reason
        async with ws_client(srv) as ws:  # no credential: public boards only (test_players)
            await ws.send(op="subscribe", id="s", board="b", top=10)
            frame = await ws.expect("error", "s")
            assert frame["status"] == 401 and frame["detail"].startswith("unauthorized"), frame
        async with ws_client(srv, f"?token={READ_KEY}") as ws:
            await ws.send(op="subscribe", id="s", board="b", top=10)
            await ws.expect("top", "s")
            await ws.send(op="score", id="w", board="b", member="m", score=1)
            frame = await ws.expect("error", "w")
            assert frame["status"] == 403 and "'write' scope" in frame["detail"]
        async with ws_client(srv, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as ws:
            await ws.send(op="score", id="w", board="b", member="m", score=1)
            await ws.expect("ack", "w")
            await ws.send(op="subscribe", id="s", board="b", top=10)
            frame = await ws.expect("error", "s")
            assert frame["status"] == 403 and "'read' scope" in frame["detail"]

    run(main)
    logs = srv.logs()
    assert READ_KEY not in logs and WRITE_KEY not in logs


def test_connection_limit_closes_with_1013(rankd_server: Any) -> None:
    srv = rankd_server(ws_connections=2)

    async def main() -> None:
        async with ws_client(srv) as a, ws_client(srv) as b:
            for ws in (a, b):
                await ws.send(op="subscribe", id=1, board="b", top=1)
                await ws.expect("top", 1)
            async with ws_client(srv) as c:
                assert await c.closed() == (1013, "too many connections")
        # Both slots are free again, as soon as the server has seen the two closes (the close
        # handshake completes before the app has processed it, hence the retry).
        deadline = time.monotonic() + 5
        while True:
            async with ws_client(srv) as d:
                with contextlib.suppress(ConnectionClosed):
                    await d.send(op="subscribe", id=1, board="b", top=1)
                    await d.expect("top", 1)
                    return
                assert d.conn.close_code == 1013 and time.monotonic() < deadline
            await asyncio.sleep(0.05)

    run(main)


@pytest.mark.parametrize("how", ["deleted", "revoked", "rotated", "expired"])
def test_session_bound_connection_closes_when_the_session_dies(
    server: Any, name: str, how: str
) -> None:
    async def main() -> None:
        async with http_client(server) as http:
            body: dict[str, Any] = {"user": name}
            if how == "expired":
                body["ttl"] = 1
            r = await http.post("/v1/sessions", json=body)
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            async with ws_client(server, f"?session={sid}") as bound, ws_client(server) as free:
                for ws in (bound, free):
                    await ws.send(op="subscribe", id="s", board=name, top=1)
                    await ws.expect("top", "s")
                if how == "deleted":
                    r = await http.delete(f"/v1/sessions/{sid}")
                elif how == "revoked":
                    r = await http.delete(f"/v1/users/{name}/sessions")
                elif how == "rotated":
                    r = await http.post(f"/v1/sessions/{sid}/rotate")
                assert r.status_code < 300, r.text
                # "expired": the purge finds it within about a second of its deadline.
                assert await bound.closed(timeout=5) == (1008, f"session {how}")
                await http.post(f"/v1/boards/{name}/scores", json={"member": "m", "score": 1})
                await free.expect("top", "s")
            async with ws_client(server, f"?session={sid}") as again:
                assert await again.closed() == (1008, "session not found")
            assert sid not in server.logs()

    run(main)
