"""What the windows work costs a plain board on the redis backend: server time per write.

The one-table functions (rankd_write, rankd_top, ...) gained one ``HEXISTS cfg opts`` each (a
board with windows, a ranking or bounds is refused with "OPTS" and served by the rankd_x*
functions). This measures ``rankd_write``'s server time per call (``INFO commandstats``,
``cmdstat_fcall`` usec_per_call) with the library before (``--base``, a git revision) and after
(this tree), alternated on one throwaway redis-server (no persistence), ``--writes`` single
writes of new members per run through ``RedisBoards.write`` -- the POST score path.

    python -m loadtest.bench_redis_guard --base 3395710 --rounds 5 --writes 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import tempfile
import time

from loadtest._procs import free_port
from loadtest._stacks import REPO


async def _run(port: int, code: str, board: str, writes: int) -> float:
    from redis.asyncio import Redis

    from service.backend.redis.boards import RedisBoards
    from service.backend.redis.functions import load_library

    client = Redis(port=port)
    try:
        await load_library(client, code)
        rb = RedisBoards(client, "g", publish=False)
        await rb.write(board, "warmup", 1)
        await client.config_resetstat()
        rng = random.Random(3)
        for i in range(writes):
            await rb.write(board, f"u{i:08d}", rng.randrange(1_000_000_000))
        stats = await client.info("commandstats")
        return float(stats["cmdstat_fcall"]["usec_per_call"])
    finally:
        await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", default="3395710", help="git revision of the 'before' library")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--writes", type=int, default=20_000)
    args = ap.parse_args()
    path = "service/backend/redis/rankd.lua"
    before = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{args.base}:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = (REPO / path).read_text()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        server = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            got: dict[str, list[float]] = {"before": [], "after": []}
            for r in range(args.rounds):
                order = [("before", before), ("after", after)]
                if r % 2:
                    order.reverse()
                for label, code in order:
                    us = asyncio.run(_run(port, code, f"{label}{r}", args.writes))
                    got[label].append(us)
                    print(f"round {r} {label}: {us:.2f} us/call", flush=True)
            a, b = statistics.median(got["before"]), statistics.median(got["after"])
            print(f"median before {a:.2f} us, after {b:.2f} us, after/before {b / a:.3f}")
            print(f"load average: {os.getloadavg()}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
