"""WebSocket fan-out benchmark: how late do pushes arrive, what do they cost, and do writers wait?

    python -m loadtest.bench_ws                               # 1,000 top-10 subscribers, 10 s
    python -m loadtest.bench_ws --quick                       # smoke sizes, a few seconds
    python -m loadtest.bench_ws --event --baseline /work/main # the issue #17 run (below)
    python -m loadtest.bench_ws --subscribers 2000 --mixes top,around --json out.json

``--event`` is 10,000 subscribers spread over 4 client processes, each of the three view mixes
in turn, 500 writes/s for 10 s. ``--baseline DIR`` also runs the rankd source tree in DIR (for
example a checkout of main) as "today", in the same run, before this tree ("this"), so the two
are compared on the same box at the same load. A baseline that has no around-me subscriptions
runs the ``top`` mix only.

View mixes (one board; every write has a unique id i, carried in its score):

* ``top``    -- every subscriber watches the top 10. Writes are *climbs*: member ``c<i % 1000>``
  gets score ``CLIMB + i``, higher than anything before, so every write becomes rank 1 and
  every tick changes every subscriber's view: the worst case for fan-out.
* ``around`` -- subscriber k watches ``radius`` 2 around its own member ``m<k>`` (10,000
  distinct views on a board of ``subscribers + 1000`` members). Writes are *bumps*: a random
  member ``m<j>`` gets ``BASE(j) + i``, which keeps its rank (the bases are far apart), so a
  write changes the 2*radius+1 views that show that rank -- a player's score changing mid-table.
* ``mix``    -- even subscribers watch the top 10, odd ones their own around view; writes
  alternate climbs and bumps.

For each (server, mix): a fresh ``rankd`` (``--fsync everysec``, the default) on loopback, a
board filled with the members, then

1. **throughput, no subscribers** -- ``--writers`` WebSocket connections each keep ``--window``
   score ops of the mix in flight for ``--burst`` seconds: acknowledged writes per second;
   then ``--rate`` writes/s for up to 5 s: write ack latency without subscribers, and the
   server's CPU for those writes alone (what the delay phase adds to it is the fan-out's).
2. **delay** -- client processes open the subscriptions; one writer sends ``--rate`` ops/s
   (open loop) for ``--seconds``. Delay = receipt of the first frame reflecting a write, minus
   that write's acknowledgement (CLOCK_MONOTONIC, shared by the processes), for every
   (subscriber, write) pair with ``i`` divisible by ``--sample``: for a top view, the first
   frame whose rank-1 score is >= the write's; for an around view, the first frame carrying
   the write's score. (A bump overwritten by a later bump of the same member within one tick
   is never shown and so never counted: rare, 50 writes per tick over 10,000 members.)
   Server CPU over the phase is divided by the frames the clients received in it; the event
   loop's thread is also shown alone (the rest: the journal's I/O thread and the heap's
   collapse, service/hugepages.py, which runs after the heap grew, e.g. as subscribers connect).
3. **throughput, with subscribers** -- phase 1 again while the subscribers stay connected and
   receive the resulting frames.

Coalescing bounds the delay from below: a write waits for the next flush, at most once per
``ws_tick`` (0.1 s by default), so the delay averages about half a tick plus the time to deliver
one frame to every subscriber.

The clients speak WebSocket through a few lines of asyncio protocol on uvloop (``_Lean``:
handshake, masked text frames out, unmasked frames in) instead of a client library: on a 2-core
box a Python WebSocket library spends more CPU per received frame than the server spends
sending it, and the numbers would measure the client. The tests use a real library
(``websockets``). The clients still share the two cores with the server: at 10,000
subscribers they receive up to 100,000 frames/s, and their CPU is printed next to the server's.

Every child runs in its own process group and is killed on exit, error, Ctrl-C, SIGTERM or
``--deadline``; every process raises its file-descriptor limit to the hard limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import resource
import signal
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, cast

import orjson
import uvloop

from loadtest._procs import LOOPBACK, Children, cpu_seconds, free_port, wait_http

BOARD = "ws-bench"
TOP = 10
RADIUS = 2
CLIMBERS = 1000
CLIMB = 10**15  # climb scores: CLIMB + i, above every bump score
SPACING = 10**7  # bump scores: BASE(j) + i with BASE(j) = (BASES - j) * SPACING, i < SPACING
BASES = 10**6
MIXES = ("top", "around", "mix")
ACK_GRACE = 60.0  # seconds a phase waits for its last acks before it counts them as missing
PER_PROCESS = 2500  # subscriptions per client process
HERE = Path(__file__).resolve().parent.parent  # the source tree this benchmark belongs to


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
        # uvloop's TCPTransport quacks like asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
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
        at = 0
        size = len(buf)
        while size - at >= 2:
            opcode, n, start = buf[at] & 0x0F, buf[at + 1] & 0x7F, at + 2
            if n == 126:
                if size - at < 4:
                    break
                n, start = struct.unpack_from("!H", buf, at + 2)[0], at + 4
            elif n == 127:
                if size - at < 10:
                    break
                n, start = struct.unpack_from("!Q", buf, at + 2)[0], at + 10
            if size < start + n:
                break
            payload = bytes(buf[start : start + n])
            at = start + n
            if opcode == 0x1:
                self.on_text(now, payload)
            elif opcode == 0x9:  # ping: answer, or uvicorn's keepalive drops us
                self.send_text(payload, 0xA)
            elif opcode == 0x8 and not self.closed.done():
                self.closed.set_result(payload)
        del buf[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(b"")


async def _open(port: int, on_text: Callable[[float, bytes], None]) -> _Lean:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: _Lean(on_text), LOOPBACK, port)
    await asyncio.wait_for(proto.upgraded, 60)
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


# -- the writes of a mix ----------------------------------------------------------------------


def _base(j: int) -> int:
    return (BASES - j) * SPACING


def _is_climb(mix: str, i: int) -> bool:
    return mix == "top" or (mix == "mix" and i % 2 == 1)


def _op(mix: str, i: int, members: int, rng: random.Random) -> tuple[str, int]:
    """(member, score) of write i: a climb to rank 1, or a bump that keeps a member's rank."""
    if _is_climb(mix, i):
        return f"c{i % CLIMBERS}", CLIMB + i
    j = rng.randrange(members)
    return f"m{j}", _base(j) + i


def _write_id(score: int) -> int:
    return score - CLIMB if score >= CLIMB else score % SPACING


async def _fill(port: int, members: int) -> None:
    """Put members m0.. on the board at their base scores, pipelined on one connection."""
    done = asyncio.get_running_loop().create_future()
    left = members

    def on_ack(now: float, payload: bytes) -> None:
        nonlocal left
        if not payload.startswith(b'{"type":"ack"'):
            raise RuntimeError(payload[:200])
        left -= 1
        if left == 0:
            done.set_result(None)

    proto = await _open(port, on_ack)
    for j in range(members):
        op = {"op": "score", "id": j, "board": BOARD, "member": f"m{j}", "score": _base(j)}
        proto.send_text(orjson.dumps(op))
    await asyncio.wait_for(done, 120)
    assert proto.transport is not None
    proto.transport.close()


async def _closed_loop(
    port: int, mix: str, members: int, writers: int, window: int, seconds: float, first: int
) -> float:
    """Acknowledged writes per second with ``writers`` x ``window`` ops in flight."""
    done = 0
    deadline = time.monotonic() + seconds
    rng = random.Random(first)

    async def one(w: int) -> None:
        n = 0
        in_flight = 0
        drained = asyncio.get_running_loop().create_future()

        def send() -> None:
            nonlocal n, in_flight
            n += 1
            in_flight += 1
            member, score = _op(mix, first + n * writers + w, members, rng)
            op = {"op": "score", "id": n, "board": BOARD, "member": member, "score": score}
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
        with contextlib.suppress(TimeoutError):  # acks in time were counted, the rest never
            await asyncio.wait_for(drained, seconds + ACK_GRACE)
        assert proto.transport is not None
        proto.transport.close()

    started = time.monotonic()
    await asyncio.gather(*(one(w) for w in range(writers)))
    return done / (time.monotonic() - started)


async def _open_loop(
    port: int, mix: str, members: int, rate: float, seconds: float, first: int
) -> dict[int, tuple[float, float]]:
    """Send ``rate`` writes/s for ``seconds``; returns write id -> (sent, acked) times."""
    total = int(rate * seconds)
    sent: dict[int, float] = {}
    times: dict[int, tuple[float, float]] = {}
    all_acked = asyncio.get_running_loop().create_future()
    rng = random.Random(first)

    def on_ack(now: float, payload: bytes) -> None:
        frame = orjson.loads(payload)
        assert frame["type"] == "ack", frame
        i = frame["id"]
        times[i] = (sent[i], now)
        if len(times) == total and not all_acked.done():
            all_acked.set_result(None)

    proto = await _open(port, on_ack)
    start = time.monotonic()
    for k in range(1, total + 1):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        i = first + k
        member, score = _op(mix, i, members, rng)
        sent[i] = time.monotonic()
        op = {"op": "score", "id": i, "board": BOARD, "member": member, "score": score}
        proto.send_text(orjson.dumps(op))
    with contextlib.suppress(TimeoutError):  # falling this far behind is a result: counted
        await asyncio.wait_for(all_acked, ACK_GRACE)
    assert proto.transport is not None
    proto.transport.close()
    return times


# -- the subscriber processes -----------------------------------------------------------------


def _watches_top(mix: str, k: int) -> bool:
    return mix == "top" or (mix == "mix" and k % 2 == 0)


async def _subscribers(
    port: int, mix: str, first: int, count: int, sample: int, out: Path, ready: Path
) -> None:
    """Open subscriptions first..first+count-1, touch ``ready``, record what each frame shows
    until a ``stop`` file appears next to ``ready``, then write the records to ``out``.

    Per subscriber: top views record (time, rank-1 score) per frame; around views record
    (time, 0) per frame and (time, write id) for each sampled write id a frame shows.
    """
    records: list[list[tuple[float, int]]] = [[] for _ in range(count)]
    frames = [0] * count
    protos: list[_Lean] = []

    def on_top(k: int) -> Callable[[float, bytes], None]:
        rec = records[k]

        def on_text(now: float, payload: bytes) -> None:
            if not payload.startswith(b'{"type":"top"'):
                raise RuntimeError(payload[:200])
            frames[k] += 1
            rec.append((now, _top_score(payload)))

        return on_text

    def on_around(k: int) -> Callable[[float, bytes], None]:
        rec = records[k]
        seen: set[int] = set()

        def on_text(now: float, payload: bytes) -> None:
            if not payload.startswith(b'{"type":"around"'):
                raise RuntimeError(payload[:200])
            frames[k] += 1
            rec.append((now, 0))  # 0 is no write id: a frame marker
            for entry in orjson.loads(payload)["entries"]:
                i = _write_id(entry["score"])
                if i and i % sample == 0 and i not in seen:
                    seen.add(i)
                    rec.append((now, i))

        return on_text

    async def one(k: int) -> _Lean:
        member = first + k
        if _watches_top(mix, member):
            proto = await _open(port, on_top(k))
            sub = {"op": "subscribe", "id": "t", "board": BOARD, "top": TOP}
        else:
            proto = await _open(port, on_around(k))
            sub = {"op": "subscribe", "id": "a", "board": BOARD, "member": f"m{member}"}
            sub["radius"] = RADIUS
        proto.send_text(orjson.dumps(sub))
        return proto

    for at in range(0, count, 100):  # 100 handshakes at a time
        protos += await asyncio.gather(*(one(k) for k in range(at, min(count, at + 100))))
    while not all(frames):  # everyone has its full state
        await asyncio.sleep(0.05)
    ready.touch()
    stop = ready.with_name("stop")
    while not stop.exists():
        await asyncio.sleep(0.05)
    dropped = sum(p.closed.done() for p in protos)
    for p in protos:
        assert p.transport is not None
        p.transport.close()
    kinds = [_watches_top(mix, first + k) for k in range(count)]
    out.write_bytes(orjson.dumps({"records": records, "top": kinds, "dropped": dropped}))


def _delays(
    records: list[list[tuple[float, int]]],
    kinds: list[bool],
    times: dict[int, tuple[float, float]],
    climbs: list[int],
    window: tuple[float, float],
) -> tuple[list[float], int]:
    """Ack -> frame delays for every (subscriber, sampled write) pair, and the frames received
    within ``window``. ``climbs``: the sampled climb ids, ascending."""
    delays: list[float] = []
    frames = 0
    lo, hi = window
    for rec, top in zip(records, kinds, strict=True):
        if top:
            k = 0
            for t, score in rec:
                if lo <= t <= hi:
                    frames += 1
                seen = score - CLIMB
                while k < len(climbs) and climbs[k] <= seen:
                    delays.append(t - times[climbs[k]][1])
                    k += 1
        else:
            first: dict[int, float] = {}
            for t, i in rec:
                if i == 0:
                    if lo <= t <= hi:
                        frames += 1
                elif i not in first:
                    first[i] = t
            delays.extend(t - times[i][1] for i, t in first.items() if i in times)
    return delays, frames


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


def _say(text: str) -> None:
    print(f"[bench_ws {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _split(n: int, procs: int) -> Iterator[tuple[int, int]]:
    step = -(-n // procs)
    for first in range(0, n, step):
        yield first, min(step, n - first)


def _run_one(
    args: argparse.Namespace, workdir: Path, label: str, tree: Path | None, mix: str
) -> dict[str, Any]:
    port = free_port()
    n = args.subscribers
    members = n + 1000
    run = workdir / f"{label}-{mix}"
    run.mkdir()
    with Children(run) as children:
        server = children.start(
            "rankd",
            [
                *(sys.executable, "-m", "service", "--port", str(port)),
                *("--data-dir", str(run / "data"), "--log-level", "warning"),
                *("--ws-connections", str(n + 100), "--max-connections", str(n + 200)),
                *(("--ws-tick", str(args.tick)) if args.tick is not None else ()),
            ],
            cwd=tree or HERE,  # python -m service imports the tree it runs in first
        )
        wait_http(server, port, "/readyz")
        result: dict[str, Any] = {"server": label, "mix": mix, "subscribers": n}
        asyncio.run(_fill(port, members))
        _say(f"{label}/{mix}: phase 1, closed-loop writes for {args.burst:g} s, no subscribers")
        result["throughput_without"] = asyncio.run(
            _closed_loop(port, mix, members, args.writers, args.window, args.burst, 1)
        )
        quiet = min(5.0, args.seconds)
        _say(f"{label}/{mix}: phase 1b, {args.rate:g} writes/s for {quiet:g} s, no subscribers")
        quiet0, loop0 = cpu_seconds(server.pid), cpu_seconds(server.pid, server.pid)
        began = time.monotonic()
        alone = asyncio.run(_open_loop(port, mix, members, args.rate, quiet, 2 * SPACING // 10))
        took = time.monotonic() - began
        result["ack_latency_without"] = _percentiles([a - s for s, a in alone.values()])
        # The writes' own cost: what the delay phase adds on top of it is the fan-out's.
        result["server_cpu_without"] = (cpu_seconds(server.pid) - quiet0) / took
        result["loop_cpu_without"] = (cpu_seconds(server.pid, server.pid) - loop0) / took
        _say(f"{label}/{mix}: phase 2, {n} subscribers in {args.procs} processes connect")
        ready = [run / f"ready-{k}" for k in range(args.procs)]
        outs = [run / f"subs-{k}.json" for k in range(args.procs)]
        subs = [
            children.start(
                f"subscribers-{k}",
                [
                    *(sys.executable, "-m", "loadtest.bench_ws", "--role", "subscribers"),
                    *("--port", str(port), "--mix", mix, "--first", str(first)),
                    *("--subscribers", str(count), "--sample", str(args.sample)),
                    *("--out", str(outs[k]), "--ready", str(ready[k])),
                ],
            )
            for k, (first, count) in enumerate(_split(n, args.procs))
        ]
        t0 = time.monotonic()
        while not all(r.exists() for r in ready):
            for s in subs:
                s.check_alive()
            if time.monotonic() - t0 > 180:
                raise RuntimeError("subscribers did not connect within 180 s")
            time.sleep(0.05)
        result["connect_seconds"] = time.monotonic() - t0
        _say(f"{label}/{mix}: phase 2, {args.rate:g} writes/s for {args.seconds:g} s")
        clients_cpu0 = sum(cpu_seconds(s.pid) for s in subs)
        cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
        loop0 = cpu_seconds(server.pid, server.pid)  # the event loop's thread alone
        first_id = 5 * SPACING // 10
        times = asyncio.run(_open_loop(port, mix, members, args.rate, args.seconds, first_id))
        wall1 = time.monotonic()
        result["server_cpu"] = (cpu_seconds(server.pid) - cpu0) / (wall1 - wall0)
        result["loop_cpu"] = (cpu_seconds(server.pid, server.pid) - loop0) / (wall1 - wall0)
        result["clients_cpu"] = (sum(cpu_seconds(s.pid) for s in subs) - clients_cpu0) / (
            wall1 - wall0
        )
        time.sleep(1.0)  # the last flush reaches everyone
        wall2 = time.monotonic()
        server_cpu_delay = cpu_seconds(server.pid) - cpu0
        _say(f"{label}/{mix}: phase 3, closed-loop writes for {args.burst:g} s, subscribers on")
        result["throughput_with"] = asyncio.run(
            _closed_loop(
                port, mix, members, args.writers, args.window, args.burst, 8 * SPACING // 10
            )
        )
        (run / "stop").touch()
        for s in subs:
            s.proc.wait(timeout=120)
        datas = [orjson.loads(o.read_bytes()) for o in outs]
    records = [r for d in datas for r in d["records"]]
    kinds = [k for d in datas for k in d["top"]]
    climbs = sorted(i for i in times if i % args.sample == 0 and _is_climb(mix, i))
    delays, frames = _delays(records, kinds, times, climbs, (wall0, wall2))
    result.update(
        delay_from_ack=_percentiles(delays),
        ack_latency=_percentiles([acked - sent for sent, acked in times.values()]),
        samples=len(delays),
        frames=frames,
        frames_per_s=frames / (wall2 - wall0),
        cpu_us_per_frame=server_cpu_delay / max(1, frames) * 1e6,
        subscribers_dropped=sum(d["dropped"] for d in datas),
        writes_unacked=int(args.rate * args.seconds) - len(times),
        loadavg=_loadavg(),
    )
    _say(f"{label}/{mix}: done, load average {result['loadavg']}")
    return result


def _report(r: dict[str, Any], args: argparse.Namespace) -> str:
    def ms(p: dict[str, float]) -> str:
        return " ".join(f"{k} {v * 1000:.1f}" for k, v in p.items()) or "no samples"

    return "\n".join(
        [
            f"{r['server']}: {r['subscribers']} subscribers, mix {r['mix']}, "
            f"{args.rate:g} writes/s for {args.seconds:g} s (load average {r['loadavg']})",
            f"  delay ack -> frame (ms):  {ms(r['delay_from_ack'])}  ({r['samples']} samples)",
            f"  write ack latency without subscribers (ms): {ms(r['ack_latency_without'])}; "
            f"server CPU {r['server_cpu_without'] * 100:.0f}% of a core "
            f"(event loop's thread {r['loop_cpu_without'] * 100:.0f}%)",
            f"  write ack latency (ms):   {ms(r['ack_latency'])}"
            + (
                f"  ({r['writes_unacked']} writes still unacked {ACK_GRACE:g} s after the phase)"
                if r["writes_unacked"]
                else ""
            ),
            f"  frames {r['frames']} ({r['frames_per_s']:.0f}/s), "
            f"dropped subscribers {r['subscribers_dropped']}, "
            f"server CPU {r['server_cpu'] * 100:.0f}% of a core "
            f"(event loop's thread {r['loop_cpu'] * 100:.0f}%; "
            f"{r['cpu_us_per_frame']:.1f} us/frame), clients CPU {r['clients_cpu'] * 100:.0f}%, "
            f"connect {r['connect_seconds']:.1f} s",
            f"  write throughput ({args.writers} WS writers x {args.window} in flight): "
            f"{r['throughput_without']:.0f}/s without subscribers, "
            f"{r['throughput_with']:.0f}/s with",
        ]
    )


def _ratios(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    by = {(r["server"], r["mix"]): r for r in results}
    for (server, mix), base in by.items():
        if server != "today" or ("this", mix) not in by:
            continue
        this = by[("this", mix)]
        lines.append(
            f"this / today, mix {mix}: server CPU {this['server_cpu'] / base['server_cpu']:.2f}x, "
            f"CPU per frame {this['cpu_us_per_frame'] / base['cpu_us_per_frame']:.2f}x, "
            f"frames/s {this['frames_per_s'] / max(1, base['frames_per_s']):.2f}x, ack->frame p99 "
            f"{this['delay_from_ack'].get('p99', 0) * 1000:.0f} vs "
            f"{base['delay_from_ack'].get('p99', 0) * 1000:.0f} ms"
        )
    return lines


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`, which kills children


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--procs", type=int, help=f"client processes (default: 1 per {PER_PROCESS})")
    p.add_argument("--mixes", default="top", help=f"comma-separated, of {', '.join(MIXES)}")
    p.add_argument("--rate", type=float, default=500.0, help="writes/s in the delay phase")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the delay phase")
    p.add_argument("--burst", type=float, default=3.0, help="length of each throughput phase")
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--sample", type=int, default=5, help="measure every n-th write's delay")
    p.add_argument("--tick", type=float, help="the servers' --ws-tick (default: theirs, 0.1 s)")
    p.add_argument("--baseline", type=Path, help="a rankd source tree to run as 'today' first")
    p.add_argument("--quick", action="store_true", help="100 subscribers, 2 s phases")
    p.add_argument("--event", action="store_true", help="10,000 subscribers, every mix")
    p.add_argument("--deadline", type=int, default=1200, help="hard bound on the run, seconds")
    p.add_argument("--json", type=Path, help="also write the raw numbers here")
    p.add_argument(
        "--role", choices=["main", "subscribers"], default="main", help=argparse.SUPPRESS
    )
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mix", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    _raise_fd_limit()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(args.deadline)
    if args.role == "subscribers":
        uvloop.run(
            _subscribers(
                args.port, args.mix, args.first, args.subscribers, args.sample, args.out, args.ready
            )
        )
        return
    if args.quick:
        args.subscribers, args.seconds, args.burst = 100, 2.0, 2.0
    if args.event:
        args.subscribers, args.mixes = 10_000, ",".join(MIXES)
    args.procs = args.procs or max(1, -(-args.subscribers // PER_PROCESS))
    mixes = args.mixes.split(",")
    if not set(mixes) <= set(MIXES):
        p.error(f"--mixes takes {', '.join(MIXES)}, but got {args.mixes!r}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_ws.") as tmp:
        for mix in mixes:
            if args.baseline is not None:
                if mix == "top" or _has_around(args.baseline):
                    results.append(_run_one(args, Path(tmp), "today", args.baseline, mix))
                else:
                    _say(f"today/{mix}: skipped, {args.baseline} has no around subscriptions")
            results.append(_run_one(args, Path(tmp), "this", None, mix))
    signal.alarm(0)
    tick = f"--ws-tick {args.tick:g}" if args.tick is not None else "the default --ws-tick (0.1 s)"
    print(f"rankd /v1/ws fan-out, {os.cpu_count()} CPUs, {args.procs} client processes, {tick}")
    for r in results:
        print(_report(r, args))
    for line in _ratios(results):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _has_around(tree: Path) -> bool:
    return '"radius"' in (tree / "service" / "ws.py").read_text()


if __name__ == "__main__":
    main()
