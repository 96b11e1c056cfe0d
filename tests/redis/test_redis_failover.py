"""Epoch = board token + the shard's replication id: it changes exactly when the board's shard
fails over (history may fork there), and nothing else about the board changes with it.

A graceful CLUSTER FAILOVER on the replica keeps every acknowledged write (the replica catches up
first); the kill -9 fault test comes with RedisBackend. The cluster is healthy again on return,
so later tests sharing it see only a moved primary, which their clients follow.
"""

import asyncio
import time

import pytest
from redis.asyncio import Redis, RedisCluster

from service.backend.redis.boards import RedisBoards
from tests.redis.redis_support import board_name

pytestmark = pytest.mark.redis


async def wait_primary(host: str, port: int) -> None:
    node = Redis(host=host, port=port)
    try:
        deadline = time.monotonic() + 30
        while True:
            role = await node.execute_command("ROLE")
            info = await node.execute_command("CLUSTER", "INFO")
            if role[0] == b"master" and b"cluster_state:ok" in info:
                return
            assert time.monotonic() < deadline, "failover did not complete in 30 s"
            await asyncio.sleep(0.1)
    finally:
        await node.aclose()


def test_epoch_changes_on_failover_and_data_survives(run) -> None:
    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        name = board_name("epoch")
        await rb.write_many(name, [(f"p{i}", i, None) for i in range(50)])
        before_top = await rb.page(name, 0, 50)
        epoch = await rb.epoch(name)
        assert epoch == await rb.epoch(name)  # stable while nothing happens
        primary = client.get_node_from_key(rb.keys(name).cfg)
        assert primary is not None
        p = Redis(host=primary.host, port=int(primary.port))
        try:
            info = await p.info("replication")
        finally:
            await p.aclose()
        assert info["connected_slaves"] == 1, info  # every shard has a replica
        host, port = info["slave0"]["ip"], int(info["slave0"]["port"])
        r = Redis(host=host, port=port)
        try:
            await r.execute_command("CLUSTER", "FAILOVER")
        finally:
            await r.aclose()
        await wait_primary(host, port)
        # a fresh client: the old one may still point at the demoted node until a MOVED
        fresh = RedisCluster(host=host, port=port)
        try:
            rb2 = RedisBoards(fresh)
            new_epoch = await rb2.epoch(name)
            assert new_epoch != epoch
            assert new_epoch.split(".")[0] == epoch.split(".")[0]  # same board token
            assert await rb2.page(name, 0, 50) == before_top  # graceful: nothing lost
            r2 = await rb2.write(name, "p0", 100)
            assert r2["rank"] == 1 and r2["changed"]
            await rb2.drop(name)
        finally:
            await fresh.aclose()

    run(body)
