"""Faults of the redis backend, reproduced for real: rankd processes over a cluster of their own
(this module kills its nodes, so it does not share the session's cluster).

* kill -9 of the primary that owns a busy board while writes flow through two rankd processes:
  writes resume on the promoted replica, acknowledged writes survive as README "Scaling out"
  states (replication is asynchronous: only writes acknowledged in the last moments before the
  kill are at risk; every write acknowledged a second before it or after the failover must be
  there), and WebSocket subscribers (a top N, an around-me) see a new epoch and the full state.
* a rankd process killed mid-write: every batch is all or nothing, the board's keys consistent.
* the whole cluster unreachable: /readyz 503 and writes 503, then recovery when it returns.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis, RedisCluster
from websockets.asyncio.client import connect

from service.backend.redis import keys
from service.backend.redis.boards import check_board
from tests.redis.redis_support import SCRIPT, free_base
from tests.servers import RankdServer

pytestmark = pytest.mark.redis

PREFIX = "ft"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("fault-cluster")
    for _ in range(3):
        proc = subprocess.run(
            [
                SCRIPT,
                "start",
                "--dir",
                root,
                "--base-port",
                str(free_base()),
                "--watch",
                str(os.getpid()),
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
        if proc.returncode == 0:
            break
    else:
        pytest.fail(f"scripts/redis-cluster start failed:\n{proc.stderr}")
    try:
        yield root, proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([SCRIPT, "stop", "--dir", root], timeout=60, check=False)


def node_dirs(root: Path) -> dict[int, Path]:
    return {int(d.name.split("-")[1]): d for d in root.glob("node-*")}


def kill9(node_dir: Path) -> None:
    pid = int((node_dir / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def restart(node_dir: Path) -> None:
    (node_dir / "redis.pid").unlink(missing_ok=True)
    subprocess.run(["redis-server", str(node_dir / "redis.conf")], check=True, timeout=10)


async def wait_replica_online(port: int, timeout: float = 30) -> None:
    """Until the primary on ``port`` has a replica in sync. A replica that has not synced since
    its start (the cluster was just created or restarted) refuses to fail over ("Disconnected
    from master for longer than allowed", cluster-replica-validity-factor): killing the primary
    before then tests nothing but that refusal."""
    deadline = time.monotonic() + timeout
    while True:
        node = Redis(host="127.0.0.1", port=port)
        try:
            info = await node.execute_command("INFO", "replication")
        finally:
            await node.aclose()
        # redis-py parses INFO: {"slave0": {"state": "online", ...}, ...}
        if any(isinstance(v, dict) and v.get("state") == "online" for v in info.values()):
            return
        assert time.monotonic() < deadline, f"no replica of {port} in sync: {info}"
        await asyncio.sleep(0.1)


async def wait_cluster_ok(url: str, timeout: float = 30) -> None:
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while True:
        try:
            node = Redis(host="127.0.0.1", port=port)
            try:
                info = await node.execute_command("CLUSTER", "INFO")
            finally:
                await node.aclose()
            if b"cluster_state:ok" in info:
                return
        except Exception:
            pass
        assert time.monotonic() < deadline, "cluster not ok again"
        await asyncio.sleep(0.1)


def start_rankd(tmp: Path, url: str, n: int) -> list[RankdServer]:
    out = []
    for i in range(n):
        workdir = tmp / f"rankd{i}"
        workdir.mkdir(exist_ok=True)
        srv = RankdServer(workdir, {"backend": "redis", "redis_url": url, "redis_prefix": PREFIX})
        out.append(srv.start())
    return out


async def primary_of(url: str, board: str) -> int:
    client = RedisCluster.from_url(url)
    try:
        await client.initialize()
        node = client.get_node_from_key(keys.board_keys(PREFIX, board).cfg)
        assert node is not None
        return int(node.port)
    finally:
        await client.aclose()


def test_cluster_unreachable_then_back(cluster: tuple[Path, str], tmp_path: Path) -> None:
    root, url = cluster
    (srv,) = start_rankd(tmp_path, url, 1)
    try:
        with srv.client(timeout=15) as c:
            assert (
                c.post("/v1/boards/down/scores", json={"member": "a", "score": 1}).status_code
                == 200
            )
            dirs = node_dirs(root)
            for d in dirs.values():
                kill9(d)
            deadline = time.monotonic() + 10
            while c.get("/readyz").status_code != 503:
                assert time.monotonic() < deadline, "/readyz stayed 200 with the cluster gone"
                time.sleep(0.1)
            r = c.post("/v1/boards/down/scores", json={"member": "b", "score": 2})
            assert r.status_code == 503, r.text
            assert c.get("/v1/boards/down/top").status_code == 503
            detail = c.get("/readyz").json()["detail"]
            assert "redis cluster is unreachable" in detail and "127.0.0.1" not in detail
            for d in dirs.values():
                restart(d)
            asyncio.run(wait_cluster_ok(url))
            deadline = time.monotonic() + 30
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, f"not ready again:\n{srv.logs()[-2000:]}"
                time.sleep(0.2)

            # Every node answers again, but each one's view of the others settles in a moment
            # (a node can still say CLUSTERDOWN after another answered): 503s, then 200s.
            def settled(call: Callable[[], httpx.Response]) -> httpx.Response:
                while (r := call()).status_code != 200:
                    assert r.status_code == 503 and time.monotonic() < deadline, r.text
                    time.sleep(0.2)
                return r

            settled(lambda: c.post("/v1/boards/down/scores", json={"member": "b", "score": 2}))
            top = settled(lambda: c.get("/v1/boards/down/top")).json()["entries"]
            assert [e["member"] for e in top] == ["b", "a"]  # the AOF kept "a"
    finally:
        srv.stop()


def test_kill9_of_the_busy_boards_primary(cluster: tuple[Path, str], tmp_path: Path) -> None:
    root, url = cluster
    servers = start_rankd(tmp_path, url, 2)
    board = "busy"
    report: dict[str, Any] = {}

    async def main() -> None:
        victim = await primary_of(url, board)
        await wait_replica_online(victim)
        acked: dict[str, float] = {}  # member -> when its write was acknowledged
        failed = 0
        failures: list[float] = []
        stop = asyncio.Event()
        killed_at: list[float] = []

        async def writer(srv: RankdServer, tag: str) -> None:
            nonlocal failed
            async with httpx.AsyncClient(base_url=srv.url, trust_env=False, timeout=10) as c:
                i = 0
                while not stop.is_set():
                    member = f"{tag}{i}"
                    try:
                        r = await c.post(
                            f"/v1/boards/{board}/scores", json={"member": member, "score": i}
                        )
                    except httpx.TransportError:
                        failed += 1
                        failures.append(time.monotonic())
                        continue
                    if r.status_code == 200:
                        acked[member] = time.monotonic()
                        i += 1
                    else:
                        assert r.status_code == 503, r.text
                        failed += 1
                        failures.append(time.monotonic())
                        await asyncio.sleep(0.02)

        ws_url = servers[0].url.replace("http://", "ws://") + "/v1/ws"
        async with httpx.AsyncClient(base_url=servers[0].url, trust_env=False) as c:
            r = await c.post(f"/v1/boards/{board}/scores", json={"member": "pin", "score": -1})
            assert r.status_code == 200, r.text
        async with connect(ws_url, proxy=None) as ws, connect(ws_url, proxy=None) as near:
            await ws.send(
                orjson.dumps({"op": "subscribe", "id": 1, "board": board, "top": 5}).decode()
            )
            first = orjson.loads(await ws.recv())
            around = {"op": "subscribe", "id": 2, "board": board, "member": "pin", "radius": 2}
            await near.send(orjson.dumps(around).decode())
            first_near = orjson.loads(await near.recv())
            assert first_near["type"] == "around" and first_near["epoch"] == first["epoch"]
            tasks = [asyncio.create_task(writer(s, t)) for s, t in zip(servers, "ab", strict=True)]
            await asyncio.sleep(1.0)
            before = len(acked)
            assert before > 20, "writes are not flowing"
            # off the loop: a blocking kill would hold back replies sent before it, and their
            # late timestamps would count them as acknowledged after the kill
            await asyncio.to_thread(kill9, node_dirs(root)[victim])
            killed_at.append(time.monotonic())
            # writes must resume: 100 more acknowledged after the kill, within 30 s
            deadline = time.monotonic() + 30
            while sum(1 for t in acked.values() if t > killed_at[0]) < 100:
                assert time.monotonic() < deadline, f"writes did not resume ({failed} failed)"
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*tasks)
            first_fail = min(t for t in failures if t > killed_at[0])
            resumed = min(t for t in acked.values() if t > first_fail)
            report["outage_s"] = round(resumed - killed_at[0], 2)
            # the subscriber: a frame with a new epoch and the full (current) state
            deadline = time.monotonic() + 15
            while True:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 15))
                if frame["epoch"] != first["epoch"]:
                    break
                assert time.monotonic() < deadline, "no frame with a new epoch"
            async with httpx.AsyncClient(base_url=servers[1].url, trust_env=False) as c:
                # the other process may still be marked not ready until its next health check
                deadline = time.monotonic() + 15
                while (await c.get("/readyz")).status_code != 200:
                    assert time.monotonic() < deadline, "the peer did not become ready again"
                    await asyncio.sleep(0.1)
                r = await c.get(f"/v1/boards/{board}/top", params={"limit": 5})
                # frames are state: the latest one equals the board as read now
                latest = frame
                while True:
                    try:
                        latest = orjson.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except TimeoutError:
                        break
                assert r.status_code == 200, r.text
                assert latest["entries"] == r.json()["entries"]
                assert latest["total"] == r.json()["total"]
                # the around-me subscriber too: a new epoch, then the board's neighbourhood
                while True:
                    frame = orjson.loads(await asyncio.wait_for(near.recv(), 15))
                    if frame["epoch"] != first_near["epoch"]:
                        break
                    assert time.monotonic() < deadline, "no around frame with a new epoch"
                latest = frame
                while True:
                    try:
                        latest = orjson.loads(await asyncio.wait_for(near.recv(), 0.5))
                    except TimeoutError:
                        break
                r = await c.get(f"/v1/boards/{board}/members/pin/around", params={"radius": 2})
                assert r.status_code == 200, r.text
                assert latest["type"] == "around" and latest["member"] == "pin"
                assert latest["entries"] == r.json()["entries"] and len(latest["entries"]) == 3

        # durability: every write acknowledged 1 s before the kill, or after it, is there
        client = RedisCluster.from_url(url)
        try:
            stored = await client.hkeys(keys.board_keys(PREFIX, board).m)
            present = {m.decode() if isinstance(m, bytes) else m for m in stored}
            await check_board(client, PREFIX, board)
        finally:
            await client.aclose()
        must = {m for m, t in acked.items() if t < killed_at[0] - 1.0 or t > killed_at[0]}
        at_risk = {m for m, t in acked.items() if killed_at[0] - 1.0 <= t <= killed_at[0]}
        assert must <= present, sorted(must - present)[:10]
        report["acked"] = len(acked)
        report["lost_in_window"] = len(at_risk - present)
        report["failed_requests"] = failed

    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        for srv in servers:
            srv.kill()
    print(f"\nfailover: {report}")
    # the killed node comes back as a replica of the promoted one
    for d in node_dirs(root).values():
        if not (d / "redis.pid").exists() or not _alive(d):
            restart(d)
    asyncio.run(wait_cluster_ok(url))


def _alive(node_dir: Path) -> bool:
    try:
        os.kill(int((node_dir / "redis.pid").read_text()), 0)
    except (ProcessLookupError, ValueError, FileNotFoundError):
        return False
    return True


def test_rankd_killed_mid_write_leaves_no_half_written_board(
    cluster: tuple[Path, str], tmp_path: Path
) -> None:
    _, url = cluster
    board = "halfway"
    (srv,) = start_rankd(tmp_path, url, 1)
    batches = 40
    size = 500

    async def main() -> None:
        async with httpx.AsyncClient(base_url=srv.url, trust_env=False, timeout=10) as c:
            # created first: 40 batches creating it at once would all queue behind the
            # --max-boards admission and finish together, before the kill could cut one
            assert (await c.put(f"/v1/boards/{board}")).status_code in (200, 201)

            async def send(k: int) -> int:
                items = [{"member": f"k{k}-{i}", "score": i} for i in range(size)]
                try:
                    r = await c.post(f"/v1/boards/{board}/scores:batch", json=items)
                except httpx.TransportError:
                    return 0
                return r.status_code

            tasks = [asyncio.create_task(send(k)) for k in range(batches)]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            assert {t.result() for t in done} == {200}
            assert srv.proc is not None
            srv.proc.kill()  # SIGKILL while the other batches are in flight
            await asyncio.gather(*tasks)

        client = RedisCluster.from_url(url)
        try:
            stored = [
                m.decode() if isinstance(m, bytes) else m
                for m in await client.hkeys(keys.board_keys(PREFIX, board).m)
            ]
            await check_board(client, PREFIX, board)
        finally:
            await client.aclose()
        per_batch: dict[str, int] = {}
        for m in stored:
            k = m.split("-")[0]
            per_batch[k] = per_batch.get(k, 0) + 1
        assert all(n == size for n in per_batch.values()), per_batch
        assert 0 < len(per_batch) < batches, len(per_batch)  # killed part-way, for real

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        srv.kill()
