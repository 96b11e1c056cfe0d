"""Durability knobs and idempotent retries of the redis backend, on a cluster of this module's
own (it stops and kills its nodes for real):

* ``--redis-wait-replicas 1``: an acknowledged write is on the replica (read there with
  READONLY at once); with the replica frozen (SIGSTOP) the write waits, and past
  ``--redis-wait-timeout-ms`` it answers 503 ``write-unconfirmed`` -- and it *was* written.
* ``--redis-wait-aof`` needs WAITAOF (Redis >= 7.2): refused at start-up where it is missing.
* kill -9 of the primary owning a sum board under writes through two rankd processes with
  ``--redis-wait-replicas 1``: no acknowledged write is lost; a write answered 503 applied at
  most once (never twice: rankd's own retry carries an idempotency id); and a client that
  repeats its 503'd writes with the same Idempotency-Key ends with the exact total -- on a plain
  board (rankd_write) and on one with windows ["all", "day"] (rankd_xwrite), in every window.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from service.backend.redis import keys
from service.backend.redis.boards import check_board
from tests.redis.redis_support import board_name
from tests.redis.test_backend_faults import (
    _alive,
    cluster,  # noqa: F401 (the module's own cluster fixture)
    kill9,
    node_dirs,
    restart,
    wait_cluster_ok,
    wait_replica_online,
)
from tests.servers import RankdServer

pytestmark = pytest.mark.redis

PREFIX = "du"


def start_rankd(tmp: Path, url: str, n: int, **flags: Any) -> list[RankdServer]:
    out = []
    for i in range(n):
        workdir = tmp / f"rankd{i}"
        workdir.mkdir(exist_ok=True)
        base = {"backend": "redis", "redis_url": url, "redis_prefix": PREFIX}
        out.append(RankdServer(workdir, {**base, **flags}).start())
    return out


async def shard_of(url: str, board: str) -> tuple[int, int]:
    """(primary port, replica port) of the shard that owns ``board``."""
    client = RedisCluster.from_url(url)
    try:
        await client.initialize()
        primary = client.get_node_from_key(keys.board_keys(PREFIX, board).cfg)
        assert primary is not None
        info = await client.execute_command("INFO", "replication", target_nodes=primary)
        replicas = [v["port"] for k, v in info.items() if k.startswith("slave")]
        assert len(replicas) == 1, info  # scripts/redis-cluster: one replica per primary
        return int(primary.port), int(replicas[0])
    finally:
        await client.aclose()


async def on_replica(port: int, board: str, member: str) -> bytes | str | None:
    node = Redis(host="127.0.0.1", port=port)
    try:
        await node.execute_command("READONLY")
        return await node.hget(keys.board_keys(PREFIX, board).m, member)
    finally:
        await node.aclose()


def pid_of(root: Path, port: int) -> int:
    return int((node_dirs(root)[port] / "redis.pid").read_text())


def test_wait_replicas_puts_the_write_on_the_replica(
    cluster: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    root, url = cluster
    (srv,) = start_rankd(tmp_path, url, 1, redis_wait_replicas=1, redis_wait_timeout_ms=3000)
    board = board_name("wait")

    async def main() -> None:
        async with httpx.AsyncClient(base_url=srv.url, trust_env=False, timeout=10) as c:
            primary, replica = await shard_of(url, board)
            await wait_replica_online(primary)
            r = await c.post(f"/v1/boards/{board}/scores", json={"member": "m0", "score": 0})
            assert r.status_code == 200, r.text
            # acknowledged => on the replica, read there the moment the answer arrives
            for i in range(1, 30):
                r = await c.post(f"/v1/boards/{board}/scores", json={"member": f"m{i}", "score": i})
                assert r.status_code == 200, r.text
                assert await on_replica(replica, board, f"m{i}") is not None, i
            # a frozen replica holds the answer back until it has the write
            pid = pid_of(root, replica)
            os.kill(pid, signal.SIGSTOP)
            try:
                pending = asyncio.create_task(
                    c.post(f"/v1/boards/{board}/scores", json={"member": "late", "score": 1})
                )
                await asyncio.sleep(0.8)
                assert not pending.done(), "answered before the replica had the write"
            finally:
                os.kill(pid, signal.SIGCONT)
            r = await pending
            assert r.status_code == 200, r.text
            assert await on_replica(replica, board, "late") is not None

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        srv.stop()


def test_wait_shortfall_is_503_write_unconfirmed_and_the_write_happened(
    cluster: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    root, url = cluster
    (srv,) = start_rankd(tmp_path, url, 1, redis_wait_replicas=1, redis_wait_timeout_ms=100)
    board = board_name("short")

    async def main() -> None:
        async with httpx.AsyncClient(base_url=srv.url, trust_env=False, timeout=10) as c:
            primary, replica = await shard_of(url, board)
            await wait_replica_online(primary)
            assert (await c.put(f"/v1/boards/{board}", json={"update": "sum"})).status_code == 201
            pid = pid_of(root, replica)
            os.kill(pid, signal.SIGSTOP)
            try:
                began = time.monotonic()
                r = await c.post(f"/v1/boards/{board}/scores", json={"member": "m", "score": 7})
                took = time.monotonic() - began
            finally:
                os.kill(pid, signal.SIGCONT)
            assert r.status_code == 503, r.text
            problem = r.json()
            assert problem["type"] == "urn:rankd:problem:write-unconfirmed"
            assert "0 of 1 replica(s) acknowledged" in problem["detail"]
            assert "applied on the shard's primary" in problem["detail"]
            assert 0.09 < took < 2.0, took
            # "maybe written": here it was (the primary is alive), exactly once -- no retry
            r = await c.get(f"/v1/boards/{board}/members/m")
            assert r.status_code == 200 and r.json()["score"] == 7
            metrics = (await c.get("/metrics")).text
            assert 'rankd_backend_errors_total{error="WriteUnconfirmed"} 1.0' in metrics

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        srv.stop()


def test_wait_aof_needs_waitaof(cluster: tuple[Path, str], tmp_path: Path) -> None:  # noqa: F811
    _, url = cluster

    async def has_waitaof() -> bool:
        node = Redis.from_url(url)
        try:
            await node.execute_command("WAITAOF", 0, 0, 1)
        except ResponseError as exc:
            assert "unknown command" in str(exc).lower(), exc
            return False
        finally:
            await node.aclose()
        return True

    srv = RankdServer(
        tmp_path,
        {"backend": "redis", "redis_url": url, "redis_prefix": PREFIX, "redis_wait_aof": "1,0"},
    )
    if asyncio.run(has_waitaof()):  # Redis >= 7.2 / Valkey: writes wait for the local fsync
        srv.start()
        try:
            with srv.client() as c:
                r = c.post(
                    f"/v1/boards/{board_name('aof')}/scores", json={"member": "a", "score": 1}
                )
                assert r.status_code == 200, r.text
        finally:
            srv.stop()
        return
    # Debian 12's Redis 7.0: the setting cannot be honoured, so rankd refuses to run with it
    srv.start(wait_ready=False)
    assert srv.proc is not None
    status = srv.proc.wait(timeout=30)
    assert status != 0
    assert "--redis-wait-aof needs WAITAOF (Redis >= 7.2" in srv.logs()


@pytest.mark.parametrize(
    "options",
    [{"update": "sum"}, {"update": "sum", "windows": ["all", "day"], "keep": 1}],
    ids=["plain", "windowed"],
)
def test_kill9_with_wait_replicas_loses_no_acknowledged_write_and_keys_make_it_exact(
    cluster: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
    options: dict[str, Any],
) -> None:
    """The plain board's writes go through rankd_write, the windowed one's through
    rankd_xwrite (every write updates both windows): the same promises on both."""
    root, url = cluster
    servers = start_rankd(tmp_path, url, 2, redis_wait_replicas=1, redis_wait_timeout_ms=500)
    board = board_name("sumkill")
    windows: list[str] = options.get("windows", ["all"])
    rng = random.Random(15)
    report: dict[str, Any] = {}

    async def main() -> None:
        victim, _ = await shard_of(url, board)
        await wait_replica_online(victim)  # a fresh cluster's replica may still be syncing
        async with httpx.AsyncClient(base_url=servers[0].url, trust_env=False) as c:
            assert (await c.put(f"/v1/boards/{board}", json=options)).status_code == 201
        stop = asyncio.Event()
        # plain writes, one member each (delta i + 1): acked, answered 503, or cut
        acked: dict[str, int] = {}
        unsure: dict[str, int] = {}
        # keyed writes: one member per writer, each increment repeated with its key until 200
        intended: dict[str, int] = {}

        async def plain(srv: RankdServer, tag: str) -> None:
            async with httpx.AsyncClient(base_url=srv.url, trust_env=False, timeout=10) as c:
                i = 0
                while not stop.is_set():
                    member, delta = f"{tag}{i}", i + 1
                    i += 1
                    try:
                        r = await c.post(
                            f"/v1/boards/{board}/scores", json={"member": member, "score": delta}
                        )
                    except httpx.TransportError:
                        unsure[member] = delta
                        continue
                    if r.status_code == 200:
                        acked[member] = delta
                    else:
                        assert r.status_code == 503, r.text
                        unsure[member] = delta
                        await asyncio.sleep(0.02)

        async def keyed(srv: RankdServer, member: str) -> None:
            intended[member] = 0
            async with httpx.AsyncClient(base_url=srv.url, trust_env=False, timeout=10) as c:
                n = 0
                while not stop.is_set():
                    delta, key = rng.randrange(1, 1000), f"{member}-{n}"
                    n += 1
                    deadline = time.monotonic() + 60
                    while True:  # the client's own retry, same key, until acknowledged
                        try:
                            r = await c.post(
                                f"/v1/boards/{board}/scores",
                                json={"member": member, "score": delta},
                                headers={"Idempotency-Key": key},
                            )
                            if r.status_code == 200:
                                break
                            assert r.status_code == 503, r.text
                        except httpx.TransportError:
                            pass
                        assert time.monotonic() < deadline, "a keyed write never got through"
                        await asyncio.sleep(0.05)
                    intended[member] += delta

        tasks = [
            asyncio.create_task(plain(servers[0], "a")),
            asyncio.create_task(plain(servers[1], "b")),
            asyncio.create_task(keyed(servers[0], "ka")),
            asyncio.create_task(keyed(servers[1], "kb")),
        ]
        deadline = time.monotonic() + 20  # a loaded box may need longer than a second
        while len(acked) <= 20 or not all(intended.values()):
            assert time.monotonic() < deadline, f"writes are not flowing: {len(acked)} acked"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(kill9, node_dirs(root)[victim])
        killed_at = time.monotonic()
        before = len(acked)
        # the promoted replica has no replica of its own until the dead node returns: every
        # write answers 503 write-unconfirmed meanwhile (WAIT 1 cannot be met)
        await asyncio.sleep(4.0)
        report["acked_while_alone"] = len(acked) - before
        await asyncio.to_thread(restart, node_dirs(root)[victim])
        deadline = time.monotonic() + 40
        while len(acked) < before + 100:
            assert time.monotonic() < deadline, f"writes did not resume ({len(unsure)} unsure)"
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*tasks)
        report["outage_s"] = round(time.monotonic() - killed_at, 1)

        if len(windows) == 1:  # check_board knows the one-table layout only
            client = RedisCluster.from_url(url)
            try:
                await check_board(client, PREFIX, board)
            finally:
                await client.aclose()
        tables: dict[str, dict[str, int]] = {}
        async with httpx.AsyncClient(base_url=servers[0].url, trust_env=False) as c:
            for window in windows:
                scores = tables[window] = {}
                # a run across midnight UTC splits the day window in two periods: add them up
                for period in ("current",) if window == "all" else ("current", "previous"):
                    offset = 0
                    while True:
                        q: dict[str, str | int] = {"offset": offset, "limit": 100}
                        q.update(window=window, period=period)
                        r = await c.get(f"/v1/boards/{board}/top", params=q)
                        if r.status_code == 404 and period == "previous":
                            break  # no previous day: the board was created today
                        assert r.status_code == 200, r.text
                        page = r.json()
                        for e in page["entries"]:
                            scores[e["member"]] = scores.get(e["member"], 0) + e["score"]
                        offset += 100
                        if offset >= page["total"]:
                            break
        # every window holds exactly the same totals
        for window, scores in tables.items():
            lost = {m for m in acked if scores.get(m) != acked[m]}
            assert not lost, (window, sorted(lost)[:10])  # every acknowledged write, once
            for m, delta in unsure.items():  # 503'd or cut: applied at most once, never twice
                assert scores.get(m) in (None, delta), (window, m, scores.get(m), delta)
            for m, total in intended.items():
                assert scores.get(m) == total, (window, m, scores.get(m), total)
        scores = tables["all"]
        report.update(
            acked=len(acked),
            unsure=len(unsure),
            unsure_applied=sum(1 for m in unsure if m in scores),
            keyed_total=intended,
        )

    try:
        asyncio.run(asyncio.wait_for(main(), 150))
    finally:
        for srv in servers:
            srv.kill()
        for d in node_dirs(root).values():
            if not _alive(d):
                restart(d)
        asyncio.run(wait_cluster_ok(url))
    print(f"\nfailover with wait-replicas=1, {options}: {report}")
