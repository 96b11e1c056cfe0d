"""Markdown tables for bench_http: the per-stack numbers, the ratios, the memory test.

Two kinds of cost are shown because they answer different questions on a shared box:

* **req/s, p50, p99** (from wrk): what a client sees. They depend on how much CPU the
  server got, so background load on the machine moves them.
* **CPU µs/req**: user + system CPU the stack's processes (rankd; or redis_app *and*
  redis-server) burned during the run, divided by the requests served. It is what each
  request costs, whoever else is using the machine, and so the steadier basis for
  comparing stacks when the box is not quiet.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import redis
from redis.utils import HIREDIS_AVAILABLE

from loadtest._stacks import MemoryResult
from loadtest._wrk import WORKLOADS, WrkResult

STACKS = ("bare", "rankd", "rankd-everysec", "redis")


@dataclass(frozen=True)
class Row:
    stack: str
    workload: str
    result: WrkResult  # the round with the median req/s (errors summed over all rounds)
    cpu_us: float  # median over rounds of server CPU microseconds per request


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def header(
    *, threads: int, connections: int, duration: float, rounds: int, warmup: float, members: int
) -> str:
    parser = "hiredis" if HIREDIS_AVAILABLE else "pure-Python"
    return (
        f"rankd HTTP benchmark — {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; wrk -t{threads} -c{connections} -d{duration:g}s "
        f"x {rounds} interleaved rounds, median shown (warm-up {warmup:g}s); "
        f"board of {members:,} members; redis-py {redis.__version__} ({parser} parser)"
    )


def http_tables(rows: list[Row]) -> list[str]:
    out = [
        "| workload | stack | req/s | p50 ms | p99 ms | CPU µs/req | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: (WORKLOADS.index(r.workload), STACKS.index(r.stack))):
        res = r.result
        out.append(
            f"| {r.workload} | {r.stack} | {res.rps:,.0f} | {res.p50_ms:.2f} | "
            f"{res.p99_ms:.2f} | {r.cpu_us:.0f} | {res.errors} |"
        )
    rps = {(r.stack, r.workload): r.result.rps for r in rows}
    p99 = {(r.stack, r.workload): r.result.p99_ms for r in rows}
    cpu = {(r.stack, r.workload): r.cpu_us for r in rows}
    out += [
        "",
        "| workload | rankd/bare req/s | rankd/redis req/s | rankd/redis p99 "
        "| rankd/bare CPU/req | rankd/redis CPU/req | rankd everysec/no req/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in WORKLOADS:
        if not any(r.workload == w for r in rows):
            continue
        mine = rps.get(("rankd", w))
        out.append(
            f"| {w} | {_ratio(mine, rps.get(('bare', w)))} | "
            f"{_ratio(mine, rps.get(('redis', w)))} | "
            f"{_ratio(p99.get(('rankd', w)), p99.get(('redis', w)))} | "
            f"{_ratio(cpu.get(('rankd', w)), cpu.get(('bare', w)))} | "
            f"{_ratio(cpu.get(('rankd', w)), cpu.get(('redis', w)))} | "
            f"{_ratio(rps.get(('rankd-everysec', w)), mine)} |"
        )
    return out


def memory_table(memory: list[MemoryResult]) -> list[str]:
    out = [
        "| store | members | measure | delta MiB | bytes/member | load s |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    out += [
        f"| {m.store} | {m.members:,} | {m.measure} | {m.delta_bytes / 2**20:.1f} | "
        f"{m.bytes_per_member:.0f} | {m.load_seconds:.2f} |"
        for m in memory
    ]
    return out
