"""A write through one rankd process is read, and pushed over WebSocket, through the other.

For the redis backend ``server`` and ``peer`` are two processes on one cluster; for the
embedded backend they are the same process (the test then checks the same promise within it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.contract.test_ws import http_client, run, ws_client


def test_write_through_one_is_read_and_pushed_through_the_other(
    server: Any, peer: Any, name: str
) -> None:
    async def main() -> None:
        async with (
            ws_client(server) as ws,
            ws_client(server) as ranks,
            http_client(peer) as writer,
            http_client(server) as reader,
        ):
            await ws.send(op="subscribe", id="t", board=name, top=3)
            first = await ws.expect("top", "t")
            assert (first["entries"], first["total"], first["seq"]) == ([], 0, 0)
            await ranks.send(op="subscribe", id="r", board=name, member="bob")
            assert (await ranks.expect("rank", "r"))["rank"] is None

            r = await writer.post(f"/v1/boards/{name}/scores", json={"member": "bob", "score": 7})
            assert r.status_code == 200, r.text
            pushed = await ws.expect("top", "t")
            assert pushed["entries"] == [{"rank": 1, "member": "bob", "score": 7}]
            assert (pushed["total"], pushed["seq"], pushed["epoch"]) == (1, 1, first["epoch"])
            rank = await ranks.expect("rank", "r")
            assert (rank["rank"], rank["score"], rank["seq"]) == (1, 7, 1)
            assert (await reader.get(f"/v1/boards/{name}/members/bob")).json()["score"] == 7

            # a WebSocket write on the peer reaches the subscriber here, in order
            async with ws_client(peer) as wpeer:
                for i, score in enumerate((9, 3, 11)):
                    await wpeer.send(op="score", id=i, board=name, member=f"p{i}", score=score)
                    assert (await wpeer.expect("ack", i))["score"] == score
            want = [
                {"rank": 1, "member": "p2", "score": 11},
                {"rank": 2, "member": "p0", "score": 9},
                {"rank": 3, "member": "bob", "score": 7},
            ]
            seen = None
            async with asyncio.timeout(5):
                while seen != want:
                    frame = await ws.expect("top", "t")
                    seen = frame["entries"]
            assert (frame["total"], frame["seq"]) == (4, 4)
            r = await reader.get(f"/v1/boards/{name}/top", params={"limit": 3})
            assert r.json()["entries"] == want

            # a drop through the peer empties the view here
            assert (await writer.delete(f"/v1/boards/{name}")).status_code == 204
            async with asyncio.timeout(5):
                while seen:
                    seen = (await ws.expect("top", "t"))["entries"]
            assert (await reader.get(f"/v1/boards/{name}")).status_code == 404

    run(main)
