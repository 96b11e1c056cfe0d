"""The connection layer's own cost per request, in process: uvicorn's HttpToolsProtocol vs
rankd's GuardedProtocol (service/connections.py), with no sockets, no wrk and no store.

Over loopback the difference between two rankd builds drowns in the noise of a shared 2-core
box (bench_ab.py rounds swing ±20 %). Here one protocol object is fed a POST score request
(the bench's bytes) by a fake transport, a trivial ASGI app reads the body and answers, and
process CPU time is divided by the requests: what remains is parsing, the ASGI cycle and
whatever the subclass adds (head counting, phase bookkeeping) or removes (uvicorn's per-request
keep-alive timer). Rounds alternate the two classes.

    python -m loadtest.bench_protocol --rounds 15 --requests 10000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.connections import protocol_class
from service.settings import ServiceLimits

BODY = b'{"member":"player:0000123","score":123456}'
REQUEST = (
    b"POST /v1/boards/bench/scores HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
) + BODY


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class App:
    def __init__(self) -> None:
        self.done = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})
        self.done.set()


async def cpu_per_request(cls: type[HttpToolsProtocol], requests: int) -> float:
    app = App()
    config = Config(app, http=cls, lifespan="off", log_config=None, access_log=False)
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(FakeTransport())
    began = time.process_time()
    for _ in range(requests):
        app.done.clear()
        protocol.data_received(REQUEST)
        await app.done.wait()
        await asyncio.sleep(0)  # let uvicorn finish the cycle, as the loop would
    return (time.process_time() - began) / requests * 1e6


async def run(rounds: int, requests: int) -> None:
    classes = {
        "uvicorn HttpToolsProtocol": HttpToolsProtocol,
        "rankd GuardedProtocol": protocol_class(ServiceLimits(), 10_000),
    }
    results: dict[str, list[float]] = {name: [] for name in classes}
    for rnd in range(rounds):
        order = list(classes) if rnd % 2 == 0 else list(classes)[::-1]
        for name in order:
            results[name].append(await cpu_per_request(classes[name], requests))
    # Interference from other processes only ever adds CPU time (cache misses, a busy sibling
    # hyperthread), so the minimum is the steadiest estimate on a shared box; both are shown.
    print("| protocol | CPU µs/request: min | median |")
    print("| --- | ---: | ---: |")
    for name, values in results.items():
        print(f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} |")
    (base_min, base_med), (ours_min, ours_med) = (
        (min(v), statistics.median(v)) for v in results.values()
    )
    print(
        f"\nGuardedProtocol minus HttpToolsProtocol: {ours_min - base_min:+.1f} µs (min), "
        f"{ours_med - base_med:+.1f} µs (median) per request"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_protocol", description=__doc__)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--requests", type=int, default=10_000)
    args = p.parse_args(argv)
    uvloop.run(run(args.rounds, args.requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
