"""Side-by-side HTTP benchmark: bare Starlette vs rankd vs Starlette + Redis.

One run, one machine:

    stack            what runs                                   workloads
    bare             uvicorn + bare_app (no store)               get_top get_member post_score
    rankd            rankd --fsync no                            get_top get_member post_score
    rankd-everysec   rankd --fsync everysec (the default)        post_score (GETs never journal)
    redis            redis-server + uvicorn + redis_app          get_top get_member post_score
    memory           N members into a fresh rankd and a fresh redis-server

All HTTP stacks start up front, each with a board of ``--members`` entries; an idle
server costs no CPU, so only the one being driven competes with wrk. Then, per
workload, wrk drives each stack in turn for ``--duration`` seconds with the same
``--connections``/``--threads`` (see _wrk.py for what each workload sends), for
``--rounds`` rounds in rotating order; each cell reports the round with the median
req/s. Interleaving is what makes the ratios trustworthy on a shared machine: a burst of
background load hits every stack's rounds alike instead of one stack's whole run.

The report is a markdown table of req/s, p50 and p99, plus the ratios rankd/bare (how
much of the framework's budget rankd keeps) and rankd/redis (how rankd compares with
the stack people build without it), and the memory cost of one leaderboard member in
each store.

    python -m loadtest.bench_http                      # full run, a few minutes
    python -m loadtest.bench_http --quick              # seconds: smoke test sizes
    python -m loadtest.bench_http --only rankd,redis --duration 5

Everything listens on 127.0.0.1 ports picked at run time; every child runs in its own
process group and is killed on exit, error, Ctrl-C or SIGTERM; ``--deadline`` bounds the
whole run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from loadtest._procs import Children, cpu_seconds
from loadtest._report import STACKS, Row, header, http_tables, memory_table
from loadtest._stacks import (
    MemoryResult,
    Running,
    fill_rankd,
    fill_redis,
    memory_rankd,
    memory_redis,
    start_bare,
    start_rankd,
    start_redis_stack,
)
from loadtest._wrk import BOARD, WORKLOADS, WrkResult, run_wrk, write_script

TARGETS = (*STACKS, "memory")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.bench_http",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run [5]")
    p.add_argument("--rounds", type=int, default=3, help="interleaved runs per cell [3]")
    p.add_argument("--warmup", type=float, default=1.0, help="discarded seconds before each [1]")
    p.add_argument("--connections", type=int, default=64, help="wrk connections [64]")
    p.add_argument("--threads", type=int, default=1, help="wrk threads [1: 2-core box]")
    p.add_argument("--members", type=int, default=100_000, help="board size for HTTP runs")
    p.add_argument(
        "--memory-members", type=int, default=1_000_000, help="N for the memory test [1M]"
    )
    p.add_argument("--only", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    p.add_argument(
        "--quick", action="store_true", help="1 round of 2 s, 1k members, 2k memory test"
    )
    p.add_argument("--json", type=Path, help="also write raw results here")
    p.add_argument("--deadline", type=int, help="abort the whole run after this many seconds")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 2.0, 0.0, 1
        args.members, args.memory_members = 1000, 2000
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(args.only) - set(TARGETS))
    if unknown:
        p.error(f"--only expects names from {','.join(TARGETS)} but got {','.join(unknown)}")
    if min(args.duration, args.connections, args.threads, args.members, args.rounds) <= 0:
        p.error("--duration, --rounds, --connections, --threads and --members must be positive")
    if args.deadline is None:
        runs = len(args.only) * len(WORKLOADS) * args.rounds
        per_run = args.duration + args.warmup + 20  # wrk + server start/fill slack
        memory = 60 + args.memory_members / 5_000 if "memory" in args.only else 0
        args.deadline = int(60 + runs * per_run + memory)
    return args


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        sys.exit(f"bench_http: `{tool}` is not on PATH; install it: apt-get install {tool}")


def _start(kids: Children, stack: str, members: int) -> Running:
    starters: dict[str, Callable[[], Running]] = {
        "bare": lambda: start_bare(kids),
        "rankd": lambda: start_rankd(kids, "rankd", "no"),
        "rankd-everysec": lambda: start_rankd(kids, "rankd-everysec", "everysec"),
        "redis": lambda: start_redis_stack(kids, "no"),
    }
    run = starters[stack]()
    if stack.startswith("rankd"):
        fill_rankd(run.port, BOARD, members)
    elif run.redis_port is not None:
        fill_redis(run.redis_port, BOARD, members)
    return run


def _bench_http(kids: Children, args: argparse.Namespace, scripts: dict[str, Path]) -> list[Row]:
    stacks = [s for s in STACKS if s in args.only]
    running = {stack: _start(kids, stack, args.members) for stack in stacks}
    opts = {"connections": args.connections, "threads": args.threads}
    rows = []
    # Reads first, on the freshly filled boards; then the writes that reshuffle them.
    for workload in ("get_top", "get_member", "post_score"):
        # The fsync policy only touches the write path: no GET runs for rankd-everysec.
        cell = [s for s in stacks if workload == "post_score" or s != "rankd-everysec"]
        results: dict[str, list[WrkResult]] = {s: [] for s in cell}
        for rnd in range(args.rounds):
            # Rotate who goes first so no stack always runs right after the same neighbour.
            for stack in cell[rnd % len(cell) :] + cell[: rnd % len(cell)]:
                port = running[stack].port
                if args.warmup > 0 and rnd == 0:
                    run_wrk(scripts[workload], port, duration=args.warmup, **opts)
                pids = running[stack].pids
                cpu_before = sum(cpu_seconds(pid) for pid in pids)
                result = run_wrk(scripts[workload], port, duration=args.duration, **opts)
                cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
                cpu_us = cpu / max(result.requests, 1) * 1e6
                results[stack].append((result, cpu_us))
                print(
                    f"  round {rnd + 1}/{args.rounds} {stack:15} {workload:11} "
                    f"{result.rps:7.0f} req/s  p99 {result.p99_ms:7.2f} ms  "
                    f"{cpu_us:5.0f} CPU µs/req",
                    file=sys.stderr,
                )
        for stack, runs in results.items():
            mid = len(runs) // 2
            median = sorted((r for r, _ in runs), key=lambda r: r.rps)[mid]
            # A run with errors must show, even if it is not the median one.
            errors = sum(r.errors for r, _ in runs)
            cpu_us = sorted(c for _, c in runs)[mid]
            rows.append(Row(stack, workload, dataclasses.replace(median, errors=errors), cpu_us))
    return rows


def render(rows: list[Row], memory: list[MemoryResult], args: argparse.Namespace) -> str:
    out = [
        header(
            threads=args.threads,
            connections=args.connections,
            duration=args.duration,
            rounds=args.rounds,
            warmup=args.warmup,
            members=args.members,
        )
    ]
    if rows:
        out += ["", *http_tables(rows)]
    if memory:
        out += ["", *memory_table(memory)]
    return "\n".join(out)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`, which kills children


def _on_deadline(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("bench_http: --deadline reached; stopping every child")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    _require("wrk")
    if "redis" in args.only or "memory" in args.only:
        _require("redis-server")
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGALRM, _on_deadline)
    signal.alarm(args.deadline)
    rows: list[Row] = []
    memory: list[MemoryResult] = []
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="rankd-bench-") as tmp:
            workdir = Path(tmp)
            scripts = {w: write_script(workdir, w, args.members) for w in WORKLOADS}
            if any(s in args.only for s in STACKS):
                with Children(workdir) as kids:
                    rows = _bench_http(kids, args, scripts)
            if "memory" in args.only:
                with Children(workdir) as kids:
                    memory += memory_rankd(kids, args.memory_members)
                    memory += memory_redis(kids, args.memory_members)
    finally:
        signal.alarm(0)
    table = render(rows, memory, args)
    print(table)
    print(f"\n(total {time.monotonic() - started:.0f}s)")
    if args.json:
        raw = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "http": [
                {"stack": r.stack, "workload": r.workload, "cpu_us": r.cpu_us, **asdict(r.result)}
                for r in rows
            ],
            "memory": [{**asdict(m), "bytes_per_member": m.bytes_per_member} for m in memory],
        }
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
