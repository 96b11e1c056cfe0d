"""Scale-out benchmark: one embedded rankd vs 1, 2, 4 rankd processes over a local Redis Cluster
vs the Starlette + redis-py stack, side by side in one run; then bytes per member in Redis.

    stack        what runs
    embedded     one rankd, --fsync no (in-process store)
    cluster-N    N rankd --backend redis processes on one local cluster (3 primaries +
                 3 replicas, scripts/redis-cluster, AOF everysec), each driven by its own
                 wrk with 1/N of the connections; req/s summed
    cluster-1+wR one rankd with --redis-wait-replicas R (--wait, default 1; 0 = no such
                 row): every write waits for R replicas on its own connection; the column
                 "vs cluster-1" is the price of that wait
    redis        redis-server + uvicorn + loadtest/redis_app.py (plain ZADD GT)

Workloads (loadtest/_wrk.py): post_score (random member, random score) and get_top (top 10),
on a board preloaded with ``--members`` entries. Each cell is the median of ``--rounds``
rounds in rotating order. CPU us/request = CPU seconds of *every* process of the stack (rankd
processes, redis nodes, uvicorn) during the round / requests; wrk's own CPU is not counted.
On a 2-core box shared with others the cluster rows are CPU-bound early: the curve shows where
N processes stop helping, not what dedicated hosts would do.

Wait latency: one client, one write in flight, ``--latency-writes`` writes through
RedisBoards (best board) with no wait and with WAIT 1, alternating rounds; the median per-write
latency of each and their ratio: the price of --redis-wait-replicas 1 without the noise of
a loaded box's throughput.

Memory: ``--memory-members`` entries written through rankd's batch endpoint onto one board;
``used_memory`` delta of the primary that owns it / members (target <= 220 B).

    python -m loadtest.bench_cluster                  # a few minutes
    python -m loadtest.bench_cluster --quick          # smoke sizes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from loadtest._procs import LOOPBACK, Child, Children, cpu_seconds, free_port, wait_http
from loadtest._stacks import REPO, fill_rankd, fill_redis, start_rankd, start_redis_stack
from loadtest._wrk import BOARD, member_name, run_wrk, write_script

SCRIPT = REPO / "scripts" / "redis-cluster"
WORKLOADS = ("post_score", "get_top")


@dataclass
class Stack:
    name: str
    ports: list[int]
    pids: list[int]


@dataclass
class Cell:
    rps: float
    p50: float
    p99: float
    cpu_us: float
    errors: int


def cluster_pids(root: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted(root.glob("node-*/redis.pid"))]


def start_cluster_rankd(
    kids: Children, url: str, n: int, prefix: str, extra: tuple[str, ...] = ()
) -> list[Child]:
    out = []
    for i in range(n):
        port = free_port()
        argv = [sys.executable, "-m", "service", f"--host={LOOPBACK}", f"--port={port}"]
        argv += ["--backend=redis", f"--redis-url={url}", f"--redis-prefix={prefix}", *extra]
        child = kids.start(f"rankd-cluster-{prefix}-{i}", argv, cwd=REPO)
        wait_http(child, port, "/readyz", timeout=60)
        child.port = port  # type: ignore[attr-defined]
        out.append(child)
    return out


def drive(stack: Stack, workload: str, script: Path, duration: float, conns: int) -> Cell:
    cpu0 = sum(cpu_seconds(p) for p in stack.pids)
    per = max(1, conns // len(stack.ports))
    with ThreadPoolExecutor(len(stack.ports)) as pool:
        runs = list(
            pool.map(
                lambda port: run_wrk(script, port, duration=duration, connections=per, threads=1),
                stack.ports,
            )
        )
    cpu = sum(cpu_seconds(p) for p in stack.pids) - cpu0
    requests = sum(r.requests for r in runs)
    return Cell(
        rps=sum(r.rps for r in runs),
        p50=statistics.median(r.p50_ms for r in runs),
        p99=max(r.p99_ms for r in runs),
        cpu_us=cpu / requests * 1e6 if requests else 0.0,
        errors=sum(r.errors for r in runs),
    )


async def _memory(url: str, prefix: str, board: str, names: list[str]) -> dict[str, float]:
    """Write ``names`` (random int scores) onto one board with the write function, 1000 per
    call; bytes per member by the primary's used_memory delta and by MEMORY USAGE of the
    board's keys (exact: SAMPLES 0)."""
    from redis.asyncio import Redis as AsyncRedis
    from redis.asyncio import RedisCluster as AsyncCluster

    from service.backend.redis.boards import RedisBoards

    client = AsyncCluster.from_url(url)
    try:
        await client.initialize()
        rb = RedisBoards(client, prefix)
        k = rb.keys(board)
        await rb.write(board, "warmup", 1)  # follows any MOVED: the slot map is current after
        await client.nodes_manager.initialize()
        node = client.get_node_from_key(k.cfg)
        assert node is not None
        primary = AsyncRedis(host=node.host, port=int(node.port))
        await primary.execute_command("CONFIG", "SET", "auto-aof-rewrite-percentage", "0")
        before = (await primary.info("memory"))["used_memory"]
        rng = random.Random(7)
        began = time.perf_counter()
        for at in range(0, len(names), 1000):
            chunk = names[at : at + 1000]
            await rb.write_many(board, [(m, rng.randrange(1_000_000_000), None) for m in chunk])
        seconds = time.perf_counter() - began
        await asyncio.sleep(2)  # let the AOF and replication buffers drain
        after = (await primary.info("memory"))["used_memory"]
        usage = 0
        for key in (k.z, k.m, k.d, k.cfg):
            usage += await primary.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0") or 0
        count = await client.zcard(k.z)
        await primary.aclose()
    finally:
        await client.aclose()
    n = count - 1
    return {
        "members": n,
        "used_memory_per_member": (after - before) / n,
        "memory_usage_per_member": usage / count,
        "seconds": seconds,
    }


async def _wait_latency(url: str, n: int, rounds: int) -> dict[str, list[float]]:
    from redis.asyncio import RedisCluster as AsyncCluster

    from service.backend.redis import keys
    from service.backend.redis.boards import RedisBoards, write_id
    from service.backend.redis.durability import WaitPolicy

    client = AsyncCluster.from_url(url)
    out: dict[str, list[float]] = {"no wait": [], "WAIT 1": []}
    try:
        await client.initialize()
        rb = RedisBoards(client, "lat")
        await rb.write("latency", "warmup", 1)
        # a fresh cluster's replicas may still be syncing: until one acknowledges a write
        from store.errors import WriteUnconfirmed

        rb.wait = WaitPolicy(1, 1000)
        for _ in range(60):
            try:
                await rb.write("latency", "warmup", 1)
                break
            except WriteUnconfirmed:
                await asyncio.sleep(0.5)
        rng = random.Random(3)
        for _ in range(rounds):
            for label, policy in (("no wait", WaitPolicy()), ("WAIT 1", WaitPolicy(1, 1000))):
                rb.wait = policy
                times = []
                for _ in range(n):
                    member, score = f"p{rng.randrange(100_000)}", rng.randrange(10**9)
                    began = time.perf_counter()
                    await rb.write("latency", member, score)
                    times.append(time.perf_counter() - began)
                out[label].append(statistics.median(times) * 1e6)
        # the idempotency record of a sum write: with a rankd id vs without (idem ""), then
        # the bytes the records take (MEMORY USAGE of iz + ih, SAMPLES 0) per record
        await rb.configure("idem", {"update": "sum"})
        rb.wait = WaitPolicy()
        out["sum, no id"], out["sum, id recorded"] = [], []
        ids = 0
        for _ in range(rounds):
            for label, with_id in (("sum, no id", False), ("sum, id recorded", True)):
                times = []
                for _ in range(n):
                    idem = write_id([], None) if with_id else ""
                    ids += with_id
                    began = time.perf_counter()
                    await rb.write("idem", f"p{rng.randrange(1000)}", 1, None, idem)
                    times.append(time.perf_counter() - began)
                out[label].append(statistics.median(times) * 1e6)
        iz, ih = keys.idem_keys("lat", "idem")
        node = client.get_node_from_key(iz)
        usage = 0
        for key in (iz, ih):
            usage += await client.execute_command(
                "MEMORY", "USAGE", key, "SAMPLES", "0", target_nodes=node
            )
        out["bytes per record"] = [usage / ids]
    finally:
        await client.aclose()
    return out


def memory_per_member(url: str, prefix: str, n: int) -> list[tuple[str, dict[str, float]]]:
    """Two member-id shapes: the HTTP benchmark's (14 chars) and SCALEOUT.md's (8-12 chars)."""
    shapes = {
        "player:NNNNNNN (14 chars)": [member_name(i) for i in range(n)],
        "uNNNNNNN..  (8-12 chars)": [f"u{i:0{7 + i % 5}d}"[:12] for i in range(n)],
    }
    return [
        (label, asyncio.run(_memory(url, prefix, f"memory{i}", names)))
        for i, (label, names) in enumerate(shapes.items())
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--memory-members", type=int, default=1_000_000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--scale", default="1,2,4")
    ap.add_argument("--wait", type=int, default=1, help="replicas for the cluster-1+wR row")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="skip the HTTP rounds")
    ap.add_argument("--latency-writes", type=int, default=2000)
    ap.add_argument("--latency-only", action="store_true", help="only the wait latency")
    args = ap.parse_args()
    if args.quick:
        args.members, args.memory_members, args.duration, args.rounds = 2000, 20_000, 2, 1
    scale = [int(x) for x in args.scale.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, Children(Path(tmp)) as kids:
        work = Path(tmp)
        root = work / "cluster"
        proc = subprocess.run(
            [SCRIPT, "start", "--dir", root, "--watch", str(os.getpid())],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        url = proc.stdout.strip().splitlines()[-1]
        try:
            lat = asyncio.run(_wait_latency(url, args.latency_writes, max(args.rounds, 3)))
            med = {k: statistics.median(v) for k, v in lat.items()}
            print(f"\nwrite latency, one in flight, {args.latency_writes} writes x rounds:")
            for label, values in lat.items():
                rounds = ", ".join(f"{v:.0f}" for v in values)
                unit = "B" if label.startswith("bytes") else "us"
                print(f"  {label:16}: median {med[label]:6.0f} {unit}  (rounds: {rounds})")
            print(f"  WAIT 1 / no wait: {med['WAIT 1'] / med['no wait']:.2f}x")
            print(f"  id recorded / no id: {med['sum, id recorded'] / med['sum, no id']:.2f}x")
            if args.latency_only:
                return
            if not args.memory_only:
                http_rounds(kids, work, url, root, scale, args)
            print(f"\nmemory, one board of the cluster, {args.memory_members} members:")
            for label, m in memory_per_member(url, "mem", args.memory_members):
                print(
                    f"  {label}: {m['used_memory_per_member']:.1f} B/member (used_memory delta "
                    f"of its primary), {m['memory_usage_per_member']:.1f} B/member (MEMORY USAGE "
                    f"of the board's keys); written in {m['seconds']:.1f} s"
                )
            print(f"load average: {os.getloadavg()}")
        finally:
            subprocess.run([SCRIPT, "stop", "--dir", root], timeout=60, check=False)


def http_rounds(
    kids: Children, work: Path, url: str, root: Path, scale: list[int], args: argparse.Namespace
) -> None:
    stacks: list[Stack] = []
    emb = start_rankd(kids, "embedded", "no")
    fill_rankd(emb.port, BOARD, args.members)
    stacks.append(Stack("embedded", [emb.port], [emb.server.pid]))
    redis_pids = cluster_pids(root)
    for n in scale:
        procs = start_cluster_rankd(kids, url, n, f"b{n}")
        fill_rankd(procs[0].port, BOARD, args.members)  # type: ignore[attr-defined]
        stacks.append(
            Stack(
                f"cluster-{n}",
                [c.port for c in procs],  # type: ignore[attr-defined]
                [c.pid for c in procs] + redis_pids,
            )
        )
    if args.wait:
        procs = start_cluster_rankd(kids, url, 1, "w", ("--redis-wait-replicas", str(args.wait)))
        fill_rankd(procs[0].port, BOARD, args.members)  # type: ignore[attr-defined]
        stacks.append(
            Stack(
                f"cluster-1+w{args.wait}",
                [c.port for c in procs],  # type: ignore[attr-defined]
                [c.pid for c in procs] + redis_pids,
            )
        )
    ref = start_redis_stack(kids, "no")
    assert ref.redis_port is not None
    fill_redis(ref.redis_port, BOARD, args.members)
    stacks.append(Stack("redis-stack", [ref.port], list(ref.pids)))

    results: dict[tuple[str, str], list[Cell]] = {}
    for workload in WORKLOADS:
        script = write_script(work, workload, args.members)
        for r in range(args.rounds):
            order = stacks[r % len(stacks) :] + stacks[: r % len(stacks)]
            for stack in order:
                cell = drive(stack, workload, script, args.duration, args.connections)
                results.setdefault((stack.name, workload), []).append(cell)
                print(
                    f"{workload:10} {stack.name:12} round {r}: {cell.rps:9.0f} req/s "
                    f"{cell.cpu_us:7.0f} us CPU/req  errors {cell.errors}",
                    flush=True,
                )

    print(
        f"\n{'stack':14} | {'workload':10} | {'req/s':>8} | {'p50 ms':>7} | "
        f"{'p99 ms':>7} | {'CPU us/req':>10} | vs embedded | vs cluster-1 | errors"
    )
    for workload in WORKLOADS:
        medians = {}
        for stack in stacks:
            cells = sorted(results[(stack.name, workload)], key=lambda c: c.rps)
            medians[stack.name] = cells[len(cells) // 2]
        base = medians[stacks[0].name].rps
        one = medians.get("cluster-1")
        for stack in stacks:
            c = medians[stack.name]
            vs_one = f"{c.rps / one.rps:11.2f}x" if one and stack.name.startswith("cluster") else ""
            print(
                f"{stack.name:14} | {workload:10} | {c.rps:8.0f} | {c.p50:7.2f} | "
                f"{c.p99:7.2f} | {c.cpu_us:10.0f} | {c.rps / base:10.2f}x | {vs_one:>12} | "
                f"{c.errors}"
            )


if __name__ == "__main__":
    main()
