"""Scale-out benchmark: one embedded rankd vs 1, 2, 4 rankd processes over a local Redis Cluster
vs the Starlette + redis-py stack, side by side in one run; then bytes per member in Redis.

    stack        what runs
    embedded     one rankd, --fsync no (in-process store)
    cluster-N    N rankd --backend redis processes on one local cluster (3 primaries +
                 3 replicas, scripts/redis-cluster, AOF everysec), each driven by its own
                 wrk with 1/N of the connections; req/s summed
    redis        redis-server + uvicorn + loadtest/redis_app.py (plain ZADD GT)

Workloads (loadtest/_wrk.py): post_score (random member, random score) and get_top (top 10),
on a board preloaded with ``--members`` entries. Each cell is the median of ``--rounds``
rounds in rotating order. CPU us/request = CPU seconds of *every* process of the stack (rankd
processes, redis nodes, uvicorn) during the round / requests; wrk's own CPU is not counted.
On a 2-core box shared with others the cluster rows are CPU-bound early: the curve shows where
N processes stop helping, not what dedicated hosts would do.

Memory: ``--memory-members`` entries written through rankd's batch endpoint onto one board;
``used_memory`` delta of the primary that owns it / members (target <= 220 B).

    python -m loadtest.bench_cluster                  # a few minutes
    python -m loadtest.bench_cluster --quick          # smoke sizes
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import redis

from loadtest._procs import LOOPBACK, Child, Children, cpu_seconds, free_port, wait_http
from loadtest._stacks import REPO, fill_rankd, fill_redis, start_rankd, start_redis_stack
from loadtest._wrk import BOARD, run_wrk, write_script

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


def start_cluster_rankd(kids: Children, url: str, n: int, prefix: str) -> list[Child]:
    out = []
    for i in range(n):
        port = free_port()
        argv = [sys.executable, "-m", "service", f"--host={LOOPBACK}", f"--port={port}"]
        argv += ["--backend=redis", f"--redis-url={url}", f"--redis-prefix={prefix}"]
        child = kids.start(f"rankd-cluster-{n}-{i}", argv, cwd=REPO)
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


def memory_per_member(url: str, rankd_port: int, prefix: str, n: int) -> tuple[float, float]:
    """(bytes per member, load seconds) for n members on one board of the cluster."""
    board = "memory"
    client = redis.RedisCluster.from_url(url)
    try:
        node = client.get_node_from_key(f"{prefix}:{{{board}}}:cfg")
        assert node is not None
        primary = redis.Redis(host=node.host, port=int(node.port))
        fill_rankd(rankd_port, board, 1000)  # create the board and its keys first
        before = primary.info("memory")["used_memory"]
        began = time.perf_counter()
        fill_rankd(rankd_port, board, n)  # the same members again + the rest: n in all
        seconds = time.perf_counter() - began
        after = primary.info("memory")["used_memory"]
        count = client.zcard(f"{prefix}:{{{board}}}:z")
        primary.close()
    finally:
        client.close()
    return (after - before) / max(count - 1000, 1) if count > 1000 else 0.0, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--memory-members", type=int, default=1_000_000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--scale", default="1,2,4")
    ap.add_argument("--quick", action="store_true")
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
                f"\n{'stack':12} | {'workload':10} | {'req/s':>8} | {'p50 ms':>7} | "
                f"{'p99 ms':>7} | {'CPU us/req':>10} | vs embedded | errors"
            )
            for workload in WORKLOADS:
                base = None
                for stack in stacks:
                    cells = sorted(results[(stack.name, workload)], key=lambda c: c.rps)
                    c = cells[len(cells) // 2]
                    base = base or c.rps
                    print(
                        f"{stack.name:12} | {workload:10} | {c.rps:8.0f} | {c.p50:7.2f} | "
                        f"{c.p99:7.2f} | {c.cpu_us:10.0f} | {c.rps / base:10.2f}x | {c.errors}"
                    )

            per_member, seconds = memory_per_member(
                url, stacks[1].ports[0], "b1", args.memory_members
            )
            print(
                f"\nmemory: {args.memory_members} members on one board of the cluster: "
                f"{per_member:.1f} B/member (used_memory delta of its primary), "
                f"loaded in {seconds:.1f} s through rankd's batch endpoint"
            )
            print(f"load average: {os.getloadavg()}")
        finally:
            subprocess.run([SCRIPT, "stop", "--dir", root], timeout=60, check=False)


if __name__ == "__main__":
    main()
