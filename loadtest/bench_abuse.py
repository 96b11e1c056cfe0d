"""Abuse benchmark: does a well-behaved client keep its throughput while rankd is attacked?

    phase   what runs                                               measured
    quiet   wrk post_score (the well-behaved client) alone          req/s, p50, p99
    abuse   the same wrk run, started first, while one attacker     req/s, p50, p99, and the
            process (asyncio) runs every attack below at once       answers the attackers got

    attack          what it does (per connection, reconnecting whenever the server closes)
    header-bomb     one header line of --bomb-mib MiB                          -> 431
    slowloris-head  a request head, one byte every 0.5 s                       -> 408
    slowloris-body  a complete head, then the body one byte every 0.5 s        -> 408
    idle-flood      sockets that send nothing, --flood more than the cap      -> 503 / idle close
    deep-json       POST score with arrays nested --depth deep in "score"      -> 400 expected

Every attacking connection reconnects PAUSE (0.1 s; flood sockets 0.5 s) after the server
closed it. Throughout the abuse phase the server's RSS is sampled every 0.1 s; the report gives its
maximum against --rss-limit, the ratios abuse ÷ quiet, and every 5xx the attackers saw plus
each "Exception"/500 line in the server's log. Done when the well-behaved client keeps
>= 50 % of its quiet throughput (issue #12).

The idle flood keeps the connection cap full, so *new* clients get 503 while it lasts, as
with Redis's maxclients; the well-behaved client connects first (wrk keeps its connections
alive) and is served on them.

    python -m loadtest.bench_abuse                       # ~1 min
    python -m loadtest.bench_abuse --duration 5 --max-connections 500

Loopback only; every child is killed on exit; --deadline bounds the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from loadtest._procs import LOOPBACK, Children, cpu_seconds, free_port, rss_bytes, wait_http
from loadtest._stacks import REPO, fill_rankd
from loadtest._wrk import BOARD, WrkResult, run_wrk, write_script

MiB = 1024 * 1024
# Each attacker reconnects this long after the server closed it (flood sockets: FLOOD_PAUSE).
# The attacks are about holding resources (memory, descriptors, time), not connection rate:
# a client reconnecting in a tight loop measures how much CPU the attacker process itself
# takes from the 2 cores it shares with the server, which is a firewall's business.
PAUSE = 0.1
FLOOD_PAUSE = 0.5


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_abuse", description=__doc__)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per phase [10]")
    p.add_argument("--rounds", type=int, default=3, help="quiet/abuse pairs; medians [3]")
    p.add_argument("--connections", type=int, default=16, help="wrk connections [16]")
    p.add_argument("--members", type=int, default=10_000, help="board size [10000]")
    p.add_argument("--max-connections", type=int, default=1000, help="rankd's cap [1000]")
    p.add_argument(
        "--flood", type=int, default=200, help="idle sockets beyond the cap; -1: no flood [200]"
    )
    p.add_argument("--bombers", type=int, default=4, help="header-bomb connections [4]")
    p.add_argument("--bomb-mib", type=int, default=8, help="MiB per header bomb [8]")
    p.add_argument("--slow", type=int, default=100, help="slowloris heads and bodies, each [100]")
    p.add_argument("--deep", type=int, default=2, help="deep-JSON posting connections [2]")
    p.add_argument("--depth", type=int, default=1000, help="nesting of the deep JSON [1000]")
    p.add_argument(
        "--rss-limit",
        type=int,
        default=512,
        help="rankd --max-memory, MiB; the RSS must stay under it [512]",
    )
    p.add_argument("--deadline", type=int, help="abort after this many seconds")
    p.add_argument("--attacker", nargs=2, metavar=("PORT", "SECONDS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.deadline is None:
        args.deadline = int(120 + args.rounds * 2 * (args.duration + 15))
    return args


# -- the attacker process ----------------------------------------------------------------------


class Attacker:
    def __init__(self, port: int, args: argparse.Namespace, until: float) -> None:
        self.port = port
        self.args = args
        self.until = until
        self.seen: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def running(self) -> bool:
        return time.monotonic() < self.until

    async def _exchange(
        self, kind: str, first: bytes, drip: bytes, every: float, pause: float = PAUSE
    ) -> None:
        """Connect, send ``first``, then ``drip`` byte by byte; record what comes back."""
        while self.running():
            try:
                reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
            except OSError as exc:
                self.seen[kind][f"connect {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)
                continue
            answer = asyncio.ensure_future(reader.read(4096))
            try:
                writer.write(first)
                for byte in drip:
                    if answer.done() or not self.running():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(every)
                remaining = max(0.0, self.until - time.monotonic())
                data = await asyncio.wait_for(answer, remaining)
                self.seen[kind][_status(data)] += 1
            except (OSError, TimeoutError) as exc:
                self.seen[kind][type(exc).__name__] += 1
            finally:
                answer.cancel()
                writer.close()
            await asyncio.sleep(pause)

    async def header_bomb(self) -> None:
        line = b"a" * (64 * 1024)
        while self.running():
            try:
                reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
            except OSError as exc:
                self.seen["header-bomb"][f"connect {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)
                continue
            answer = asyncio.ensure_future(reader.read(4096))
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Bomb: ")
                for _ in range(self.args.bomb_mib * 16):
                    if answer.done():
                        break
                    writer.write(line)
                    await writer.drain()
                data = await asyncio.wait_for(answer, 5)
                self.seen["header-bomb"][_status(data)] += 1
            except (OSError, TimeoutError) as exc:
                self.seen["header-bomb"][type(exc).__name__] += 1
            finally:
                answer.cancel()
                writer.close()
            await asyncio.sleep(PAUSE)

    async def idle(self) -> None:
        await self._exchange("idle-flood", b"", b"", 0, pause=FLOOD_PAUSE)

    async def deep_json(self) -> None:
        depth = self.args.depth
        body = b'{"member":"deep","score":' + b"[" * depth + b"1" + b"]" * depth + b"}"
        request = (
            b"POST /v1/boards/deep/scores HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        while self.running():
            await self._exchange_once("deep-json", request)
            await asyncio.sleep(PAUSE)

    async def _exchange_once(self, kind: str, request: bytes) -> None:
        try:
            reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
        except OSError as exc:
            self.seen[kind][f"connect {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)
            return
        try:
            writer.write(request)
            self.seen[kind][_status(await asyncio.wait_for(reader.read(4096), 5))] += 1
        except (OSError, TimeoutError) as exc:
            self.seen[kind][type(exc).__name__] += 1
        finally:
            writer.close()

    async def run(self) -> None:
        a = self.args
        head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
        body_head = (
            b"POST /v1/boards/slow/scores HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        jobs = [self.header_bomb() for _ in range(a.bombers)]
        jobs += [self._exchange("slowloris-head", head, b"X" * 4000, 0.5) for _ in range(a.slow)]
        jobs += [
            self._exchange("slowloris-body", body_head, b" " * 1000, 0.5) for _ in range(a.slow)
        ]
        jobs += [self.deep_json() for _ in range(a.deep)]
        # Fill the cap (the attack's own connections above count too), then go beyond it.
        if a.flood >= 0:
            jobs += [self.idle() for _ in range(a.max_connections + a.flood)]
        await asyncio.gather(*jobs)


def _status(data: bytes) -> str:
    match = re.match(rb"HTTP/1\.1 (\d{3})", data)
    if match:
        return match.group(1).decode()
    return "closed" if not data else "garbage"


def attacker_main(args: argparse.Namespace) -> int:
    port, seconds = int(args.attacker[0]), float(args.attacker[1])
    attacker = Attacker(port, args, time.monotonic() + seconds)
    asyncio.run(attacker.run())
    print(json.dumps({kind: dict(c) for kind, c in attacker.seen.items()}))
    return 0


# -- the driver --------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """The server's RSS maximum, and the attacker's CPU seconds (last value seen)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.max = 0
        self.attacker: int | None = None
        self.attacker_cpu = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self.max = max(self.max, rss_bytes(self.pid))
            if self.attacker is not None:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    self.attacker_cpu = cpu_seconds(self.attacker)


def _attack_argv(args: argparse.Namespace, port: int, seconds: float) -> list[str]:
    argv = [sys.executable, "-m", "loadtest.bench_abuse", "--attacker", str(port), str(seconds)]
    for name in ("max_connections", "flood", "bombers", "bomb_mib", "slow", "deep", "depth"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return argv


class Phase(NamedTuple):
    name: str
    wrk: WrkResult
    rss: int  # the server's maximum, bytes
    server_cpu: float  # seconds over the wrk run
    attacker_cpu: float
    seen: dict[str, dict[str, int]]


def _phase(args: argparse.Namespace, port: int, pid: int, script: Path, attack: bool) -> Phase:
    sampler = Sampler(pid)
    sampler.start()
    attacker = None
    if attack:
        # wrk connects first (the attacker needs ~0.3 s to start); the attacks outlive its run.
        attacker = subprocess.Popen(
            [*_attack_argv(args, port, args.duration + 4)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        sampler.attacker = attacker.pid
    cpu_before = cpu_seconds(pid)
    try:
        result = run_wrk(
            script, port, duration=args.duration + 2, connections=args.connections, threads=1
        )
        server_cpu = cpu_seconds(pid) - cpu_before
        seen: dict[str, dict[str, int]] = {}
        if attacker is not None:
            out, _ = attacker.communicate(timeout=args.duration + 30)
            seen = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if attacker is not None and attacker.poll() is None:
            attacker.kill()
            attacker.wait()
        sampler.stop.set()
        sampler.join()
    return Phase(
        "abuse" if attack else "quiet", result, sampler.max, server_cpu, sampler.attacker_cpu, seen
    )


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.attacker:
        return attacker_main(args)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(args.deadline)
    rows: list[Phase] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rankd-abuse-") as tmp, Children(Path(tmp)) as kids:
            workdir = Path(tmp)
            port = free_port()
            (workdir / "data").mkdir()
            argv = [sys.executable, "-m", "service", f"--host={LOOPBACK}", f"--port={port}"]
            argv += [f"--data-dir={workdir / 'data'}", f"--max-connections={args.max_connections}"]
            # The server's own memory bound (--max-memory, 507 past it) is the limit the RSS
            # is held to, not just a number the report compares against.
            argv += [f"--max-memory={args.rss_limit}m"]
            child = kids.start("rankd", argv, cwd=REPO)
            wait_http(child, port, "/readyz", timeout=60)
            fill_rankd(port, BOARD, args.members)
            script = write_script(workdir, "post_score", args.members)
            run_wrk(script, port, duration=1, connections=args.connections, threads=1)
            for rnd in range(args.rounds):
                for phase in ("quiet", "abuse"):
                    row = _phase(args, port, child.pid, script, phase == "abuse")
                    rows.append(row)
                    print(
                        f"  round {rnd + 1}/{args.rounds} {phase}: {row.wrk.rps:7.0f} req/s "
                        f"p99 {row.wrk.p99_ms:7.2f} ms  errors {row.wrk.errors}  "
                        f"RSS max {row.rss / MiB:.0f} MiB  CPU s: rankd {row.server_cpu:.1f} "
                        f"attacker {row.attacker_cpu:.1f}",
                        file=sys.stderr,
                    )
            log = child.log_tail(10_000_000)
    finally:
        signal.alarm(0)
    print(render(args, rows, log))
    return 0


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def render(args: argparse.Namespace, rows: list[Phase], log: str) -> str:
    by = {p: [r for r in rows if r.name == p] for p in ("quiet", "abuse")}
    med = {
        p: (
            _median([r.wrk.rps for r in rs]),
            _median([r.wrk.p50_ms for r in rs]),
            _median([r.wrk.p99_ms for r in rs]),
            sum(r.wrk.errors for r in rs),
            max(r.rss for r in rs),
            _median([r.server_cpu for r in rs]),
            _median([r.attacker_cpu for r in rs]),
        )
        for p, rs in by.items()
    }
    out = [
        f"well-behaved client: wrk post_score, {args.connections} connections, "
        f"{args.duration:g}+2 s per phase, {args.rounds} rounds (medians); board of "
        f"{args.members} members; rankd --max-connections {args.max_connections} "
        f"--max-memory {args.rss_limit}m",
        "",
        "| phase | req/s | p50 ms | p99 ms | wrk errors | RSS max MiB | rankd CPU s "
        "| attacker CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p, (rps, p50, p99, errors, rss, cpu, att) in med.items():
        out.append(
            f"| {p} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errors} | {rss / MiB:.0f} "
            f"| {cpu:.1f} | {att:.1f} |"
        )
    q, a = med["quiet"], med["abuse"]
    out += [
        "",
        f"abuse ÷ quiet: throughput {a[0] / q[0]:.2f} (bar ≥ 0.50), p99 {a[2] / q[2]:.2f} "
        f"(bar ≤ 2), RSS max {a[4] / MiB:.0f} MiB vs limit {args.rss_limit} MiB",
        "",
        "| attack | answers the attacker got (all abuse rounds) |",
        "| --- | --- |",
    ]
    total: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for row in by["abuse"]:
        for kind, counts in row.seen.items():
            total[kind].update(counts)
    for kind in sorted(total):
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(total[kind].items()))
        out.append(f"| {kind} | {shown} |")
    errors = [ln for ln in log.splitlines() if " 500 " in ln or "Traceback" in ln or "ERROR" in ln]
    out += ["", f"server log: {len(errors)} ERROR/500/Traceback line(s)"]
    out += [f"    {ln[:160]}" for ln in errors[:5]]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
