"""Child processes for the benchmark: start on loopback, wait until ready, always kill.

Every server the harness starts runs in its **own process group** (``start_new_session``),
so stopping it signals the whole group: a server that forked (uvicorn reloaders, a
``rankd`` wrapper script) cannot leave an orphan holding a port. :class:`Children` is
the one owner of those groups; its ``__exit__`` (reached through ``try/finally`` on
success, exception, Ctrl-C or SIGTERM) sends SIGTERM, waits, then SIGKILLs stragglers.

Output of each child goes to a log file in the run's temp dir, not to a pipe: a pipe
nobody reads fills up and blocks a chatty server mid-benchmark.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


class ChildFailed(RuntimeError):
    """A child exited early or never became ready; the message carries its log tail."""


def free_port() -> int:
    """A port the kernel says is free on loopback now (tiny race, fine on a dev box)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class Child:
    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.name = name
        self.argv = argv
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 2000) -> str:
        self._log_file.flush()
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise ChildFailed(
                f"{self.name} exited with {code}: {' '.join(self.argv)}\n{self.log_tail()}"
            )

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group, give it ``grace`` seconds, then SIGKILL whatever is left."""
        pgid = self.proc.pid  # the leader's pid is the group id (start_new_session)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        # Also reaches children the leader left behind after it exited.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout=grace)
        self._log_file.close()


class Children:
    """Owns every child of a run; leaving the ``with`` block stops them all, newest first."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self._children: list[Child] = []

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        child = Child(name, argv, self.workdir / f"{name}.log", env, cwd)
        self._children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        self._children.remove(child)

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        while self._children:
            self._children.pop().stop()


def wait_http(child: Child, port: int, path: str, timeout: float = 30.0) -> None:
    """Poll ``GET path`` until it answers 2xx; fail early if the child died."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        child.check_alive()
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if 200 <= resp.status < 300:
                return
            last = f"status {resp.status}"
        except OSError as exc:
            last = repr(exc)
        finally:
            conn.close()
        time.sleep(0.1)
    raise ChildFailed(f"{child.name} not ready on :{port}{path} after {timeout}s ({last})")


def wait_port(child: Child, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on ``port`` (redis-server)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise ChildFailed(f"{child.name} not listening on :{port} after {timeout}s")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc/<pid>/status (VmRSS is in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS line for pid {pid}")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time ``pid`` has used, all its threads (from /proc/<pid>/stat), or
    only its thread ``thread`` (/proc/<pid>/task/<thread>/stat; the main thread's id is pid)."""
    where = f"/proc/{pid}" if thread is None else f"/proc/{pid}/task/{thread}"
    stat = Path(f"{where}/stat").read_text()
    # The command name (field 2) may hold spaces or parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")
