"""The same library and helpers on a single Redis server (no cluster): a dev setup and the
shape of a managed non-cluster Redis. The server is this test's own child, stopped at the end."""

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from service.backend.redis.boards import RedisBoards, write_id
from service.backend.redis.durability import WaitPolicy
from service.backend.redis.functions import library_loaded, load_library
from store.errors import WriteUnconfirmed
from tests.redis.redis_support import board_name

pytestmark = pytest.mark.redis


@pytest.fixture
def single_node(tmp_path: Path) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--dir",
            str(tmp_path),
            "--appendonly",
            "no",
            "--maxmemory",
            "64mb",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "no redis-server"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_library_on_a_single_node(single_node: int) -> None:
    async def body() -> None:
        client = Redis(host="127.0.0.1", port=single_node)
        try:
            assert not await library_loaded(client)
            assert await load_library(client) == 1
            assert await library_loaded(client)
            rb = RedisBoards(client)
            name = board_name("single")
            await rb.write_many(name, [("a", 3, {"x": 1}), ("b", 5, None), ("c", 3, None)])
            assert [(e["member"], e["rank"]) for e in await rb.top(name)] == [
                ("b", 1),
                ("a", 2),
                ("c", 3),
            ]
            assert (await rb.entry(name, "a"))["metadata"] == {"x": 1}
            epoch = await rb.epoch(name)
            assert epoch == await rb.epoch(name) and len(epoch.split(".")[1]) == 40
            assert await rb.list_boards() == [name]
        finally:
            await client.aclose()

    asyncio.run(body())


def test_waits_and_idempotency_on_a_single_node(single_node: int) -> None:
    """No replica: WAIT 1 cannot be met, so the write answers WriteUnconfirmed -- and it was
    applied; WAIT 0-free policies and a repeated idempotency id work as on the cluster. The
    library is loaded by the first call ("Function not found" is followed inside)."""

    async def body() -> None:
        client = Redis(host="127.0.0.1", port=single_node)
        try:
            rb = RedisBoards(client)
            name = board_name("single")
            await rb.configure(name, {"update": "sum"})
            rb.wait = WaitPolicy(replicas=1, timeout_ms=50)
            idem = write_id(["a"], None)
            with pytest.raises(WriteUnconfirmed, match="0 of 1 replica"):
                await rb.write(name, "a", 4, None, idem)
            assert (await rb.entry(name, "a"))["score"] == 4  # applied: "maybe written"
            with pytest.raises(WriteUnconfirmed):
                await rb.write(name, "a", 4, None, idem)  # the repeat replays, then waits
            assert (await rb.entry(name, "a"))["score"] == 4
            rb.wait = WaitPolicy()
            assert (await rb.write(name, "a", 1))["score"] == 5
        finally:
            await client.aclose()

    asyncio.run(body())
