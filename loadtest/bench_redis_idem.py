"""What the idempotency record costs a write on the redis backend, plain and windowed.

Every score write on a ``sum`` board records its idempotency id with its first reply
(rankd.lua "Idempotency"): ``rankd_write`` on a plain board, ``rankd_xwrite`` on a board with
windows ``["all", "day"]``. For each path, runs of ``--writes`` single writes (members drawn
from 1,000, delta 1) through the POST score path (``RedisBoards.write_many`` /
``RedisWindows.write_many``) with ``idem = ""`` (no record) and with a rankd-drawn id (recorded),
alternated over ``--rounds`` on one throwaway redis-server (no persistence, so the server time
is the function's). Per run: the server's ``cmdstat_fcall`` usec_per_call (``INFO
commandstats``, reset before the run) and the median wall µs per write (client and server on one
box). Then the bytes one record takes: MEMORY USAGE (SAMPLES 0) of ``iz`` + ``ih`` / records.

    python -m loadtest.bench_redis_idem --rounds 5 --writes 5000
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
from typing import Any

from loadtest._procs import free_port

PATHS = ("plain (rankd_write)", 'windows ["all","day"] (rankd_xwrite)')


async def _run(port: int, path: str, board: str, with_id: bool, writes: int) -> dict[str, float]:
    from redis.asyncio import Redis

    from service.backend.redis import keys
    from service.backend.redis.boards import RedisBoards, write_id
    from service.backend.redis.windows import RedisWindows
    from store.clock import SystemClock

    client = Redis(port=port)
    try:
        rb = RedisBoards(client, "i", publish=False)
        rw = RedisWindows(rb, SystemClock())
        windowed = path == PATHS[1]
        options: dict[str, Any] = {"update": "sum"}
        if windowed:
            options["windows"] = ["all", "day"]
        await rw.configure(board, options)
        rng = random.Random(5)
        times = []
        await client.config_resetstat()
        for _ in range(writes):
            member = f"p{rng.randrange(1000)}"
            idem = write_id([member], None) if with_id else ""
            began = time.perf_counter()
            if windowed:
                await rw.write_many(board, [(member, 1, None)], "0", idem)
            else:
                await rb.write_many(board, [(member, 1, None)], idem)
            times.append(time.perf_counter() - began)
        stats = await client.info("commandstats")
        out = {
            "server_us": float(stats["cmdstat_fcall"]["usec_per_call"]),
            "wall_us": statistics.median(times) * 1e6,
        }
        if with_id:
            iz, ih = keys.idem_keys("i", board)
            usage = 0
            for key in (iz, ih):
                usage += await client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
            out["bytes_per_record"] = usage / await client.hlen(ih)
        return out
    finally:
        await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--writes", type=int, default=5000)
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-idem-") as tmp:
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
            got: dict[tuple[str, bool], list[dict[str, float]]] = {}
            for r in range(args.rounds):
                for path in PATHS:
                    order = [False, True] if r % 2 == 0 else [True, False]
                    for with_id in order:
                        board = f"b{r}{PATHS.index(path)}{int(with_id)}"
                        m = asyncio.run(_run(port, path, board, with_id, args.writes))
                        got.setdefault((path, with_id), []).append(m)
                        label = "id recorded" if with_id else "no id"
                        print(f"round {r} {path} {label}: {m}", flush=True)
            for path in PATHS:
                rows = {w: got[(path, w)] for w in (False, True)}
                srv = {w: statistics.median(x["server_us"] for x in rows[w]) for w in rows}
                wall = {w: statistics.median(x["wall_us"] for x in rows[w]) for w in rows}
                rec = statistics.median(x["bytes_per_record"] for x in rows[True])
                print(
                    f"{path}: server {srv[False]:.2f} -> {srv[True]:.2f} us/call "
                    f"(+{srv[True] - srv[False]:.2f}, x{srv[True] / srv[False]:.3f}); wall "
                    f"{wall[False]:.0f} -> {wall[True]:.0f} us/write "
                    f"(x{wall[True] / wall[False]:.3f}); {rec:.0f} B/record"
                )
            print(f"load average: {os.getloadavg()}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
