"""The rankd_x* functions on the real cluster: what the contract suite cannot see from HTTP.

Storage stays bounded (closed periods beyond ``keep`` are trimmed, a drop leaves no key), the
dense structures agree with the sort keys after every write, and a process whose idea of a
board is stale (another process reconfigured it) is refused ("OPTS", "STALEOPTS") before
anything is written, then answers right after re-reading.
"""

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from service.backend.redis.boards import RedisBoards
from service.backend.redis.windows import RedisWindows
from store.clock import ManualClock
from store.errors import Conflict
from tests.redis.redis_support import board_name

pytestmark = pytest.mark.redis

T0 = datetime(2026, 11, 27, 21, 30, tzinfo=UTC).timestamp()
DAY = 86400


async def _keys(client: RedisCluster, pattern: str) -> list[bytes]:
    found: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        found.append(key)
    return found


async def _check_dense(client: Any, rw: RedisWindows, board: str, window: str, pid: str) -> None:
    t = rw.table(board, window, pid)
    keys = await client.zrange(t.z, 0, -1)
    counts = Counter(k[:10] for k in keys)
    assert await client.zrange(t.u, 0, -1) == sorted(counts)
    stored = {n: int(c) for n, c in (await client.hgetall(t.c)).items()}
    assert stored == dict(counts)


def test_periods_are_trimmed_to_keep_and_a_drop_leaves_nothing(run) -> None:
    async def body(client: RedisCluster) -> None:
        clock = ManualClock(T0)
        rb = RedisBoards(client, publish=False)
        rw = RedisWindows(rb, clock)
        name = board_name("trim")
        await rw.configure(name, {"windows": ["all", "day"], "keep": 1, "ranking": "dense"})
        tag = f"{rb.prefix}:{{{name}}}:"
        for day in range(5):
            for i in range(12):
                await rw.write_many(name, [(f"m{(i * 7 + day) % 10}", i % 4, None)], "0")
            stored = await _keys(client, tag + "z:day:*")
            assert 1 <= len(stored) <= 2, stored  # keep 1: the current day and the one before
            assert await client.zcard(tag + "r:day") == len(stored)
            pid = (await rw.periods(name, "day"))["periods"][0]["id"]
            await _check_dense(client, rw, name, "day", pid)
            await _check_dense(client, rw, name, "all", "all")
            clock.advance(DAY)
        periods = (await rw.periods(name, "day"))["periods"]
        assert [p["size"] for p in periods] == [0, 10]  # a new day began, nobody wrote yet
        await rw.configure(name, {"keep": 0})
        assert await _keys(client, tag + "z:day:*") == []  # the closed day is gone
        await rw.configure(name, {"ranking": "ordinal"})  # the distinct-score index goes
        for pattern in ("u", "c", "u:*", "c:*"):
            assert await _keys(client, tag + pattern) == [], pattern
        assert await rw.drop(name)
        assert await _keys(client, tag + "*") == []

    run(body)


def test_a_stale_process_is_refused_then_answers_right(run) -> None:
    async def body(client: RedisCluster) -> None:
        clock = ManualClock(T0)
        a_core, b_core = RedisBoards(client, publish=False), RedisBoards(client, publish=False)
        a, b = RedisWindows(a_core, clock), RedisWindows(b_core, clock)
        name = board_name("stale")
        await b_core.write(name, "x", 5)  # b knows it as a plain board
        await a.configure(name, {"ranking": "dense"})
        with pytest.raises(ResponseError, match="OPTS"):
            await b_core.write(name, "y", 7)  # the one-table path refuses: nothing written
        assert (await a.page(name, 0, 10, "all", None))["total"] == 1
        with pytest.raises(Conflict, match="windows"):  # order, ties, windows: only while empty
            await a.configure(name, {"windows": ["all", "week"]})
        await b.describe(name)
        await a.configure(name, {"ranking": "competition"})
        # b's cached opts are stale: its call is refused (STALEOPTS), re-read and retried
        await b.write_many(name, [("y", 5, None)], "0")
        got = await b.page(name, 0, 10, None, None)
        assert [(e["member"], e["rank"]) for e in got["entries"]] == [("x", 1), ("y", 1)]
        assert b.cached(name) is not None and b.cached(name).config.ranking == "competition"  # type: ignore[union-attr]

    run(body)
