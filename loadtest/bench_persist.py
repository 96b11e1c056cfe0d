"""Persistence costs at scale: snapshot time and event-loop stall, recovery speed, journal rates.

Run: .venv/bin/python loadtest/bench_persist.py [--entries 1000000] [--sessions 1000000]
                                                [--boards 1] [--seconds 3] [--quick]

Steps (each printed as it finishes, then a summary table):

1. build     ``--entries`` board entries (spread over ``--boards``) and ``--sessions`` sessions
2. save      store.disk.snapshot.save in this process: the work a snapshot child does, minus fork
3. recover   a fresh Persistence.recover() of that directory: entries/s and sessions/s
4. bgsave    Persistence.snapshot() on a running uvloop while a writer keeps writing and a
             ticker coroutine (1 ms sleeps) records the longest gap between its wake-ups: the
             longest event-loop stall during the snapshot, fork included; ``child_s`` is the
             child alone (fork to its report), the rest is the parent's journal round trips
5. journal   write+commit throughput per fsync policy: 64 concurrent writers for ``--seconds``
             each, in process (no HTTP), plus fsyncs per second, mean fsync latency and the
             longest time a record sat appended but not yet written to the file
6. replay    recovery of the ``always`` run's journal: records/s

``--stall`` runs one more experiment instead (issue #10, item 7): the real app served by
uvicorn in this process, a poller *process* hitting ``GET /healthz`` back to back (the longest
answer it waited for) and a 1 ms ticker on the loop (the longest gap between its wake-ups),
while the loop creates ``--new`` sessions (CHUNK per loop turn), then runs the periodic
snapshot step, ``--intervals`` times. ``--refreeze old`` reproduces the pre-fix policy for
comparison (a full ``gc.collect()`` + ``gc.freeze()`` after each snapshot, no freezer task).
"longest collection" is the longest cyclic-GC run in the phase (gc.callbacks). The wall-clock
stall columns include time the process was descheduled by other load on the machine; the
loop stall's CPU column (the longest CPU time the loop thread spent without yielding) does
not. "Of the longest" splits the longest wall-clock stall: the loop thread's CPU time over it;
its run-queue delay (/proc/self/task/<tid>/schedstat: runnable, waiting for a CPU); and the
steal time the machine's vCPUs reported over it (/proc/stat, all vCPUs summed, in 10 ms
ticks: a rough split): time the hypervisor of a virtual machine ran something else, which no
program inside it can prevent; and the loop thread's page faults over it. What none of them
holds is time the thread slept (a lock, a page fault waiting for one). "Unaccounted": a
process per CPU, pinned to it and sleeping 1 ms at a time (``_SLEEPER``), woke late within
the stall for longer than its own CPU and run-queue wait explain: the hypervisor held that
vCPU without reporting it as steal; the guest then charges that time to whatever thread was
running there, so the loop's CPU column includes it. "Longest create turn": the longest run
of the benchmark's own CHUNK creates, which execute back to back without yielding; a stall
that equals it was the load generator's batch running slowly, not something the server did
between batches.

    .venv/bin/python loadtest/bench_persist.py --stall --new 250000 --intervals 2

``--stacks`` adds what the loop was running in each stall over 50 ms: a watchdog process
reads the loop's heartbeat from shared memory and, 30 ms into a stall, dumps the loop
thread's Python stack with ``py-spy dump --nonblocking`` (a dev dependency); the dumps are
printed under each stall before the table, with every create turn over 50 ms (and its
slowest create) and every callback over 50 ms (asyncio's debug mode, which costs some speed).

Numbers depend on the disk (fsync latency) and on other load on the machine; the command
line and the machine's core count are printed with the results.

Recorded results, ``.venv/bin/python loadtest/bench_persist.py`` (1M entries + 1M sessions,
2-core dev VM shared with other work; ``uptime`` load average before -> after each run):

    metric                        before (c44cbf8)  raw keys (4ff2af5)  + GIL nudge (edba67e)
    load average                  0.85 -> 1.08      0.39 -> 0.81        0.72 -> 1.52
    save (in process, s)          4.33              3.04                3.29
    recover entries/s             451,518           1,059,968           917,622
    recover sessions/s            186,726           219,899             192,624
    bgsave total / child (s)      13.16 / -         6.63 / 3.85         7.09 / 7.08
    fork / longest loop stall ms  28.0 / 32         25.4 / 26           26.7 / 48
    always: writes/s, fsyncs/s    49,276, 770       48,399, 756         39,648, 620
    everysec: writes/s, fsyncs/s  85,863, 0         82,127, 0           82,123, 0.7
    everysec / no: unwritten (s)  - / -             1.70 / 2.56         0.00 / 0.00
    replay records/s              150,873           152,694             162,438

Before edba67e the journal's I/O thread starved behind the busy loop (journal_flusher.py
``run_io``): everysec never fsynced in 3 s, records waited seconds in memory, and the snapshot
parent waited seconds for its new segment; the higher write rates of those runs were partly
writes that had not reached the file. Run to run, recovery rates vary +-15% with the load.
"""

import argparse
import asyncio
import gc
import logging
import mmap
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import IO, Any, TypeVar

from service.backend.persistence import Persistence
from service.settings import ServiceLimits, Settings
from store.clock import SystemClock
from store.disk import bgsave, snapshot
from store.keyspace import Keyspace
from store.sessions import SessionStore

_T = TypeVar("_T")
BATCH = 1000
_TRACE_GAPS = bool(os.environ.get("RANKD_BENCH_TRACE_GAPS"))
# --stall: sessions created per loop turn, back to back. A serving rankd creates one per
# request, between which the loop runs its other callbacks; the benchmark batches them to
# keep its own overhead down. 250 was meant as ~2 ms, but the longest turn of a 1M phase
# measured 8-17 ms on a quiet box and 43-64 ms when the host slowed the vCPU: the load
# generator's batch, not the server, was then the phase's longest stall. 50 keeps a turn
# at a few ms.
CHUNK = 50


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stores() -> tuple[Keyspace, SessionStore]:
    clock = SystemClock()
    return Keyspace(), SessionStore(clock, max_sessions_per_user=1_000_000)


def _persistence(directory: Path, fsync: str, ks: Keyspace, ss: SessionStore) -> Persistence:
    settings = Settings(data_dir=directory, fsync=fsync, snapshot_interval=0)  # type: ignore[arg-type]
    return Persistence(settings, ks, ss, SystemClock())


def build(entries: int, sessions: int, boards: int) -> tuple[Keyspace, SessionStore, float]:
    began = time.perf_counter()
    gc.disable()  # building is not what is measured; a GC walking 2M objects triples it
    ks, ss = _stores()
    per_board = -(-entries // boards)
    for b in range(boards):
        board = ks.board_for_write(f"board{b}")
        n = min(per_board, entries - b * per_board)
        for start in range(0, n, BATCH):
            board.write_many(
                [
                    (
                        f"player{i:08d}",
                        (i * 7919) % 100_000,
                        {"lvl": i % 50} if i % 10 == 0 else None,
                    )
                    for i in range(start, min(start + BATCH, n))
                ]
            )
    data = {"cart": [1, 2, 3], "theme": "dark"}
    for i in range(sessions):
        ss.create(user=f"user{i % (sessions // 5 + 1)}", data=data)
    gc.enable()
    return ks, ss, time.perf_counter() - began


async def _ticker(stop: asyncio.Event, gaps: list[float]) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = loop.time()
        gaps.append(now - last - 0.001)
        last = now


async def _writer(stop: asyncio.Event, p: Persistence, ks: Keyspace, counter: list[int]) -> None:
    i = 0
    while not stop.is_set():
        for _ in range(50):  # 50 writes per loop turn: steady copy-on-write pressure
            p.check_writable()
            ks.write("board0", f"player{(i * 104729) % 1_000_000:08d}", i % 100_000)
            i += 1
        counter[0] += 50
        await asyncio.sleep(0)


def bgsave_stall(p: Persistence, ks: Keyspace) -> dict[str, float]:
    """Snapshot a running server's state while writing; longest loop stall and fork time.

    ``p`` has recovered ``ks`` (and its sessions) and was not started yet."""
    fork_times: list[float] = []
    child_done: list[float] = []  # when the child's report pipe reached end of file
    real_start, real_read = bgsave.start, bgsave.BackgroundSave.read

    def timed_start(*args: Any, **kwargs: Any) -> bgsave.BackgroundSave:
        t = time.perf_counter()
        job = real_start(*args, **kwargs)
        fork_times.append(t)
        fork_times.append(time.perf_counter() - t)
        return job

    def timed_read(job: bgsave.BackgroundSave) -> bool:
        eof = real_read(job)
        if eof and not child_done:
            child_done.append(time.perf_counter())
        return eof

    bgsave.start = timed_start
    bgsave.BackgroundSave.read = timed_read  # type: ignore[method-assign, assignment]

    async def main() -> dict[str, float]:
        await p.start()
        stop = asyncio.Event()
        gaps: list[float] = []
        writes = [0]
        tick = asyncio.create_task(_ticker(stop, gaps))
        writer = asyncio.create_task(_writer(stop, p, ks, writes))
        await asyncio.sleep(0.5)
        before = max(gaps, default=0.0)
        gaps.clear()
        result = await p.snapshot()
        during = max(gaps, default=0.0)
        stop.set()
        await asyncio.gather(tick, writer)
        await p.stop()
        return {
            "snapshot_s": result["seconds"],
            # The child alone (fork to its report); the rest of snapshot_s is the parent
            # waiting for the journal thread to create the new segment and delete old ones.
            "child_s": child_done[0] - fork_times[0],
            "snapshot_mb": result["bytes"] / 1e6,
            "fork_ms": fork_times[1] * 1e3,
            "max_stall_ms": during * 1e3,
            "max_stall_before_ms": before * 1e3,
            "writes_during": writes[0],
        }

    try:
        return _run(main())
    finally:
        bgsave.start = real_start
        bgsave.BackgroundSave.read = real_read  # type: ignore[method-assign]


def journal_rate(directory: Path, fsync: str, seconds: float) -> dict[str, float]:
    ks, ss = _stores()
    p = _persistence(directory, fsync, ks, ss)
    p.recover()

    async def main() -> dict[str, float]:
        await p.start()
        stop = asyncio.Event()
        done = [0]

        async def client(n: int) -> None:
            i = 0
            while not stop.is_set():
                p.check_writable()
                ks.write(f"j{n % 4}", f"m{n}-{i % 1000}", i)
                if p.needs_commit:
                    await p.commit()
                else:
                    await asyncio.sleep(0)
                i += 1
                done[0] += 1

        async def lag() -> None:
            """Longest time records sat appended but not yet written to the file."""
            j = p._journal
            since: float | None = None
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                if j._durable >= j._appended:
                    since = None
                elif since is None or j._durable > progress[0]:
                    since = now
                progress[0] = j._durable
                if since is not None:
                    worst[0] = max(worst[0], now - since)

        progress, worst = [0], [0.0]
        fsyncs_before = sum(p.fsync_seconds.counts)
        began = time.perf_counter()
        tasks = [asyncio.create_task(client(n)) for n in range(64)]
        tasks.append(asyncio.create_task(lag()))
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        took = time.perf_counter() - began
        fsyncs = sum(p.fsync_seconds.counts) - fsyncs_before
        mean_fsync = p.fsync_seconds.sum / max(sum(p.fsync_seconds.counts), 1)
        await p._journal.barrier(sync=False)  # everything written before measuring the file
        size = sum(f.stat().st_size for f in directory.glob("journal-*.rkj"))
        # Leave the journal in place for the replay measurement: no final snapshot.
        p._stopping = True
        for task in p._tasks.values():
            task.cancel()
        await p._journal.close()
        os.close(p._lock_fd)  # type: ignore[arg-type]
        return {
            "writes_per_s": done[0] / took,
            "fsyncs_per_s": fsyncs / took,
            "mean_fsync_ms": mean_fsync * 1e3,
            "journal_mb": size / 1e6,
            "records": done[0],
            "max_unwritten_s": worst[0],
        }

    return _run(main())


_POLLER = r"""
import http.client, os, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
end = time.time() + float(sys.argv[2])
parent = os.getppid()
while time.time() < end and os.getppid() == parent:  # a killed benchmark leaves no poller
    t = time.time()
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException) as exc:
        print(f"poller: {exc!r}; reconnecting", file=sys.stderr, flush=True)
        conn.close()
        continue
    took = time.time() - t
    if took > 0.005:
        print(f"{t:.6f} {took:.6f}", flush=True)
"""

# The machine's view of a stall: one process per CPU, pinned to it, sleeping 1 ms at a time.
# For each wake-up over 5 ms late it prints its CPU, when the lateness began (wall clock), how
# long it was, and the part the guest kernel can account for: the process's own CPU time and
# its wait in the run queue. The rest is time that CPU did not run it although it was due and
# first in line: the hypervisor held that vCPU without reporting steal. The guest charges such
# time to whichever thread was on the held vCPU, so the loop's "CPU" column cannot tell it
# apart from work. argv: seconds to run, the CPU to pin to.
_SLEEPER = r"""
import os, sys, threading, time
cpu = int(sys.argv[2])
os.sched_setaffinity(0, {cpu})
sched = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
def queued():
    return int(os.pread(sched, 128, 0).split()[1]) / 1e9
end = time.monotonic() + float(sys.argv[1])
parent = os.getppid()
while time.monotonic() < end and os.getppid() == parent:
    t, q, c = time.monotonic(), queued(), time.thread_time()
    time.sleep(0.001)
    late = time.monotonic() - t - 0.001
    if late > 0.005:
        began = time.time() - late
        line = f"{cpu} {began:.6f} {late:.6f} {time.thread_time() - c:.6f} {queued() - q:.6f}\n"
        os.write(1, line.encode())  # one write: the sleepers share the file
"""


def _sleepers(out: IO[str], seconds: float) -> list[subprocess.Popen[str]]:
    """Start a ``_SLEEPER`` on every CPU this process may run on, all writing to ``out``."""
    return [
        subprocess.Popen(
            [sys.executable, "-c", _SLEEPER, str(seconds), str(cpu)], stdout=out, text=True
        )
        for cpu in sorted(os.sched_getaffinity(0))
    ]


def _unexplained(lines: list[str], t0: float, t1: float) -> float:
    """Seconds of [t0, t1] in which a vCPU was held for no reason the guest knows
    (``_SLEEPER``): per CPU, the overlap of each late wake-up with the window, at most its
    unexplained part; the most of any CPU."""
    held: dict[str, float] = {}
    for line in lines:
        cpu, *fields = line.split()
        began, late, used, queued = map(float, fields)
        overlap = min(t1, began + late) - max(t0, began)
        if overlap > 0:
            held[cpu] = held.get(cpu, 0.0) + min(overlap, max(0.0, late - used - queued))
    return max(held.values(), default=0.0)


def live_stall(
    new: int,
    intervals: int,
    refreeze: str,
    fsync: str,
    users: bool,
    touch: int = 0,
    stacks: bool = False,
) -> list[dict[str, Any]]:
    """Longest loop stall and /healthz wait while creating ``new`` sessions, then while the
    periodic snapshot step runs, ``intervals`` times. Returns one row per phase. ``stacks``:
    also print what the loop thread was running during each stall over STACK_STALL
    (``_StackSampler``)."""
    import socket

    import uvicorn

    from service import app as app_module
    from service.backend import heap

    root = Path(tempfile.mkdtemp(prefix="bench-stall-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # No limit on sessions without a user: 2M of them passed the default (1M) in the second
    # 1M interval, and that refusal was what ended -- and hung -- the 2-interval run.
    settings = Settings(
        data_dir=root, fsync=fsync, snapshot_interval=0, port=port,  # type: ignore[arg-type]
        limits=ServiceLimits(max_anonymous_sessions=1_000_000_000),
    )  # fmt: skip
    application = app_module.create_app(settings)
    rt = application.state.rankd
    data = {"cart": [1, 2, 3], "theme": "dark"}
    forks: list[float] = []
    fork_cpu: list[float] = []
    real_start = bgsave.start

    def timed_start(*args: Any, **kwargs: Any) -> bgsave.BackgroundSave:
        t, c = time.perf_counter(), time.thread_time()
        job = real_start(*args, **kwargs)
        forks.append(time.perf_counter() - t)
        fork_cpu.append(time.thread_time() - c)  # the kernel's page-table copy is system time
        return job

    bgsave.start = timed_start

    async def main() -> list[dict[str, Any]]:
        config = uvicorn.Config(
            application, host="127.0.0.1", port=port, loop="none", http="httptools",
            lifespan="on", access_log=False, log_level="warning",
        )  # fmt: skip
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not rt.backend.ready:
            await asyncio.sleep(0.01)
        p = rt.backend.persistence
        if refreeze == "old":
            p._tasks.pop("freezer").cancel()
        create = rt.backend._sessions.create
        # The poller writes to a file: into a pipe nobody reads until the end it blocked
        # once ~3,000 slow answers filled the pipe, and stopped measuring (1M-session runs).
        poller_out = open(root / "poller.out", "w+")  # noqa: SIM115 (closed below)
        poller = subprocess.Popen(
            [sys.executable, "-c", _POLLER, str(port), "3600"],
            stdout=poller_out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sleeper_out = open(root / "sleeper.out", "w+")  # noqa: SIM115 (closed below)
        sleepers = _sleepers(sleeper_out, 3600)
        stop = asyncio.Event()
        gaps: list[tuple[float, float]] = []  # (wall time it began, length) of gaps over 5 ms

        cpu_gaps: list[tuple[float, float]] = []  # the same, in the loop thread's CPU time
        # The same gaps: (began, length, (CPU, run-queue wait, host steal, page faults)).
        parts: list[tuple[float, float, tuple[float, float, float, float]]] = []
        sched = _SchedProbe()

        sampler = _StackSampler(root) if stacks else None
        if stacks:
            # asyncio's debug mode names every callback (task step, handle) that ran longer
            # than slow_callback_duration: the stall's owner, if it is one callback.
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = STACK_STALL
            slow = logging.StreamHandler(sys.stdout)
            slow.setFormatter(logging.Formatter("slow callback: %(message)s"))
            logging.getLogger("asyncio").addHandler(slow)

        async def ticker() -> None:
            loop = asyncio.get_running_loop()
            last, last_cpu = loop.time(), time.thread_time()
            last_wait, last_steal, last_faults = sched.read()
            while not stop.is_set():
                if sampler is not None:
                    sampler.beat()
                await asyncio.sleep(0.001)
                now, cpu = loop.time(), time.thread_time()
                wait, steal, faults = sched.read()
                if now - last - 0.001 > 0.005:
                    if _TRACE_GAPS and now - last > 0.03:  # to match with `perf record -k 1`
                        print(
                            f"gap {time.monotonic() - (now - last):.6f} "
                            f"+{(now - last) * 1e3:.1f} ms"
                            f" cpu {(time.thread_time() - last_cpu) * 1e3:.1f} ms",
                            file=sys.stderr,
                        )
                    gaps.append((time.time() - (now - last), now - last - 0.001))
                    # What the loop itself computed without yielding; being descheduled by
                    # other load on the machine adds wall time, not this.
                    cpu_gaps.append((time.time() - (now - last), cpu - last_cpu))
                    parts.append(
                        (time.time() - (now - last), now - last - 0.001,
                         (cpu - last_cpu, wait - last_wait, steal - last_steal,
                          faults - last_faults))
                    )  # fmt: skip
                last, last_cpu, last_wait, last_steal, last_faults = now, cpu, wait, steal, faults

        collections: list[tuple[float, float]] = []  # (wall time it began, seconds)
        began_gc = [0.0]

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                began_gc[0] = time.perf_counter()
            else:
                took = time.perf_counter() - began_gc[0]
                collections.append((time.time() - took, took))

        gc.callbacks.append(on_gc)
        tick = asyncio.create_task(ticker())
        ids: list[str] = []
        # Create turns over 5 ms: (wall time it began, seconds). A stall that is one turn is
        # the benchmark's own batch of CHUNK creates running slow, not something between turns.
        turns: list[tuple[float, float]] = []
        touched = [0]

        async def toucher() -> None:
            """``touch`` get+touch calls a second on random existing sessions, in slices of
            20 (10 ms apart at 2,000/s): writes to old objects, as a serving rankd sees."""
            rng = random.Random(1)
            get = rt.backend._sessions.get
            per_slice = 20
            while not stop.is_set():
                await asyncio.sleep(per_slice / touch)
                for _ in range(per_slice if ids else 0):
                    get(ids[rng.randrange(len(ids))])
                    touched[0] += 1

        touching = asyncio.create_task(toucher()) if touch > 0 else None
        heap_rows: list[tuple[float, float]] = []
        phases: list[tuple[str, float, float, int]] = []
        # Whatever happens, stop the poller and the server before returning. An exception that
        # left them running used to hang the run with no output: asyncio.run's clean-up cancels
        # every task at once, the journal's flusher among them, and the lifespan's shutdown
        # then waited forever for a journal barrier only that flusher resolves.
        try:
            await asyncio.sleep(1.0)  # the poller's connection is up
            for k in range(intervals):
                began = time.time()
                for start in range(0, new, CHUNK):
                    turn = time.perf_counter()
                    slowest = one = 0.0
                    for i in range(start, min(start + CHUNK, new)):
                        if stacks:  # timing every create only when asked: it is the hot loop
                            one = time.perf_counter()
                        s = create(user=f"user{k}-{i}" if users else None, data=data)
                        if stacks:
                            slowest = max(slowest, time.perf_counter() - one)
                        if touching is not None:
                            ids.append(s.id)
                    took = time.perf_counter() - turn
                    if took > 0.005:
                        turns.append((time.time() - took, took))
                    if stacks and took > STACK_STALL:
                        # One slow create, or all of them slow? (A turn is a few ms.)
                        print(f"create turn of {took * 1e3:.0f} ms: its slowest create took "
                              f"{slowest * 1e3:.1f} ms of {min(CHUNK, new - start)}")  # fmt: skip
                    await asyncio.sleep(0)
                phases.append((f"create {new:,} (interval {k + 1})", began, time.time(), -1))
                # In a thread: reading smaps_rollup walks the page tables (tens of ms at 1-2M
                # sessions), the benchmark's own work, which held the loop inside the stall
                # measured for the snapshot that follows.
                heap_rows.append(await asyncio.to_thread(_huge_mb))
                began = time.time()
                n = len(forks)
                await p.snapshot()
                if refreeze == "old":
                    gc.collect()
                    gc.freeze()
                else:
                    await asyncio.sleep(2 * heap.CHECK)  # the freezer's next look falls in here
                phases.append((f"snapshot {k + 1} ({len(rt.backend._sessions):,} sessions)",
                               began, time.time(), n))  # fmt: skip
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await tick
            sched.close()
            if sampler is not None:
                sampler.stop()
                sampler.report([(t, d) for t, d in gaps if d > STACK_STALL])
            if touching is not None:
                await touching
            gc.callbacks.remove(on_gc)
            alive = poller.poll() is None
            poller.kill()
            poller.wait()
            for sleeper in sleepers:
                sleeper.kill()
                sleeper.wait()
            server.should_exit = True
            await serving
        poller_out.seek(0)
        lines = poller_out.read().splitlines()
        poller_out.close()
        errors = [line for line in lines if line.startswith("poller")]
        if errors or not alive:
            print(f"poller (alive until the end: {alive}): {errors[-20:]}", file=sys.stderr)
        waits = [tuple(map(float, line.split())) for line in lines if line and line not in errors]
        sleeper_out.seek(0)
        late = sleeper_out.read().splitlines()
        sleeper_out.close()

        def longest(spans: list[tuple[float, float]], t0: float, t1: float) -> float:
            """The longest (start, length) span that ends in [t0, t1], in ms. By its end: the
            snapshot's fork starts right after a create phase's last chunk, so a gap holding
            it begins in the create phase but belongs to the snapshot."""
            return 1e3 * max((d for t, d in spans if t0 <= t + d <= t1), default=0.0)

        def worst_parts(t0: float, t1: float) -> tuple[float, ...]:
            """The longest gap ending in [t0, t1]: its CPU, run-queue wait and host steal (ms),
            the loop thread's page faults, and the longest time a vCPU was held in it (ms)."""
            inside = [p for p in parts if t0 <= p[0] + p[1] <= t1]
            if not inside:
                return 0.0, 0.0, 0.0, 0, 0.0
            began, length, (cpu, wait, steal, faults) = max(inside, key=lambda p: p[1])
            held = _unexplained(late, began, began + length)
            return 1e3 * cpu, 1e3 * wait, 1e3 * steal, faults, 1e3 * held

        return [
            {
                "phase": name,
                "seconds": t1 - t0,
                "loop_stall_ms": longest(gaps, t0, t1),
                "stall_parts_ms": worst_parts(t0, t1),
                "loop_cpu_ms": longest(cpu_gaps, t0, t1),
                "healthz_ms": longest(waits, t0, t1),  # type: ignore[arg-type]
                "gc_ms": longest(collections, t0, t1),
                "turn_ms": longest(turns, t0, t1),
                "fork_ms": 1e3 * forks[fork_index] if fork_index >= 0 else None,
                "fork_cpu_ms": 1e3 * fork_cpu[fork_index] if fork_index >= 0 else None,
                "heap_mb": heap_rows[fork_index] if 0 <= fork_index < len(heap_rows) else None,
                "touched": touched[0],
            }
            for name, t0, t1, fork_index in phases
        ]

    try:
        return _run(main())
    finally:
        bgsave.start = real_start
        shutil.rmtree(root, ignore_errors=True)


STACK_STALL = 0.05  # --stacks: stalls longer than this (s) get their dumps printed

# --stacks: a watchdog *process* (it must not need this one's GIL: a stall inside one C call
# holds it) that reads the loop's heartbeat from shared memory and, once it is STACK_AFTER
# late, runs `py-spy dump --nonblocking` on this process: the loop thread's Python stack
# in the middle of the stall. argv: pid, heartbeat file, output file, py-spy.
_WATCHDOG = """
import mmap, os, struct, subprocess, sys, time
pid, beat_file, out, spy = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
after, dumped = float(sys.argv[5]), 0.0
with open(beat_file, "r+b") as f:
    beat = mmap.mmap(f.fileno(), 8)
while True:
    time.sleep(0.002)
    (last,) = struct.unpack_from("d", beat, 0)
    if last < 0:
        break
    if time.time() - last > after and last != dumped:
        dumped = last
        got = subprocess.run([spy, "dump", "--pid", str(pid), "--nonblocking"],
                             capture_output=True, text=True, timeout=30)
        with open(out, "a") as o:
            o.write(f"=== beat {last:.6f} late {time.time() - last:.3f}\\n{got.stdout}{got.stderr}")
"""


class _StackSampler:
    """--stacks: the loop's heartbeat in a shared 8-byte mapping, and the watchdog process
    above that dumps the loop thread's stack (py-spy) when it goes quiet mid-stall."""

    STACK_AFTER = 0.03

    def __init__(self, root: Path) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            raise SystemExit("--stacks needs py-spy (pip install py-spy)")
        self._file = root / "beat"
        self._file.write_bytes(struct.pack("d", time.time()))
        self._out = root / "dumps.txt"
        with open(self._file, "r+b") as f:
            self._beat = mmap.mmap(f.fileno(), 8)
        self._child = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self._file),
             str(self._out), spy, str(self.STACK_AFTER)]
        )  # fmt: skip

    def beat(self) -> None:
        struct.pack_into("d", self._beat, 0, time.time())

    def stop(self) -> None:
        if self._child.poll() is not None:
            raise RuntimeError(f"the --stacks watchdog died early ({self._child.returncode})")
        struct.pack_into("d", self._beat, 0, -1.0)
        self._child.wait(timeout=60)

    def report(self, stalls: list[tuple[float, float]]) -> None:
        """Print the dumps taken during each of ``stalls`` ((wall start, length) pairs)."""
        dumps = self._out.read_text().split("=== beat ")[1:] if self._out.exists() else []
        for start, length in stalls:
            print(f"stall of {length * 1e3:.0f} ms at {start:.6f} ({len(dumps)} dumps in all):")
            for dump in dumps:
                if abs(float(dump.split()[0]) - start) < 0.005:
                    print(dump.rstrip())


class _SchedProbe:
    """The calling thread's run-queue wait and the machine's steal time, both in seconds, and
    the thread's page faults, cheap enough to read every millisecond (~1, ~6 and ~1 us)."""

    def __init__(self) -> None:
        tid = threading.get_native_id()
        self._sched = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
        self._stat = os.open("/proc/stat", os.O_RDONLY)
        self._tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> tuple[float, float, int]:
        wait = int(os.pread(self._sched, 128, 0).split()[1]) / 1e9
        # "cpu  user nice system idle iowait irq softirq steal ...": all vCPUs summed
        steal = int(os.pread(self._stat, 256, 0).split(maxsplit=9)[8]) / self._tick
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        return wait, steal, usage.ru_minflt + usage.ru_majflt

    def close(self) -> None:
        os.close(self._sched)
        os.close(self._stat)


def stall_main(args: argparse.Namespace) -> None:
    rows = live_stall(
        args.new, args.intervals, args.refreeze, args.fsync, args.users, args.touch, args.stacks
    )
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average "
        f"{os.getloadavg()[0]:.1f}, 10M-iteration Python loop {calibrate():.2f} s"
    )
    print(f"heap: {_heap_mode()}; get+touch calls on old sessions: {rows[-1]['touched']:,}")
    print(
        "| phase | s | longest loop stall ms (wall / CPU) | of the longest: CPU / waiting for "
        "a CPU / stolen by the host ms, page faults; unaccounted ms | longest /healthz "
        "wait ms | "
        "longest collection ms | longest create turn ms | "
        "fork ms (wall / CPU) | RSS MB (on huge pages) at the fork |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        fork = "" if r["fork_ms"] is None else f"{r['fork_ms']:.1f} / {r['fork_cpu_ms']:.1f}"
        heap = "" if r["heap_mb"] is None else "{:,.0f} ({:,.0f})".format(*r["heap_mb"])
        parts = r["stall_parts_ms"]
        print(
            f"| {r['phase']} | {r['seconds']:.1f} | {r['loop_stall_ms']:.0f} / "
            f"{r['loop_cpu_ms']:.0f} | {'{:.0f} / {:.0f} / {:.0f}, {:,}; {:.0f}'.format(*parts)} "
            f"| {r['healthz_ms']:.0f} | {r['gc_ms']:.1f} | {r['turn_ms']:.1f} | {fork} "
            f"| {heap} |"
        )


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def calibrate() -> float:
    """Seconds for a fixed pure-Python loop: scales the other numbers across machines."""
    t = time.process_time()
    x = 0
    for i in range(10_000_000):
        x += i
    return time.process_time() - t


def _heap(mode: str) -> None:
    """Re-execute this benchmark with (thp) or without (pymalloc) the heap environment that
    the ``rankd`` command gives itself, unless it already runs that way."""
    from service import hugepages

    if mode == "thp" and not hugepages.active():
        env = hugepages.environment(os.environ, [])
        if env is None:
            print("--heap thp: not available here (service/hugepages.py)", file=sys.stderr)
            return
    elif mode == "pymalloc" and "PYTHONMALLOC" in os.environ:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", "GLIBC_TUNABLES")}
    else:
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _heap_mode() -> str:
    from service import hugepages

    return (
        "thp (PYTHONMALLOC=malloc, glibc.malloc.hugetlb=1)"
        if hugepages.active()
        else (f"PYTHONMALLOC={os.environ.get('PYTHONMALLOC', '(default: pymalloc)')}")
    )


def _huge_mb() -> tuple[float, float]:
    """(resident, of which on huge pages) MB of this process."""
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "AnonHugePages"):
                fields[key] = int(rest.split()[0]) / 1024
    return fields.get("Rss", 0.0), fields.get("AnonHugePages", 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--boards", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0, help="per fsync policy")
    ap.add_argument("--quick", action="store_true", help="100k + 100k, 1 s per policy")
    ap.add_argument("--dir", type=Path, help="where to write (default: a temp dir, removed)")
    ap.add_argument("--stall", action="store_true", help="only the live loop-stall experiment")
    ap.add_argument("--new", type=int, default=250_000, help="--stall: sessions per interval")
    ap.add_argument("--intervals", type=int, default=2, help="--stall: snapshot intervals")
    ap.add_argument("--refreeze", choices=("new", "old"), default="new", help="--stall: policy")
    ap.add_argument("--fsync", choices=("always", "everysec", "no"), default="everysec",
                    help="--stall: the server's fsync policy")  # fmt: skip
    ap.add_argument("--users", action="store_true", help="--stall: one user per session")
    ap.add_argument("--touch", type=int, default=0, metavar="PER_S",
                    help="--stall: also get+touch this many random existing sessions a "
                    "second (old pages written while a child lives)")  # fmt: skip
    ap.add_argument("--stacks", action="store_true",
                    help="--stall: print the loop thread's Python stacks sampled during each "
                    "stall over 50 ms")  # fmt: skip
    ap.add_argument("--heap", choices=("thp", "pymalloc"), default="thp",
                    help="thp: re-run with the environment the rankd command sets "
                    "(service/hugepages.py); pymalloc: without it")  # fmt: skip
    args = ap.parse_args()
    _heap(args.heap)
    if args.stall:
        return stall_main(args)
    if args.quick:
        args.entries, args.sessions, args.seconds = 100_000, 100_000, 1.0
    root = Path(tempfile.mkdtemp(prefix="bench-persist-", dir=args.dir))
    out: dict[str, Any] = {}
    try:
        ks, ss, took = build(args.entries, args.sessions, args.boards)
        print(
            f"build: {args.entries} entries + {args.sessions} sessions in {took:.1f} s", flush=True
        )
        snap_dir = root / "snap"
        snap_dir.mkdir()
        t = time.perf_counter()
        stats = snapshot.save(snap_dir, ks, ss, base_segment=1, now=time.time())
        out["save_s"] = time.perf_counter() - t
        out["snapshot_mb"] = stats.bytes / 1e6
        print(f"save: {out['save_s']:.2f} s, {out['snapshot_mb']:.0f} MB", flush=True)
        del ks, ss
        gc.collect()

        ks, ss = _stores()
        p = _persistence(snap_dir, "everysec", ks, ss)
        t = time.perf_counter()
        marks: list[tuple[float, int, int]] = []
        real_load = snapshot.load

        def load(*a: Any, **kw: Any) -> Any:
            kw["progress"] = lambda e, s: marks.append((time.perf_counter(), e, s))
            return real_load(*a[:3], **kw)

        snapshot.load = load
        try:
            p.recover()
        finally:
            snapshot.load = real_load
        total = time.perf_counter() - t
        boards_done = next((m for m in marks if m[2] > 0), marks[-1] if marks else (t, 0, 0))
        # Entries load first, sessions after: split the time at the first sessions frame.
        t_entries = max(boards_done[0] - t, 1e-9)
        out["recover_s"] = total
        out["recover_entries_per_s"] = args.entries / t_entries
        out["recover_sessions_per_s"] = args.sessions / max(total - t_entries, 1e-9)
        out["recover_total_per_s"] = (args.entries + args.sessions) / total
        print(
            f"recover: {total:.2f} s ({out['recover_entries_per_s']:,.0f} entries/s, "
            f"{out['recover_sessions_per_s']:,.0f} sessions/s)",
            flush=True,
        )
        stall = bgsave_stall(p, ks)
        out.update({f"bgsave_{k}": v for k, v in stall.items()})
        print(
            f"bgsave: {stall['snapshot_s']:.2f} s (child {stall['child_s']:.2f} s), fork "
            f"{stall['fork_ms']:.1f} ms, longest loop "
            f"stall {stall['max_stall_ms']:.1f} ms (before: {stall['max_stall_before_ms']:.1f} ms)",
            flush=True,
        )
        del ks, ss
        gc.collect()

        for policy in ("always", "everysec", "no"):
            d = root / f"journal-{policy}"
            r = journal_rate(d, policy, args.seconds)
            out.update({f"journal_{policy}_{k}": v for k, v in r.items()})
            print(
                f"journal fsync={policy}: {r['writes_per_s']:,.0f} writes/s, "
                f"{r['fsyncs_per_s']:.1f} fsyncs/s (mean {r['mean_fsync_ms']:.2f} ms), records "
                f"unwritten for up to {r['max_unwritten_s']:.2f} s",
                flush=True,
            )
        ks, ss = _stores()
        p = _persistence(root / "journal-always", "always", ks, ss)
        t = time.perf_counter()
        report = p.recover()
        took = time.perf_counter() - t
        out["replay_records_per_s"] = report["journal_records"] / took
        print(f"replay: {report['journal_records']} records, {out['replay_records_per_s']:,.0f}/s")
        os.close(p._lock_fd)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, peak RSS "
        f"{_rss_mb():.0f} MB, load average {os.getloadavg()[0]:.1f}, 10M-iteration Python "
        f"loop {calibrate():.2f} s (a quiet modern x86 core: ~0.4 s)"
    )
    print("| metric | value |\n| --- | --- |")
    for k, v in out.items():
        print(f"| {k} | {v:,.2f} |" if isinstance(v, float) else f"| {k} | {v:,} |")


if __name__ == "__main__":
    main()
