"""The WebSocket hub alone, in-process: CPU per offered frame, this tree against another.

    python -m loadtest.bench_hub --baseline /path/to/other/tree          # 7 rounds per mix
    python -m loadtest.bench_hub --rounds 3 --mixes top

bench_ws.py measures the whole server (sockets, HTTP parsing, the writes, the clients on the
same two cores); at ~25 us of server CPU per frame the hub's own share is well under a
microsecond, far below that benchmark's run-to-run noise. This one isolates the hub: one
embedded backend, 1,000 subscribers whose ``offer`` does nothing, 2,000 ticks of 5 writes
(500 writes/s at the default 0.1 s tick) each followed by ``hub.flush()``; ``time.process_time``
over the ticks divided by the frames offered.

* ``top``    -- 1,000 subscribers of the top 10 sharing one id; every write climbs to rank 1,
  so every tick changes the one view everybody shares (the hot delivery loop).
* ``around`` -- subscriber k watches radius 2 around ``m<k>``; writes bump members in place
  (bases 1,000 apart), so a tick changes the few views that show a written rank (change
  detection, the around index, one lookup per moved view).

Each round runs both trees in fresh processes, alternating which goes first; the ratio is
of medians (and of minimums, the least disturbed run on a shared box).
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
MIXES = ("top", "around")


class _Peer:
    send_started = None

    def offer(self, key: object, frame: bytes) -> None:
        pass

    def close_soon(self, code: int, reason: str) -> None:
        pass


async def _one(mix: str) -> float:
    import service

    assert Path(service.__file__).resolve().parent.parent == Path.cwd().resolve(), service
    from service.backend.embedded import EmbeddedBackend
    from service.hub import Hub
    from service.settings import Settings

    backend = EmbeddedBackend(Settings())
    ks = backend._keyspace
    hub = Hub(backend, backend.settings.limits)
    await hub.start()
    for i in range(2000):
        ks.write("b", f"m{i}", i * 1000)
    for k in range(1000):
        if mix == "top":
            hub.subscribe_top(_Peer(), '{"type":"top","id":"t"', "b", 10)
        else:
            hub.subscribe_around(_Peer(), f'{{"type":"around","id":{k}', "b", f"m{k}", 2)
    hub.flush()
    offered = hub.frames_offered
    start = time.process_time()
    for tick in range(2000):
        for j in range(5):
            w = tick * 5 + j
            if mix == "top":
                ks.write("b", f"c{w % 1000}", 10**9 + w)
            else:
                m = (w * 7919) % 1000
                ks.write("b", f"m{m}", m * 1000 + 1 + w % 500)
        hub.flush()
    spent = time.process_time() - start
    await hub.stop()
    return spent / (hub.frames_offered - offered) * 1e6


def _run(tree: Path, mix: str) -> float:
    out = subprocess.run(
        # This file, importing the tree's service package (PYTHONPATH comes before the venv).
        [sys.executable, __file__, "--child", mix],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return float(out.stdout.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--baseline", type=Path, help="another rankd source tree to compare with")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--mixes", default=",".join(MIXES))
    p.add_argument("--child", choices=MIXES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(f"{asyncio.run(_one(args.child)):.4f}")
        return
    trees = {"this": HERE}
    if args.baseline is not None:
        trees = {"base": args.baseline.resolve(), "this": HERE}
    print(f"hub CPU per offered frame (us), {args.rounds} rounds, load {os.getloadavg()}")
    for mix in args.mixes.split(","):
        got: dict[str, list[float]] = {name: [] for name in trees}
        for r in range(args.rounds):
            names = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in names:
                got[name].append(_run(trees[name], mix))
        for name, values in got.items():
            shown = " ".join(f"{v:.3f}" for v in sorted(values))
            print(f"  {mix:6} {name}: median {statistics.median(values):.3f} [{shown}]")
        if "base" in got:
            med = statistics.median(got["this"]) / statistics.median(got["base"])
            low = min(got["this"]) / min(got["base"])
            print(f"  {mix:6} this / base: median {med:.2f}x, min {low:.2f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
