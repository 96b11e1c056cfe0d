"""Bytes per member per window on the redis backend (issue #14 item 6, on the cluster).

One local cluster (scripts/redis-cluster); for each of ``["all"]``, ``["all", "week"]`` and
``["all", "week", "day"]`` one board configured through ``RedisWindows.configure``, ``--members``
members written 1,000 per function call through ``RedisWindows.write_many`` (the path a windowed
board's POST scores takes: one ``rankd_xwrite`` updates every window), random int scores, 8-12
character ids (SCALEOUT.md's shape), no metadata. Bytes per member = MEMORY USAGE (SAMPLES 0) of
every key of the board / members; the used_memory delta of the owning primary is shown too (it
also counts allocator slack and replication buffers). The plain one-table path
(``RedisBoards.write_many``) is the first row: a board of one window costs what it cost before.
Wall µs per item of the 1,000-item calls (client and cluster on one box) for each row, so the
extra window's write cost is read side by side.

    python -m loadtest.bench_redis_windows --members 200000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest._stacks import REPO

SCRIPT = REPO / "scripts" / "redis-cluster"
SHAPES: list[tuple[str, list[str] | None]] = [
    ("plain board (one-table path)", None),
    ('windows ["all"]', ["all"]),
    ('windows ["all","week"]', ["all", "week"]),
    ('windows ["all","week","day"]', ["all", "week", "day"]),
]


async def _measure(url: str, board: str, windows: list[str] | None, n: int) -> dict[str, float]:
    from redis.asyncio import Redis as AsyncRedis
    from redis.asyncio import RedisCluster as AsyncCluster

    from service.backend.redis.boards import RedisBoards
    from service.backend.redis.windows import RedisWindows
    from store.clock import SystemClock

    client = AsyncCluster.from_url(url)
    try:
        await client.initialize()
        rb = RedisBoards(client, "win")
        rw = RedisWindows(rb, SystemClock())
        options: dict[str, Any] = {} if windows is None else {"windows": windows}
        await rw.configure(board, options)
        if windows is None:
            await rb.write(board, "warmup", 1)
        else:
            await rw.write_many(board, [("warmup", 1, None)], "0")
        await client.nodes_manager.initialize()
        k = rb.keys(board)
        node = client.get_node_from_key(k.cfg)
        assert node is not None
        primary = AsyncRedis(host=node.host, port=int(node.port))
        before = (await primary.info("memory"))["used_memory"]
        names = [f"u{i:0{7 + i % 5}d}"[:12] for i in range(n)]
        rng = random.Random(7)
        began = time.perf_counter()
        for at in range(0, n, 1000):
            chunk = [(m, rng.randrange(1_000_000_000), None) for m in names[at : at + 1000]]
            if windows is None:
                await rb.write_many(board, chunk)  # type: ignore[arg-type]
            else:
                await rw.write_many(board, chunk, "0")
        seconds = time.perf_counter() - began
        await asyncio.sleep(2)  # let the AOF and replication buffers drain
        after = (await primary.info("memory"))["used_memory"]
        tag = f"win:{{{board}}}:*"
        usage = 0
        cursor = 0
        while True:
            cursor, found = await primary.scan(cursor, match=tag, count=1000)
            for key in found:
                usage += await primary.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0") or 0
            if cursor == 0:
                break
        await primary.aclose()
    finally:
        await client.aclose()
    return {
        "usage": usage / (n + 1),
        "used_memory": (after - before) / n,
        "us_per_write": seconds / n * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--members", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rw-") as tmp:
        root = Path(tmp) / "cluster"
        proc = subprocess.run(
            [SCRIPT, "start", "--dir", root, "--watch", str(os.getpid())],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        url = proc.stdout.strip().splitlines()[-1]
        try:
            rows = []
            for i, (label, windows) in enumerate(SHAPES):
                m = asyncio.run(_measure(url, f"w{i}", windows, args.members))
                rows.append((label, m))
                print(
                    f"{label}: {m['usage']:.1f} B/member (MEMORY USAGE), "
                    f"{m['used_memory']:.1f} B/member (used_memory delta), "
                    f"{m['us_per_write']:.1f} us/write",
                    flush=True,
                )
            base = rows[1][1]["usage"]
            for label, m in rows[2:]:
                extra = len(label.split(",")) - 1
                print(f"{label}: +{(m['usage'] - base) / extra:.1f} B/member per extra window")
            print(f"load average: {os.getloadavg()}")
        finally:
            subprocess.run([SCRIPT, "stop", "--dir", root], timeout=60, check=False)


if __name__ == "__main__":
    main()
