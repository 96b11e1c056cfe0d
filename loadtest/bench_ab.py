"""One endpoint, side by side: two rankd source trees (e.g. main and a branch), interleaved.

bench_http.py compares stacks; this compares *versions* of rankd, for a change that must not
cost throughput (issue #12's bar: within 3% CPU per POST score; issue #14's: POST score and
GET top of a one-window board within 3% of before seasons). Each tree runs as
``python -m service --fsync no --snapshot-interval 0`` from its own directory (so its own
``service`` and ``store`` packages load), gets the same --members board, and wrk's
``--workload`` (_wrk.py: post_score by default, get_top, get_member) drives the trees in
turn, alternating who goes first, for --rounds rounds. Reported: median req/s and median
CPU µs per request of each, and the ratios B ÷ A. CPU per request is the number to trust on
a shared machine.

    git archive main | tar -x -C /tmp/rankd-main
    python -m loadtest.bench_ab --a /tmp/rankd-main --b . --rounds 5 --duration 5
    python -m loadtest.bench_ab --a /tmp/rankd-main --b . --workload get_top

Loopback only; children are killed on exit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from loadtest._procs import LOOPBACK, Children, cpu_seconds, free_port, wait_http
from loadtest._stacks import fill_rankd
from loadtest._wrk import BOARD, WORKLOADS, run_wrk, write_script


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_ab", description=__doc__)
    p.add_argument("--a", type=Path, required=True, help="baseline source tree")
    p.add_argument("--b", type=Path, required=True, help="changed source tree")
    p.add_argument("--workload", choices=WORKLOADS, default="post_score")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--members", type=int, default=100_000)
    args = p.parse_args(argv)
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    with tempfile.TemporaryDirectory(prefix="rankd-ab-") as tmp, Children(Path(tmp)) as kids:
        workdir = Path(tmp)
        script = write_script(workdir, args.workload, args.members)
        running: dict[str, tuple[int, int]] = {}
        for name, tree in trees.items():
            port = free_port()
            data = workdir / f"{name}-data"
            data.mkdir()
            argv = [sys.executable, "-m", "service", f"--host={LOOPBACK}", f"--port={port}"]
            argv += [f"--data-dir={data}", "--fsync=no", "--snapshot-interval=0"]
            child = kids.start(name, argv, cwd=tree)
            wait_http(child, port, "/readyz", timeout=60)
            fill_rankd(port, BOARD, args.members)
            run_wrk(script, port, duration=1, connections=args.connections, threads=1)
            running[name] = (port, child.pid)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in running}
        for rnd in range(args.rounds):
            order = list(running) if rnd % 2 == 0 else list(running)[::-1]
            for name in order:
                port, pid = running[name]
                before = cpu_seconds(pid)
                wrk = run_wrk(
                    script, port, duration=args.duration, connections=args.connections, threads=1
                )
                cpu_us = (cpu_seconds(pid) - before) / max(wrk.requests, 1) * 1e6
                results[name].append((wrk.rps, cpu_us))
                print(
                    f"  round {rnd + 1} {name}: {wrk.rps:7.0f} req/s {cpu_us:6.1f} CPU µs/req "
                    f"p99 {wrk.p99_ms:6.2f} ms errors {wrk.errors}",
                    file=sys.stderr,
                )
    med = {
        name: (statistics.median(r for r, _ in rs), statistics.median(c for _, c in rs))
        for name, rs in results.items()
    }
    print(f"{args.workload}, {args.rounds} rounds of {args.duration:g} s, {args.members} members")
    print("| tree | source | req/s (median) | CPU µs/req (median) |")
    print("| --- | --- | ---: | ---: |")
    for name, (rps, cpu) in med.items():
        print(f"| {name} | `{trees[name]}` | {rps:.0f} | {cpu:.1f} |")
    (ra, ca), (rb, cb) = med["A"], med["B"]
    print(f"\nB ÷ A: req/s {rb / ra:.3f}, CPU µs/req {cb / ca:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
