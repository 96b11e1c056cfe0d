"""The floor under WebSocket fan-out: what one send() of a frame costs on this machine.

    python -m loadtest.bench_send_floor                    # 1,000, 5,000 and 10,000 sockets
    python -m loadtest.bench_send_floor --sockets 10000 --size 624

The hub's last step is one ``send()`` per subscriber per changed view (service/hub/wire.py).
This measures that step with nothing else around it: a sender process writes a ``--size``-byte
frame to each of N loopback TCP connections in a burst every ``--tick`` seconds (as a flush
does), while a reader process (uvloop) takes them in; it prints the sender's CPU per send,
user and system. On loopback the sender's system time includes the TCP receive path of the
other end (the kernel runs it in the sending call), as it does for rankd in bench_ws.

Bounded: ``--seconds`` per size, loopback only, the reader is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import time

import uvloop

from loadtest._procs import LOOPBACK


def _reader(port: int, n: int, seconds: float) -> None:
    class Sink(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            await loop.create_connection(Sink, LOOPBACK, port)
        await asyncio.sleep(seconds + 30)

    signal.alarm(int(seconds) + 60)  # stops by itself whatever the parent does
    uvloop.run(main())


def measure(n: int, size: int, seconds: float, tick: float) -> dict[str, float]:
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(4096)
        port = listener.getsockname()[1]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the reader
            try:
                _reader(port, n, seconds)
            finally:
                os._exit(0)
        conns: list[socket.socket] = []
        try:
            for _ in range(n):
                c, _ = listener.accept()
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                c.setblocking(False)
                conns.append(c)
            frame = b"x" * size
            sent = 0
            t0 = time.monotonic()
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            while time.monotonic() - t0 < seconds:
                began = time.monotonic()
                for c in conns:
                    c.send(frame)
                    sent += 1
                time.sleep(max(0.0, tick - (time.monotonic() - began)))
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            wall = time.monotonic() - t0
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            for c in conns:
                c.close()
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {
        "sends_per_s": sent / wall,
        "core": (user + system) / wall,
        "us_per_send": (user + system) / sent * 1e6,
        "user_us": user / sent * 1e6,
        "sys_us": system / sent * 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sockets", type=int, action="append", help="default: 1000, 5000, 10000")
    p.add_argument("--size", type=int, default=624, help="frame bytes (a top-10 frame: ~624)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--tick", type=float, default=0.1)
    args = p.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"send() floor: {os.cpu_count()} CPUs, {args.size}-byte frames, a burst every "
          f"{args.tick:g} s for {args.seconds:g} s, loopback TCP")  # fmt: skip
    for n in args.sockets or [1000, 5000, 10000]:
        r = measure(n, args.size, args.seconds, args.tick)
        print(
            f"  {n:>6} sockets: {r['sends_per_s']:,.0f} sends/s, sender {r['core']:.0%} of a "
            f"core, {r['us_per_send']:.1f} us/send (user {r['user_us']:.1f}, system "
            f"{r['sys_us']:.1f})"
        )


if __name__ == "__main__":
    main()
