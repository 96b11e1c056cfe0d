"""What calling a route handler costs, by how its dependencies reach it (STYLE.md rule 15).

    python -m loadtest.bench_handler_call            # 500,000 calls x 9 rounds, ~30 s

A coroutine function shaped like ``post_score`` is created and run to completion, three ways,
alternated each round, in process CPU time:

* ``locator``: ``handler(rt, request)`` reaching ``rt.settings.limits``, ``rt.auth``,
  ``rt.backend.boards``, ``rt.metrics`` (the handlers before);
* ``star``: ``handler(request, *deps)`` (CALL_FUNCTION_EX);
* ``closure``: a closure calling ``handler(request, a, b, c, d)`` (service/app.py ``_bound``).

Results: loadtest/RESULTS.md, "Handlers name their dependencies".
"""

import argparse
import statistics
import time
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

Run = Callable[[int], None]


def _drive(coro: Coroutine[Any, Any, None]) -> None:
    try:  # noqa: SIM105 -- contextlib.suppress would add its own cost to every call measured
        coro.send(None)
    except StopIteration:
        pass


def _runs() -> dict[str, Run]:
    limits = SimpleNamespace(body_bytes=65536)
    boards, metrics = SimpleNamespace(), SimpleNamespace()
    rt = SimpleNamespace(
        settings=SimpleNamespace(limits=limits),
        auth=None,
        backend=SimpleNamespace(boards=boards),
        metrics=metrics,
    )

    async def old(rt: Any, request: object) -> None:
        _ = (rt.settings.limits.body_bytes, rt.auth is not None, rt.backend.boards, rt.metrics)

    async def new(request: object, limits: Any, auth: Any, boards: Any, metrics: Any) -> None:
        _ = (limits.body_bytes, auth is not None, boards, metrics)

    deps = (limits, None, boards, metrics)

    def closure(request: object) -> Coroutine[Any, Any, None]:
        return new(request, limits, None, boards, metrics)

    def locator(n: int) -> None:
        for _ in range(n):
            _drive(old(rt, None))

    def star(n: int) -> None:
        for _ in range(n):
            _drive(new(None, *deps))

    def bound(n: int) -> None:
        for _ in range(n):
            _drive(closure(None))

    return {"locator": locator, "star": star, "closure": bound}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_handler_call")
    p.add_argument("--calls", type=int, default=500_000)
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args()
    runs = _runs()
    ns: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        order = list(runs.items())
        order = order[r % len(order) :] + order[: r % len(order)]
        for name, run in order:
            t = time.process_time()
            run(args.calls)
            ns[name].append((time.process_time() - t) / args.calls * 1e9)
    for name, values in ns.items():
        print(f"{name:8} median {statistics.median(values):4.0f} ns, best {min(values):4.0f} ns")


if __name__ == "__main__":
    main()
