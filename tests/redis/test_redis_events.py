"""The change feed: every mutation SPUBLISHes on the board's shard channel inside the write
function, so a subscriber sees events in seq order, one per change, with the resulting rank."""

import asyncio
import random
from typing import Any

import pytest
from redis.asyncio import RedisCluster

from service.backend.redis.boards import RedisBoards
from store.errors import MemberNotFound
from tests.redis.redis_support import board_name

pytestmark = pytest.mark.redis


async def next_event(pubsub: Any) -> list[str]:
    for _ in range(200):
        msg = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.05)
        if msg is not None and msg["type"] in ("smessage", b"smessage"):
            return str(msg["data"].decode()).split(" ", 4)
    raise AssertionError("no event within 10 s")


def test_ssubscribe_sees_every_change_in_seq_order(run) -> None:
    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        name = board_name("feed")
        await rb.configure(name, {})
        pubsub = client.pubsub()
        await pubsub.ssubscribe(rb.keys(name).ev)
        # subscribe first, then act: no window in which an event could be missed
        rnd = random.Random(5)
        expected: list[list[str]] = []
        for i in range(200):
            member = f"p{rnd.randrange(20)}"
            if i % 17 == 16:
                try:
                    seq, prev = await rb.remove(name, member)
                except MemberNotFound:
                    continue
                expected.append(["del", str(seq), str(prev), member])
                continue
            r = await rb.write(name, member, rnd.randrange(50))
            if r["changed"]:
                prev = r["previous"]["rank"] if r["previous"] else 0
                seq = (await rb.page(name, 0, 0)).seq
                expected.append(["set", str(seq), str(r["rank"]), str(prev), member])
        unchanged = await rb.write(name, "p0", -1)  # best: a lower score changes nothing
        assert not unchanged["changed"]
        got = [await next_event(pubsub) for _ in expected]
        assert got == expected
        seqs = [int(g[1]) for g in got]
        assert seqs == list(range(1, len(seqs) + 1))  # contiguous: a gap means a lost event
        await rb.drop(name)
        assert await next_event(pubsub) == ["drop"]
        assert await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.2) is None
        await pubsub.aclose()

    run(body)


def test_publish_off_sends_nothing(run) -> None:
    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client, publish=False)
        name = board_name("quiet")
        await client.initialize()  # ClusterPubSub needs the slot map
        pubsub = client.pubsub()
        await pubsub.ssubscribe(rb.keys(name).ev)
        await rb.write(name, "a", 1)
        await rb.remove(name, "a")
        await asyncio.sleep(0.2)
        msg = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.3)
        assert msg is None
        await rb.drop(name)
        await pubsub.aclose()

    run(body)
