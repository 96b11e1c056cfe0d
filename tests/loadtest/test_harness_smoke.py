"""The load-test tools run end to end on tiny sizes, so they cannot rot unnoticed.

The tests drive the real programs as a user would (``python -m loadtest.bench_http``,
``locust -f loadtest/locustfile.py``) against real servers on loopback. They need
redis-server and wrk (Debian packages; ``scripts/test`` installs them): a missing one
is a failure that says how to install it, never a skip.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not on PATH: the load-test smoke tests drive them for real; "
            f"install with `apt-get install {' '.join(missing)}` (scripts/test does this)"
        )


def _processes_with_env(entry: str) -> list[str]:
    """Command lines of live processes whose environment holds ``entry`` (``NAME=value``).

    Children inherit the harness's environment, and unlike argv (redis-server rewrites
    its own) the environment block keeps it, so this finds any server left running.
    """
    needle = entry.encode() + b"\0"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes() + b"\0"
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited while we looked, or not ours to read
        if env.startswith(needle) or b"\0" + needle in env:
            found.append(f"{proc.name}: {argv}")
    return found


@pytest.mark.needs_wrk
@pytest.mark.needs_redis
def test_bench_http_quick_runs_every_stack_and_cleans_up(tmp_path: Path) -> None:
    _require("wrk", "redis-server")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "bench.json"
    # TMPDIR puts the harness's work dir under scratch/ and marks every child it starts,
    # so a server or wrk it failed to kill is findable afterwards.
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_http", "--quick", "--json", str(out)],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert _processes_with_env(f"TMPDIR={scratch}") == []
    assert "| workload | stack | req/s | p50 ms | p99 ms | CPU µs/req | errors |" in proc.stdout
    assert "| workload | rankd/bare req/s | rankd/redis req/s |" in proc.stdout

    raw = json.loads(out.read_text())
    runs = {(r["stack"], r["workload"]): r for r in raw["http"]}
    workloads = {"post_score", "get_top", "get_member"}
    expected = {(s, w) for s in ("bare", "rankd", "redis") for w in workloads}
    expected.add(("rankd-everysec", "post_score"))
    assert set(runs) == expected
    for key, run in runs.items():
        assert run["errors"] == 0, (key, run)
        assert run["requests"] > 0 and run["rps"] > 0, (key, run)
        assert 0 < run["p50_ms"] <= run["p99_ms"], (key, run)
        assert run["cpu_us"] > 0, (key, run)  # the servers did the work, and we saw it

    memory = {(m["store"], m["measure"]): m for m in raw["memory"]}
    assert set(memory) == {
        ("rankd", "VmRSS delta"),
        ("redis-server", "used_memory delta"),
        ("redis-server", "used_memory_rss delta"),
    }
    assert all(m["members"] == 2000 for m in memory.values())
    # Redis accounts allocations exactly; 2000 zset members cost well over 40 bytes each.
    assert memory[("redis-server", "used_memory delta")]["bytes_per_member"] > 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"rankd exited early:\n{log.read_text()[-3000:]}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass  # not listening yet
        finally:
            conn.close()
        time.sleep(0.1)
    pytest.fail(f"rankd not ready on :{port} within 60 s:\n{log.read_text()[-3000:]}")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_locust_headless_run_has_no_failures(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "rankd.log"
    argv = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--data-dir", str(tmp_path / "data"), "--fsync", "no"]
    with log.open("wb") as log_file:
        rankd = subprocess.Popen(
            argv, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(rankd, port, log)
        prefix = tmp_path / "run"
        # 10 users at weights 6:3:1 gives every user class at least one user.
        cmd = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless"]
        cmd += ["-u", "10", "-r", "10", "-t", "5s", "--stop-timeout", "2"]
        cmd += ["--host", f"http://127.0.0.1:{port}", "--csv", str(prefix), "--loglevel", "WARNING"]
        locust = subprocess.run(
            cmd,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        report = f"locust stdout:\n{locust.stdout[-3000:]}\nstderr:\n{locust.stderr[-3000:]}"
        stats = {(r["Type"], r["Name"]): r for r in _read_csv(Path(f"{prefix}_stats.csv"))}
        failures = _read_csv(Path(f"{prefix}_failures.csv"))
        exceptions = _read_csv(Path(f"{prefix}_exceptions.csv"))
        assert failures == [], report
        assert exceptions == [], report
        total = stats[("", "Aggregated")]
        assert int(total["Failure Count"]) == 0, report
        assert int(total["Request Count"]) > 50, report
        # Every user class did its job: game writes, sessions, and WebSocket deliveries.
        # (Only frequent actions: a rare one may by chance not happen in 5 s.)
        names = {name for _, name in stats}
        for expected in (
            "/v1/boards/[b]/scores",
            "/v1/boards/[b]/members/[m]/around",
            "/v1/sessions",
            "/v1/sessions/[id]",
            "ws score ack",
            "rank frame delay",
        ):
            assert expected in names, f"no {expected!r} requests in {sorted(names)}\n{report}"
        assert locust.returncode == 0, report
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rankd.pid, signal.SIGTERM)
        try:
            rankd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(rankd.pid, signal.SIGKILL)
            rankd.wait(timeout=10)


def _tool(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` in the repository as a user would; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_bench_write_floor_runs_every_server() -> None:
    """``python -m loadtest.bench_write_floor`` on a tiny run: each server answers every paced
    write (the lean and bare floors included) and gets a CPU line."""
    proc = _tool(["-m", "loadtest.bench_write_floor", "--rate", "40", "--seconds", "1"], 180)
    lines = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [fields[0] for fields in lines] == [
        "lean-parsed",
        "lean-queued",
        "bare",
        "rankd-no",
        "rankd",
    ], proc.stdout
    assert all(fields[-2] == "40" for fields in lines), proc.stdout  # "40 acked"


def test_bench_persist_stall_splits_every_phase() -> None:
    """``bench_persist.py --stall`` on a tiny run: a row per phase, each with the longest stall
    and its split (CPU, run-queue wait, host steal, page faults) read from /proc, and the
    time the guest cannot account for (``_SLEEPER``)."""
    proc = _tool(
        ["loadtest/bench_persist.py", "--stall", "--new", "2000", "--intervals", "1",
         "--heap", "pymalloc", "--stacks"],
        180,
    )  # fmt: skip
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [r[0].strip() for r in rows[2:]] == [
        "create 2,000 (interval 1)",
        "snapshot 1 (2,000 sessions)",
    ], proc.stdout
    for row in rows[2:]:
        times, rest = row[3].split(",", 1)  # "CPU / wait / steal, 1,234; 0"
        faults, unaccounted = rest.split(";")
        assert len(times.split("/")) == 3 and int(faults.replace(",", "")) >= 0, proc.stdout
        assert float(unaccounted) >= 0, proc.stdout


def test_bench_ws_runs_every_mix(tmp_path: Path) -> None:
    """``python -m loadtest.bench_ws --quick`` (100 subscribers) on every mix: nobody
    dropped, frames delivered, the server's CPU split into the event loop's thread and the
    rest."""
    out = tmp_path / "ws.json"
    proc = _tool(
        ["-m", "loadtest.bench_ws", "--quick", "--mixes", "top,around,mix", "--rate", "100",
         "--json", str(out)],
        240,
    )  # fmt: skip
    results = json.loads(out.read_text())
    assert [r["mix"] for r in results] == ["top", "around", "mix"]
    for r in results:
        assert r["subscribers_dropped"] == 0 and r["frames"] > 0, r
        assert r["delay_from_ack"]["p99"] > 0, r
        assert 0 < r["loop_cpu"] <= r["server_cpu"] + 0.05, r  # ticks are 10 ms: some slack
        assert 0 <= r["loop_cpu_without"] <= r["server_cpu_without"] + 0.05, r
    assert "event loop's thread" in proc.stdout


def _sleeper(cpu: int) -> subprocess.Popen[str]:
    """The stall benchmark's sleeper on ``cpu``, returned once it is in its loop: a stop that
    came during its start-up would leave no late wake-up to see."""
    from loadtest import bench_persist

    sleeper = subprocess.Popen(
        [sys.executable, "-c", bench_persist._SLEEPER, "30", str(cpu)],
        stdout=subprocess.PIPE,
        text=True,
    )
    wchan = Path(f"/proc/{sleeper.pid}/wchan")
    deadline = time.monotonic() + 30
    while "nanosleep" not in wchan.read_text():
        assert time.monotonic() < deadline, "the sleeper never reached its loop"
        time.sleep(0.01)
    return sleeper


def test_bench_persist_sleeper_reports_time_the_guest_cannot_account_for() -> None:
    """The stall benchmark's sleeper process, held with SIGSTOP for 300 ms (the guest kernel
    neither ran it nor had it waiting for a CPU, as when a hypervisor holds its vCPU): its late
    wake-up is reported, and the part not explained by its CPU or run-queue wait covers the
    hold; the time around it has none."""
    from loadtest import bench_persist

    cpu = min(os.sched_getaffinity(0))
    sleeper = _sleeper(cpu)
    try:
        held = time.time()
        sleeper.send_signal(signal.SIGSTOP)
        time.sleep(0.3)
        sleeper.send_signal(signal.SIGCONT)
        time.sleep(0.3)
    finally:
        sleeper.kill()
        out, _ = sleeper.communicate(timeout=10)
    lines = out.splitlines()
    assert lines and all(line.split()[0] == str(cpu) for line in lines), lines
    during = bench_persist._unexplained(lines, held, held + 0.3)
    assert 0.25 <= during <= 0.3, (during, lines)
    assert bench_persist._unexplained(lines, held - 0.5, held - 0.05) == 0.0, lines


_HOG = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pass
"""


@pytest.mark.needs_root  # SCHED_FIFO
def test_bench_persist_sleeper_counts_a_wait_for_its_cpu_as_explained() -> None:
    """The other half of the sleeper's accounting: late because a real-time process held its
    CPU for 300 ms, the sleeper waited in the run queue, which the guest knows about, so the
    lateness is reported but none of it is unaccounted."""
    from loadtest import bench_persist

    cpu = min(os.sched_getaffinity(0))
    sleeper = _sleeper(cpu)
    try:
        began = time.time()
        subprocess.run([sys.executable, "-c", _HOG, str(cpu), "0.3"], check=True, timeout=30)
        time.sleep(0.3)
    finally:
        sleeper.kill()
        out, _ = sleeper.communicate(timeout=10)
    lines = out.splitlines()
    late = [float(line.split()[2]) for line in lines if float(line.split()[1]) >= began - 0.1]
    assert late and max(late) >= 0.2, lines
    assert bench_persist._unexplained(lines, began, began + 1.0) < 0.03, lines


def _stalled_here(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass  # Python running, no heartbeat: a stall


def test_bench_persist_stacks_dumps_the_stalled_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--stacks``: the watchdog process sees the heartbeat stop and dumps the stalled
    thread's stack with py-spy, which the report then prints under that stall."""
    from loadtest import bench_persist

    sampler = bench_persist._StackSampler(tmp_path)
    sampler.beat()
    began = time.time()
    _stalled_here(0.5)
    sampler.stop()
    sampler.report([(began, 0.5)])
    out = capsys.readouterr().out
    assert "stall of 500 ms" in out and "_stalled_here" in out, out
