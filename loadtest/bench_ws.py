"""WebSocket fan-out benchmark: how late do top-10 pushes arrive, and what do they cost writers?

    python -m loadtest.bench_ws                        # 1000 subscribers, 500 writes/s, 10 s
    python -m loadtest.bench_ws --quick                # smoke sizes, a few seconds
    python -m loadtest.bench_ws --subscribers 2000 --rate 1000 --seconds 20 --json out.json

One rankd (``--fsync everysec``, the default) on loopback, and three phases:

1. **throughput, no subscribers** -- ``--writers`` WebSocket connections each keep
   ``--window`` score ops in flight for ``--burst`` seconds: acknowledged writes per second.
2. **delay** -- a separate client process opens ``--subscribers`` connections, each subscribed
   to the top 10 of one board. A writer sends ``--rate`` score ops per second (open loop) for
   ``--seconds``. Scores only grow and members are reused with ``update=best``, so every write
   becomes rank 1 and every tick changes every subscriber's view: the worst case for fan-out.
   Delay = receipt of the first frame whose rank-1 score is >= the write's score, minus the
   write's acknowledgement (CLOCK_MONOTONIC, shared by the processes), for every
   (subscriber, write) pair with the write's score divisible by ``--sample``.
3. **throughput, with subscribers** -- phase 1 again while the subscribers stay connected.

Coalescing bounds the delay from below: a write waits for the next flush, which runs at most
once per ``ws_tick`` (0.1 s by default), so on a busy board the delay averages about half a tick
plus the time to deliver one frame to every subscriber.

The clients speak WebSocket through a few lines of asyncio protocol (``_Lean``: handshake,
masked text frames out, unmasked frames in) instead of a client library: on a 2-core box a
Python WebSocket library spends more CPU per received frame than the server spends sending
it, and the numbers would measure the client. The tests use a real library (``websockets``).

Every child runs in its own process group and is killed on exit, error, Ctrl-C, SIGTERM or
``--deadline``; the processes raise their file-descriptor limit to the hard limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from loadtest._procs import LOOPBACK, Children, free_port, wait_http

BOARD = "ws-bench"
TOP = 10


# -- a minimal WebSocket client ---------------------------------------------------------------


class _Lean(asyncio.Protocol):
    """Client side of RFC 6455, just enough for JSON text frames: no fragments, no extensions."""

    def __init__(self, on_text: Callable[[float, bytes], None]) -> None:
        self.on_text = on_text
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /v1/ws HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def send_text(self, payload: bytes, opcode: int = 0x1) -> None:
        # Clients must mask; a zero mask keeps the payload as is and is still a valid mask.
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        assert self.transport is not None
        self.transport.write(head + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(bytes(buf[:200]).decode()))
                return
            del buf[: end + 4]
            self.upgraded.set_result(None)
        while len(buf) >= 2:
            opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, at = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, at = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < at + n:
                return
            payload = bytes(buf[at : at + n])
            del buf[: at + n]
            if opcode == 0x1:
                self.on_text(now, payload)
            elif opcode == 0x9:  # ping: answer, or uvicorn's keepalive drops us
                self.send_text(payload, 0xA)
            elif opcode == 0x8 and not self.closed.done():
                self.closed.set_result(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(b"")


async def _open(port: int, on_text: Callable[[float, bytes], None]) -> _Lean:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: _Lean(on_text), LOOPBACK, port)
    await asyncio.wait_for(proto.upgraded, 30)
    return proto


def _top_score(payload: bytes) -> int:
    """Rank 1's score in a top frame, without parsing the whole frame."""
    at = payload.find(b'"score":', payload.find(b'"entries":['))
    if at < 0:
        return 0
    at += 8
    end = at
    while payload[end] in b"-0123456789":
        end += 1
    return int(payload[at:end])


# -- writers ----------------------------------------------------------------------------------


async def _closed_loop(port: int, writers: int, window: int, seconds: float, base: int) -> float:
    """Acknowledged writes per second with ``writers`` x ``window`` ops in flight."""
    done = 0
    deadline = time.monotonic() + seconds

    async def one(w: int) -> None:
        n = 0
        in_flight = 0
        drained = asyncio.get_running_loop().create_future()

        def send() -> None:
            nonlocal n, in_flight
            n += 1
            in_flight += 1
            op = {
                "op": "score",
                "id": n,
                "board": f"{BOARD}-tp",
                "member": f"w{w}-{n % 500}",
                "score": base + n * writers + w,
            }
            proto.send_text(orjson.dumps(op))

        def on_ack(now: float, payload: bytes) -> None:
            nonlocal done, in_flight
            in_flight -= 1
            if not payload.startswith(b'{"type":"ack"'):
                raise RuntimeError(payload[:200])
            if now < deadline:
                done += 1
                send()
            elif in_flight == 0 and not drained.done():
                drained.set_result(None)

        proto = await _open(port, on_ack)
        for _ in range(window):
            send()
        await asyncio.wait_for(drained, seconds + 30)
        assert proto.transport is not None
        proto.transport.close()

    started = time.monotonic()
    await asyncio.gather(*(one(w) for w in range(writers)))
    return done / (time.monotonic() - started)


async def _open_loop(
    port: int, rate: float, seconds: float, base: int
) -> dict[int, tuple[float, float]]:
    """Send ``rate`` writes/s for ``seconds``; returns score -> (sent, acked) monotonic times."""
    total = int(rate * seconds)
    sent: dict[int, float] = {}
    times: dict[int, tuple[float, float]] = {}
    all_acked = asyncio.get_running_loop().create_future()

    def on_ack(now: float, payload: bytes) -> None:
        frame = orjson.loads(payload)
        assert frame["type"] == "ack", frame
        score = frame["id"]
        times[score] = (sent[score], now)
        if len(times) == total and not all_acked.done():
            all_acked.set_result(None)

    proto = await _open(port, on_ack)
    start = time.monotonic()
    for i in range(1, total + 1):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        score = base + i  # base above every earlier score: each write is the new rank 1
        sent[score] = time.monotonic()
        op = {"op": "score", "id": score, "board": BOARD, "member": f"m{i % 1000}", "score": score}
        proto.send_text(orjson.dumps(op))
    await asyncio.wait_for(all_acked, 30)
    assert proto.transport is not None
    proto.transport.close()
    return times


# -- the subscriber process -------------------------------------------------------------------


async def _subscribers(port: int, n: int, out: Path, ready: Path) -> None:
    """Open n top-10 subscriptions, touch ``ready``, record (time, rank-1 score) per frame
    until a ``stop`` file appears next to ``ready``, then write the records to ``out``."""
    records: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    protos: list[_Lean] = []
    subscribe = orjson.dumps({"op": "subscribe", "id": "t", "board": BOARD, "top": TOP})
    for i in range(n):
        rec = records[i]

        def on_top(now: float, payload: bytes, rec: list[tuple[float, int]] = rec) -> None:
            if not payload.startswith(b'{"type":"top"'):
                raise RuntimeError(payload[:200])
            rec.append((now, _top_score(payload)))

        proto = await _open(port, on_top)
        proto.send_text(subscribe)
        protos.append(proto)
    while any(not r for r in records):  # everyone has its full state
        await asyncio.sleep(0.05)
    ready.touch()
    stop = ready.with_name("stop")
    while not stop.exists():
        await asyncio.sleep(0.05)
    dropped = sum(p.closed.done() for p in protos)
    for p in protos:
        assert p.transport is not None
        p.transport.close()
    out.write_bytes(orjson.dumps({"records": records, "dropped": dropped}))


def _delays(
    records: list[list[tuple[float, int]]], times: dict[int, tuple[float, float]], sample: int
) -> tuple[list[float], list[float]]:
    """(from ack, from send) delays for every (subscriber, sampled write) pair."""
    sampled = sorted(s for s in times if s % sample == 0)
    from_ack: list[float] = []
    from_send: list[float] = []
    for rec in records:
        k = 0
        for t, top in rec:
            while k < len(sampled) and sampled[k] <= top:
                sent, acked = times[sampled[k]]
                from_ack.append(t - acked)
                from_send.append(t - sent)
                k += 1
    return from_ack, from_send


# -- orchestration ----------------------------------------------------------------------------


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _say(text: str) -> None:
    print(f"[bench_ws {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = free_port()
    with Children(workdir) as children:
        server = children.start(
            "rankd",
            [
                *(sys.executable, "-m", "service", "--port", str(port)),
                *("--data-dir", str(workdir / "data"), "--log-level", "warning"),
                *("--ws-connections", str(args.subscribers + 100)),
            ],
        )
        wait_http(server, port, "/readyz")
        result: dict[str, Any] = {
            "subscribers": args.subscribers,
            "rate": args.rate,
            "seconds": args.seconds,
            "writers": args.writers,
            "window": args.window,
            "cpus": os.cpu_count(),
        }
        _say(f"phase 1: closed-loop writes for {args.burst:g} s, no subscribers")
        result["throughput_without"] = asyncio.run(
            _closed_loop(port, args.writers, args.window, args.burst, 0)
        )
        # Warm-up: 1000 members on the board, so a top-10 frame is a realistic one.
        asyncio.run(_open_loop(port, 2000, 0.5, 1_000_000))

        _say(f"phase 2: {args.subscribers} subscribers connect")
        out = workdir / "subscribers.json"
        sub = children.start(
            "subscribers",
            [
                *(sys.executable, "-m", "loadtest.bench_ws", "--role", "subscribers"),
                *("--port", str(port), "--subscribers", str(args.subscribers)),
                *("--out", str(out), "--ready", str(workdir / "ready")),
            ],
        )
        t0 = time.monotonic()
        while not (workdir / "ready").exists():
            sub.check_alive()
            if time.monotonic() - t0 > 120:
                raise RuntimeError("subscribers did not connect within 120 s")
            time.sleep(0.05)
        result["connect_seconds"] = time.monotonic() - t0
        _say(f"phase 2: {args.rate:g} writes/s for {args.seconds:g} s")
        cpu0, wall0 = _cpu_seconds(server.pid), time.monotonic()
        times = asyncio.run(_open_loop(port, args.rate, args.seconds, 2_000_000))
        result["server_cpu"] = (_cpu_seconds(server.pid) - cpu0) / (time.monotonic() - wall0)
        time.sleep(1.0)  # the last flush reaches everyone
        _say(f"phase 3: closed-loop writes for {args.burst:g} s, subscribers connected")
        result["throughput_with"] = asyncio.run(
            _closed_loop(port, args.writers, args.window, args.burst, 10**9)
        )
        (workdir / "stop").touch()
        sub.proc.wait(timeout=60)
        data = orjson.loads(out.read_bytes())
    records = data["records"]
    _say("computing delays")
    from_ack, from_send = _delays(records, times, args.sample)
    frames = sum(len(r) for r in records)
    result.update(
        delay_from_ack=_percentiles(from_ack),
        delay_from_send=_percentiles(from_send),
        ack_latency=_percentiles([acked - sent for sent, acked in times.values()]),
        samples=len(from_ack),
        frames=frames,
        frames_per_subscriber_per_s=frames / max(1, len(records)) / args.seconds,
        subscribers_dropped=data["dropped"],
    )
    return result


def _report(r: dict[str, Any]) -> str:
    def ms(p: dict[str, float]) -> str:
        return " ".join(f"{k} {v * 1000:.1f}" for k, v in p.items())

    return "\n".join(
        [
            f"rankd /v1/ws: {r['subscribers']} top-{TOP} subscribers on one board, "
            f"{r['rate']:g} writes/s for {r['seconds']:g} s, {r['cpus']} CPUs",
            f"  delay ack -> frame (ms):   {ms(r['delay_from_ack'])}  ({r['samples']} samples)",
            f"  delay send -> frame (ms):  {ms(r['delay_from_send'])}",
            f"  ack latency (ms):          {ms(r['ack_latency'])}",
            f"  frames: {r['frames']} ({r['frames_per_subscriber_per_s']:.1f}/subscriber/s), "
            f"dropped subscribers {r['subscribers_dropped']}, "
            f"server CPU {r['server_cpu'] * 100:.0f}% of a core, "
            f"connect {r['connect_seconds']:.1f} s",
            f"  write throughput ({r['writers']} WS writers x {r['window']} in flight): "
            f"{r['throughput_without']:.0f}/s without subscribers, "
            f"{r['throughput_with']:.0f}/s with {r['subscribers']}",
        ]
    )


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`, which kills children


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rate", type=float, default=500.0, help="writes/s in the delay phase")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the delay phase")
    p.add_argument("--burst", type=float, default=5.0, help="length of each throughput phase")
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--sample", type=int, default=5, help="measure every n-th write's delay")
    p.add_argument("--quick", action="store_true", help="100 subscribers, 2 s phases")
    p.add_argument("--deadline", type=int, default=300, help="hard bound on the run, seconds")
    p.add_argument("--json", type=Path, help="also write the raw numbers here")
    p.add_argument(
        "--role", choices=["main", "subscribers"], default="main", help=argparse.SUPPRESS
    )
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    _raise_fd_limit()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(args.deadline)
    if args.role == "subscribers":
        asyncio.run(_subscribers(args.port, args.subscribers, args.out, args.ready))
        return
    if args.quick:
        args.subscribers, args.seconds, args.burst = 100, 2.0, 2.0
    with tempfile.TemporaryDirectory(prefix="bench_ws.") as tmp:
        result = _run(args, Path(tmp))
    signal.alarm(0)
    print(_report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
