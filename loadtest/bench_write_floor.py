"""What one isolated write costs the server: rankd's WebSocket ``score`` op at a steady rate.

    python -m loadtest.bench_write_floor                 # 500 writes/s for 10 s
    python -m loadtest.bench_write_floor --rate 100 --seconds 20

Issue #17 asks a 1,000-subscriber board at 500 writes/s to cost a third of what it did. The
writes arrive one at a time there, not pipelined, and a server that sleeps between them pays
for waking up on every one: the event loop's epoll wait, the journal's I/O thread and back.
This runs the same paced writer (one WebSocket, ``--rate`` score ops a second, each sent on
its own, the way bench_ws's writer sends them) against, side by side in one run:

    lean-parsed     loadtest/lean_ws.py: websockets' sans-I/O parser on a plain uvloop protocol,
                    the op answered in the callback (no framework: the Python floor)
    lean-queued     the same, each message handed to a task by a queue, as ASGI servers do
    bare            uvicorn + loadtest/bare_app.py ``/v1/ws`` (parse, answer an ack: the floor
                    of the stack rankd runs on)
    rankd-no        rankd --fsync no: the store and the journal's writes, never an fsync
    rankd           rankd as it runs by default (--fsync everysec)

and prints each server's CPU per write (user and system, all its threads) and context
switches per write. Loopback only; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

from loadtest._procs import LOOPBACK, Children, free_port, wait_http, wait_port
from loadtest.bench_ws import _open

HERE = Path(__file__).resolve().parent.parent


def _switches(pid: int) -> int:
    """Context switches of every thread of ``pid`` so far (voluntary + involuntary)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # a thread that ended meanwhile
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def _user_system(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid``, all its threads (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def _paced(port: int, rate: float, seconds: float) -> int:
    """Send ``rate`` score ops a second for ``seconds``, each on its own; returns acks seen."""
    acked = 0

    def on_ack(now: float, payload: bytes) -> None:
        nonlocal acked
        if not payload.startswith(b'{"type":"ack"'):
            raise RuntimeError(payload[:200])
        acked += 1

    proto = await _open(port, on_ack)
    total = int(rate * seconds)
    start = time.monotonic()
    for k in range(total):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        op = {"op": "score", "id": k, "board": "floor", "member": f"m{k % 1000}", "score": k}
        proto.send_text(orjson.dumps(op))
    deadline = time.monotonic() + 10
    while acked < total and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert proto.transport is not None
    proto.transport.close()
    return acked


def measure(kind: str, rate: float, seconds: float, workdir: Path) -> dict[str, float]:
    port = free_port()
    (workdir / kind).mkdir()
    with Children(workdir / kind) as kids:
        if kind.startswith("lean-"):
            argv = [sys.executable, "-m", "loadtest.lean_ws", str(port), kind[len("lean-") :]]
            server = kids.start(kind, argv, cwd=HERE)
            wait_port(server, port)
        elif kind == "bare":
            argv = [sys.executable, "-m", "uvicorn", "loadtest.bare_app:app"]
            argv += [f"--host={LOOPBACK}", f"--port={port}", "--loop=uvloop"]
            argv += ["--http=httptools", "--no-access-log", "--ws-per-message-deflate=false"]
            server = kids.start(kind, argv, cwd=HERE)
            wait_http(server, port, "/v1/boards/b/top")
        else:
            fsync = "no" if kind == "rankd-no" else "everysec"
            argv = [sys.executable, "-m", "service", f"--host={LOOPBACK}", f"--port={port}"]
            argv += [f"--data-dir={workdir / kind / 'data'}", f"--fsync={fsync}"]
            argv += ["--log-level=warning"]
            server = kids.start(kind, argv, cwd=HERE)
            wait_http(server, port, "/readyz")
        asyncio.run(_paced(port, rate, 1.0))  # warm up: connections, first board
        time.sleep(1.0)
        pid = server.pid
        (user0, sys0), sw0 = _user_system(pid), _switches(pid)
        acked = asyncio.run(_paced(port, rate, seconds))
        (user1, sys1), sw1 = _user_system(pid), _switches(pid)
    n = max(acked, 1)
    cpu = user1 - user0 + sys1 - sys0
    return {
        "acked": acked,
        "core": cpu / seconds,
        "us": cpu / n * 1e6,
        "user_us": (user1 - user0) / n * 1e6,
        "sys_us": (sys1 - sys0) / n * 1e6,
        "switches": (sw1 - sw0) / n,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=500.0, help="writes per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--servers", default="lean-parsed,lean-queued,bare,rankd-no,rankd")
    args = p.parse_args(argv)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(
        f"isolated writes: {args.rate:g}/s for {args.seconds:g} s over one WebSocket, "
        f"{os.cpu_count()} CPUs, load average {load}"
    )
    with tempfile.TemporaryDirectory(prefix="rankd-write-floor-") as tmp:
        for kind in args.servers.split(","):
            r = measure(kind, args.rate, args.seconds, Path(tmp))
            print(
                f"  {kind:11} {r['core']:6.1%} of a core, {r['us']:6.1f} us/write "
                f"(user {r['user_us']:.1f}, system {r['sys_us']:.1f}), "
                f"{r['switches']:.1f} context switches/write, {r['acked']:,} acked",
                flush=True,
            )


if __name__ == "__main__":
    main()
