"""Per-request CPU cost inside the process: no network, no wrk, no kernel.

Run from a source tree's root so that tree's ``service`` and ``store`` load (``PYTHONPATH=.``);
run it in two trees, alternated, to compare versions (e.g. ``git archive main`` in /tmp):

    PYTHONPATH=. python -m loadtest.bench_inproc            # 20,000 requests x 7 rounds

Two measures, each the median and best of the rounds, in process CPU time:

* ``http``: ``await app(scope, receive, send)`` with the lifespan running (``--fsync no``):
  POST /scores, then GET /top?limit=10 -- everything rankd does per request except HTTP parsing.
* ``write``: only the write path the POST route calls (``rt.backend.boards.write``, or
  ``service.writes.score`` in trees from before the backend seam), no persistence.

Results: loadtest/RESULTS.md, "The backend seam".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from service.app import create_app
from service.settings import Settings

Message = dict[str, Any]


def _scope(method: str, path: str, body_len: int = 0, qs: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": qs,
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(body_len).encode()),
        ],
    }


def _summary(name: str, rounds: list[float]) -> str:
    return f"{name} median {statistics.median(rounds):.2f} best {min(rounds):.2f} µs/req"


async def _http(n: int, rounds: int) -> str:
    settings = dataclasses.replace(
        Settings(), data_dir=Path(tempfile.mkdtemp()), fsync="no", snapshot_interval=0
    )
    app = create_app(settings)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    started = asyncio.Event()

    async def lsend(msg: Message) -> None:
        if msg["type"] == "lifespan.startup.complete":
            started.set()

    await inbox.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(app({"type": "lifespan", "state": {}}, inbox.get, lsend))
    await started.wait()
    rt = app.state.rankd
    while not (rt.backend.ready if hasattr(rt, "backend") else rt.ready):
        await asyncio.sleep(0.01)

    async def send(msg: Message) -> None:
        pass

    bodies = [f'{{"member":"m{i % 100_000}","score":{i % 9973}}}'.encode() for i in range(n)]

    async def posts() -> float:
        t0 = time.process_time()
        for body in bodies:

            async def receive(body: bytes = body) -> Message:
                return {"type": "http.request", "body": body, "more_body": False}

            await app(_scope("POST", "/v1/boards/bench/scores", len(body)), receive, send)
        return (time.process_time() - t0) / n * 1e6

    async def tops() -> float:
        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        t0 = time.process_time()
        for _ in range(n):
            await app(_scope("GET", "/v1/boards/bench/top", qs=b"limit=10"), receive, send)
        return (time.process_time() - t0) / n * 1e6

    await posts()  # warm-up; fills the board
    post_rounds, top_rounds = [], []
    for _ in range(rounds):
        post_rounds.append(await posts())
        top_rounds.append(await tops())
    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan
    return f"http: {_summary('POST score', post_rounds)}; {_summary('GET top', top_rounds)}"


def _write(n: int, rounds: int) -> str:
    rt = create_app(Settings()).state.rankd
    call: Callable[[str, int], Coroutine[Any, Any, Any]]
    if hasattr(rt, "backend"):
        boards = rt.backend.boards

        def call(member: str, score: int) -> Coroutine[Any, Any, Any]:
            return boards.write("bench", member, score, None)
    else:  # a tree from before the backend seam
        from service import writes  # type: ignore[attr-defined]

        def call(member: str, score: int) -> Coroutine[Any, Any, Any]:
            return writes.score(rt, "bench", member, score, None)  # type: ignore[no-any-return]

    items = [(f"m{i % 100_000}", i % 9973) for i in range(n * 10)]

    def once() -> float:
        t0 = time.process_time()
        for member, score in items:
            coro = call(member, score)
            # Not contextlib.suppress: a context manager per call would be measured too.
            try:  # noqa: SIM105
                coro.send(None)
            except StopIteration:
                pass
        return (time.process_time() - t0) / len(items) * 1e6

    once()
    return "write: " + _summary("write path", [once() for _ in range(rounds + 2)])


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_inproc", description=__doc__)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    print(asyncio.run(_http(args.requests, args.rounds)))
    print(_write(args.requests, args.rounds))


if __name__ == "__main__":
    main()
