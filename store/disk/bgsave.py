"""Background snapshots by fork(), as Redis's BGSAVE: the child writes a copy-on-write image.

Why fork and not chunked iteration on the event loop. A snapshot must be the exact state at one
instant, because the journal segment that starts at that instant holds everything after it.
Chunked iteration would get there only with care (iterate in key order, de-duplicate members
that moved behind the cursor, rely on replay to fix the rest), and it would spend the whole
encoding cost -- ~3 s at 1M entries + 1M sessions, mostly the sessions now that entries are
copied as raw keys -- on the serving thread, ~10 ms at a time. fork() costs the parent one
page-table copy and moves all encoding to another process and core; the kernel's copy-on-write
keeps the child's view frozen at the fork instant while the parent goes on. That copy is the
one stall a snapshot puts on the event loop: one page-table entry per 4 KiB page, ~20 ms of
CPU per GB resident on the 2-core dev VM (29 ms at 1M sessions, 66 ms at 2M, more wall time
under load), and 1-3 ms when the heap is on 2 MiB transparent huge pages, which is how the
``rankd`` server runs (service/hugepages.py; loadtest/RESULTS.md "The fork").

    parent (event loop)                       child
    rotate journal -> segment B               (B is the snapshot's base_segment)
    fork() -------------------------------->  close inherited fds, default signals,
    serve; read the pipe when readable        gc off, die with the parent (Linux)
                                              write snapshot.rkd.tmp-<pid>, fsync,
                                              load it back (snapshot.verify), install:
                                              snapshot.rkd -> snapshot.prev.rkd (link),
                                              os.replace -> snapshot.rkd, fsync dir
    EOF on the pipe, waitpid(WNOHANG) <-----  report {"ok": ...} on the pipe, os._exit()
    exit 0 and ok -> success; anything else -> failure (never a claimed save)

Honest failure: success needs exit status 0 *and* the child's own "ok" report. A child killed
by a signal (OOM killer), one that hit ENOSPC, one whose file did not load back, or one that
crashed before reporting is a failed save; its temp file is removed and the installed
snapshots stay in place. The read-back costs the child ~40% more time (0.41 s of 1.02 s at
300k entries + 300k sessions, 45 MiB, on the 2-core dev VM) and one board's worth of memory.

The child closes every inherited descriptor but the pipe: a listening socket or client
connection kept open by the child would keep a restarted server off its port and delay the
FIN a closing client waits for, and the data directory's lock would outlive a killed parent.

Platform limits: POSIX only (no fork on Windows). Die-with-parent (PR_SET_PDEATHSIG) is
Linux-only; elsewhere a child whose parent was killed finishes its snapshot and exits on its
own. Python refcounting writes to every object the child visits, so the child's pages get
copied as it goes: budget up to the heap's size again in memory during a snapshot.
"""

import contextlib
import ctypes
import errno
import gc
import os
import resource
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from store.disk import datadir, snapshot
from store.disk.snapshot import SnapshotStats
from store.keyspace import Keyspace
from store.sessions import SessionStore

_PR_SET_PDEATHSIG = 1
_REPORT_LIMIT = 1 << 16  # a report is ~200 bytes; more is a confused child


class SaveFailed(Exception):
    """A background snapshot did not produce a durable file; the message says why."""


@dataclass(slots=True)
class BackgroundSave:
    """A running child. The parent polls it; nothing here blocks (except ``kill``)."""

    pid: int
    fd: int  # read end of the report pipe, non-blocking
    directory: Path
    report: bytearray
    status: int | None = None  # waitpid status once reaped

    def read(self) -> bool:
        """Read what the child reported so far; True once the pipe reached end of file."""
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            if not chunk:
                return True
            if len(self.report) < _REPORT_LIMIT:
                self.report += chunk

    def reap(self) -> bool:
        """waitpid without blocking; True once the child has been reaped."""
        if self.status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: we cannot know how it ended
                self.status = -1
                return True
            if pid == 0:
                return False
            self.status = status
        return True

    def result(self) -> SnapshotStats:
        """The snapshot's stats, or SaveFailed. Call after ``reap()`` returned True."""
        assert self.status is not None
        self.close()
        try:
            report = orjson.loads(bytes(self.report)) if self.report else None
        except orjson.JSONDecodeError:
            report = None
        status = self.status
        if status == -1:
            why = "snapshot child was reaped elsewhere; its outcome is unknown"
        elif os.WIFSIGNALED(status):
            why = f"snapshot child killed by signal {_signame(os.WTERMSIG(status))}"
        elif os.WEXITSTATUS(status) != 0:
            detail = report.get("error") if isinstance(report, dict) else None
            why = f"snapshot child exited with status {os.WEXITSTATUS(status)}: {detail}"
        elif not isinstance(report, dict) or report.get("ok") is not True:
            why = "snapshot child exited without reporting success"
        else:
            return SnapshotStats(**report["stats"])
        self._remove_temp()
        raise SaveFailed(why)

    def kill(self) -> None:
        """Stop the child now (shutdown, cancellation) and clean up after it."""
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                _, self.status = os.waitpid(self.pid, 0)  # immediate after SIGKILL
        self.close()
        self._remove_temp()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _remove_temp(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / f"{datadir.SNAPSHOT}.tmp-{self.pid}")


def _signame(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return str(n)


def start(
    directory: Path,
    keyspace: Keyspace,
    sessions: SessionStore,
    *,
    base_segment: int,
    now: float,
    nice: int = 0,
) -> BackgroundSave:
    """Fork a child that saves a snapshot of the stores as they are at this instant."""
    r, w = os.pipe()
    parent = os.getpid()
    try:
        pid = os.fork()
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:  # pragma: no cover - runs in the child; the tests observe its effects
        _child(w, r, parent, directory, keyspace, sessions, base_segment, now, nice)
    os.close(w)
    os.set_blocking(r, False)
    return BackgroundSave(pid, r, directory, bytearray())


def _child(
    w: int,
    r: int,
    parent: int,
    directory: Path,
    keyspace: Keyspace,
    sessions: SessionStore,
    base_segment: int,
    now: float,
    nice: int,
) -> None:  # pragma: no cover - see start()
    code = 1
    report: dict[str, object] = {"ok": False, "error": "unknown"}
    try:
        gc.disable()  # a collection would touch (and so copy) every page of the heap for nothing
        os.close(r)
        _isolate(w, parent)
        if nice:
            # Off by default: on a busy box a niced child crawls (measured 6x slower at load 5
            # on 2 cores) while the journal and the copy-on-write memory keep growing.
            os.nice(nice)
        stats = snapshot.save(directory, keyspace, sessions, base_segment=base_segment, now=now)
        report = {
            "ok": True,
            "stats": {
                "bytes": stats.bytes,
                "boards": stats.boards,
                "entries": stats.entries,
                "sessions": stats.sessions,
                "base_segment": stats.base_segment,
                "created_at": stats.created_at,
            },
        }
        code = 0
    except BaseException as exc:
        report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        datadir.write_all(w, orjson.dumps(report))
    except BaseException:
        code = code or 1  # the parent treats a missing report as failure anyway
    os._exit(code)


def _isolate(keep: int, parent: int) -> None:  # pragma: no cover - child only
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(ValueError):  # only the main thread may; fork keeps just this one
        signal.set_wakeup_fd(-1)  # the parent's loop reads that fd: never write to it
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY or limit > (1 << 20):
        limit = 1 << 20
    os.closerange(3, keep)
    os.closerange(keep + 1, limit)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)  # dlopen(NULL): no ldconfig subprocess
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl took effect
            raise OSError(errno.ESRCH, "parent exited before the snapshot started")
