"""The three stacks under test, how to start them, fill them and weigh them.

    bare            uvicorn + loadtest/bare_app.py           (no store: the floor)
    rankd           python -m service --fsync no|everysec    (the product)
    redis           redis-server + uvicorn + loadtest/redis_app.py (the reference)

Same uvicorn settings for every Python server (1 worker, uvloop, httptools, no access
log); rankd is started through its own CLI because that is what users run, and it sets
those same options. redis-server runs with ``appendonly yes`` and an ``appendfsync``
that mirrors rankd's ``--fsync`` (``no`` ↔ ``no``, ``everysec`` ↔ ``everysec``): both
then journal every write, and neither fsyncs in the write path.

Boards are filled with the same members (``player:0000000`` ...) and seeded scores:
rankd through ``POST /v1/boards/{b}/scores:batch`` (≤ BATCH items per request, the
documented limit), Redis through pipelined multi-member ``ZADD``.
"""

from __future__ import annotations

import http.client
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis

from loadtest._procs import (
    LOOPBACK,
    Child,
    ChildFailed,
    Children,
    free_port,
    rss_bytes,
    wait_http,
    wait_port,
)
from loadtest._wrk import BOARD, SCORE_RANGE, member_name

REPO = Path(__file__).resolve().parents[1]
BATCH = 1000  # rankd's documented per-request limit for scores:batch
_UVICORN_FLAGS = [
    "--workers=1",
    "--loop=uvloop",
    "--http=httptools",
    "--no-access-log",
    "--no-server-header",  # rankd sends none either
    "--log-level=warning",
]


@dataclass
class Running:
    name: str
    port: int
    server: Child  # the process whose RSS is the store's (rankd) or the app's
    redis_port: int | None = None
    helpers: tuple[Child, ...] = ()  # redis-server behind the redis stack

    @property
    def pids(self) -> tuple[int, ...]:
        """Every process that does the stack's work, for CPU accounting."""
        return (self.server.pid, *(h.pid for h in self.helpers))


def _uvicorn(app: str, port: int) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", app, f"--host={LOOPBACK}", f"--port={port}"]
    return [*argv, *_UVICORN_FLAGS]


def start_bare(kids: Children) -> Running:
    port = free_port()
    child = kids.start("bare", _uvicorn("loadtest.bare_app:app", port), cwd=REPO)
    wait_http(child, port, f"/v1/boards/{BOARD}/top")
    return Running("bare", port, child)


def start_rankd(kids: Children, name: str, fsync: str) -> Running:
    port = free_port()
    data = kids.workdir / f"{name}-data"
    data.mkdir()
    argv = [sys.executable, "-m", "service", f"--host={LOOPBACK}", f"--port={port}"]
    # No periodic snapshots, as redis-server runs with --save "": a fork landing inside one
    # workload's rounds would charge that workload alone (the journal still runs).
    argv += [f"--data-dir={data}", f"--fsync={fsync}", "--snapshot-interval=0"]
    child = kids.start(name, argv, cwd=REPO)
    wait_http(child, port, "/readyz", timeout=60)
    return Running(name, port, child)


def start_redis_server(kids: Children, name: str, appendfsync: str) -> tuple[Child, int]:
    port = free_port()
    data = kids.workdir / f"{name}-data"
    data.mkdir()
    argv = ["redis-server", "--port", str(port), "--bind", LOOPBACK, "--protected-mode", "yes"]
    argv += ["--save", "", "--appendonly", "yes", "--appendfsync", appendfsync]
    argv += ["--dir", str(data), "--daemonize", "no", "--loglevel", "warning"]
    child = kids.start(name, argv)
    wait_port(child, port)
    return child, port


def start_redis_stack(kids: Children, appendfsync: str = "no") -> Running:
    server, redis_port = start_redis_server(kids, "redis-server", appendfsync)
    port = free_port()
    env = {"REDIS_URL": f"redis://{LOOPBACK}:{redis_port}/0"}
    child = kids.start("redis-app", _uvicorn("loadtest.redis_app:app", port), env=env, cwd=REPO)
    wait_http(child, port, f"/v1/boards/{BOARD}/top")
    return Running("redis", port, child, redis_port, (server,))


def seeded_entries(n: int, seed: int = 7) -> Iterator[tuple[str, int]]:
    rng = random.Random(seed)
    for i in range(n):
        yield member_name(i), rng.randrange(SCORE_RANGE)


def _chunks(n: int, size: int) -> Iterator[list[tuple[str, int]]]:
    chunk: list[tuple[str, int]] = []
    for entry in seeded_entries(n):
        chunk.append(entry)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def fill_rankd(port: int, board: str, n: int) -> float:
    """Load ``n`` members over the batch endpoint; returns seconds taken."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    try:
        for chunk in _chunks(n, BATCH):
            body = orjson.dumps([{"member": m, "score": s} for m, s in chunk])
            conn.request(
                "POST",
                f"/v1/boards/{board}/scores:batch",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status != 200:
                raise ChildFailed(f"rankd batch load got {resp.status}: {payload[:500]!r}")
    finally:
        conn.close()
    return time.perf_counter() - started


def fill_redis(redis_port: int, board: str, n: int, per_pipeline: int = 10) -> float:
    """``ZADD`` ``n`` members, BATCH per command, ``per_pipeline`` commands per round trip."""
    started = time.perf_counter()
    client = redis.Redis(host=LOOPBACK, port=redis_port)
    try:
        pipe = client.pipeline(transaction=False)
        for i, chunk in enumerate(_chunks(n, BATCH), 1):
            pipe.zadd("board:" + board, dict(chunk))
            if i % per_pipeline == 0:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()
    return time.perf_counter() - started


@dataclass(frozen=True)
class MemoryResult:
    store: str
    measure: str
    members: int
    delta_bytes: int
    load_seconds: float

    @property
    def bytes_per_member(self) -> float:
        return self.delta_bytes / self.members if self.members else 0.0


def memory_rankd(kids: Children, n: int) -> list[MemoryResult]:
    """VmRSS of a fresh rankd before and after ``n`` members land on one board."""
    run = start_rankd(kids, "rankd-memory", "no")
    # Warm the request path (imports, buffers, the first board) so the delta is the data.
    fill_rankd(run.port, "warmup", BATCH)
    before = rss_bytes(run.server.pid)
    seconds = fill_rankd(run.port, "memory", n)
    after = rss_bytes(run.server.pid)
    kids.stop(run.server)
    return [MemoryResult("rankd", "VmRSS delta", n, after - before, seconds)]


def memory_redis(kids: Children, n: int) -> list[MemoryResult]:
    """``INFO memory`` of a fresh redis-server before and after ``n`` members."""
    child, port = start_redis_server(kids, "redis-memory", "no")
    client = redis.Redis(host=LOOPBACK, port=port)
    try:
        fill_redis(port, "warmup", BATCH)
        before = client.info("memory")
        seconds = fill_redis(port, "memory", n)
        after = client.info("memory")
    finally:
        client.close()
    kids.stop(child)
    return [
        MemoryResult(
            "redis-server",
            "used_memory delta",
            n,
            after["used_memory"] - before["used_memory"],
            seconds,
        ),
        MemoryResult(
            "redis-server",
            "used_memory_rss delta",
            n,
            after["used_memory_rss"] - before["used_memory_rss"],
            seconds,
        ),
    ]
