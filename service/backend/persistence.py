"""Persistence for a serving process: recovery, the journal, background snapshots, health.

    recover()   lock the data directory, load snapshot + journal (store/disk/recovery.py)
    journal     every store event is journalled by a JournalFlusher (journal_flusher.py):
                group commit, fsync per policy, ``commit()`` for fsync=always
    snapshots   store/disk/bgsave.py forks a child that writes the state at one instant

Snapshots: at the fork instant the journal rotates to a new segment B, so snapshot (state at
the fork) + segments >= B is the exact state. The child verifies the file by loading it back
before installing it; the previous generation and its segments stay (store/disk/datadir.py), and
older segments go once the new snapshot is installed.
Snapshots run every ``snapshot_interval``, on ``snapshot()`` and at ``stop()``.

Health. Any failed journal write, fsync or segment creation, and any failed snapshot, marks
persistence unhealthy: ``check_writable()`` raises store.Unavailable, reads go on. With
fsync=always the changes whose records a journal failure lost are undone first (``_undo``;
journal_flusher.py, "Undo"), so every write answered 503 left nothing behind. After a
journal failure the journal stops recording (a gap: the next segment carries FLAG_AFTER_GAP).
Only a complete snapshot plus a freshly created segment, with no failure in between, makes it
healthy again; a healer task retries that with backoff (1 s .. 30 s).

Huge pages. After recovery, after each snapshot and whenever the heap grew COLLAPSE_GROWTH,
a worker thread moves the heap onto 2 MiB pages (service/hugepages.py ``collapse``), so the
next snapshot's fork copies one page-table entry per 2 MiB for all but the newest memory.

Everything here runs on the event loop thread except ``recover()`` (a worker thread, before
serving), the journal's I/O thread and ``hugepages.collapse`` (a worker thread).
"""

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from service import hugepages, memory
from service.backend import heap
from service.backend.journal_flusher import JournalFlusher, describe
from service.settings import Settings
from store.clock import Clock
from store.disk import bgsave, datadir, recovery
from store.disk.snapshot import SnapshotStats
from store.errors import Unavailable
from store.events import StoreEvent
from store.keyspace import Keyspace
from store.sessions import SessionStore

log = logging.getLogger("rankd.persistence")

COLLAPSE_CHECK = 5.0  # seconds between looks at the heap's growth (one read of /proc/self/statm)
COLLAPSE_GROWTH = 128 << 20  # resident bytes grown since the last collapse that start another


def _log_collapse(done: "asyncio.Future[tuple[int, float]]") -> None:
    if done.cancelled():
        return
    if done.exception() is not None:
        log.warning("collapsing huge pages failed: %r", done.exception())
        return
    blocks, seconds = done.result()
    log.debug("heap: %d huge pages (collapsed in %.0f ms)", blocks, seconds * 1e3)


class Persistence:
    heal_delay = 1.0  # first retry of a healing snapshot; doubles up to heal_delay_max
    heal_delay_max = 30.0
    snapshot_timeout = 3600.0  # a child running longer is killed and the save fails

    def __init__(
        self, settings: Settings, keyspace: Keyspace, sessions: SessionStore, clock: Clock
    ) -> None:
        self._dir = Path(settings.data_dir)
        self._interval = settings.snapshot_interval
        self._on_bad_data = settings.on_bad_data
        self._keyspace = keyspace
        self._sessions = sessions
        self._clock = clock
        self.needs_commit = settings.fsync == "always"
        # Stats for /metrics.
        self.healthy = False
        self.reason: str | None = "not recovered yet"
        self.last_snapshot_at: float | None = None
        self.last_snapshot_seconds: float | None = None
        self.recovery: recovery.RecoveryReport | None = None
        self._journal = JournalFlusher(
            settings.fsync,
            self._set_unhealthy,
            lambda: self.reason,
            on_lost=self._undo,
            offload=lambda: self._job is not None,  # a child is writing a snapshot
        )
        self.fsync_seconds = self._journal.fsync_seconds
        self.journal = self._journal  # the write path sets journal.author (who is writing)
        self._lock_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._snap_lock: asyncio.Lock | None = None
        # "periodic", "healer", "freezer", "collapser"
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._job: bgsave.BackgroundSave | None = None  # the running snapshot child
        self._collapsing: asyncio.Future[tuple[int, float]] | None = None  # hugepages.collapse
        self._collapse_stop = threading.Event()  # set by stop(): a running collapse ends
        self._collapsed_at = 0  # resident bytes when the last collapse began
        self._collapse_gate = threading.Lock()  # held by the collapse for each block it copies
        self._collapser: concurrent.futures.ThreadPoolExecutor | None = None  # its own thread
        self._forking = False  # a fork is coming: the collapse pauses (_pause_collapse)
        self._fork_records = 0  # journal records appended before its fork (in its image)
        self._stopping = False
        keyspace.observers.append(self._journal.append)
        sessions.observers.append(self._journal.append)

    @property
    def snapshot_running(self) -> bool:
        return self._snap_lock is not None and self._snap_lock.locked()

    @property
    def journal_bytes(self) -> int:
        """Journal bytes appended since the last snapshot's rotation."""
        return self._journal.bytes

    # -- start-up ------------------------------------------------------------------------------

    def recover(self, progress: recovery.RecoveryProgress | None = None) -> dict[str, Any]:
        """Lock the data directory, load snapshot + journal (store/disk/recovery.py). Synchronous.

        The cyclic GC is off while loading and the loaded heap is then frozen (gc.freeze):
        every object recovery creates is long-lived data without reference cycles. Left to the
        collector, loading runs ~2x slower (each full collection re-walks the growing heap),
        and the first full collection after start-up would stall the event loop for as long
        as a walk over millions of objects takes -- and would touch, and so copy, every page
        of a forked snapshot child's shared image.
        """
        self._lock_fd = datadir.open_dir(self._dir)
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            report = recovery.recover(
                self._dir,
                self._keyspace,
                self._sessions,
                on_bad_data=self._on_bad_data,
                now=self._clock.now,
                progress=progress,
            )
            if report.needs_snapshot:
                # History was moved aside or fell back: pin the state we kept, as both
                # generations, before any new record (a hole must never be written after).
                now = self._clock.now()
                recovery.pin(
                    self._dir, self._keyspace, self._sessions, base=report.next_segment, now=now
                )
                report.snapshot_created_at = now
        except BaseException:
            if progress is not None:
                progress.running = False  # failed: nothing is moving any more
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()
        self.recovery = report
        self.last_snapshot_at = report.snapshot_created_at
        self._journal.open(self._dir, report.next_segment)
        self._journal.bytes = sum(
            p.stat().st_size for n, p in datadir.segments(self._dir) if n >= report.snapshot_base
        )
        self.healthy, self.reason = True, None
        return {
            "snapshot_entries": report.snapshot_entries,
            "snapshot_sessions": report.snapshot_sessions,
            "journal_records": report.journal_records,
            "truncated_bytes": report.truncated_bytes,
            "expired_at_load": report.expired_at_load,
            "moved_aside": report.moved_aside,
            "seconds": round(report.seconds, 3),
        }

    async def start(self) -> None:
        assert self.recovery is not None, "recover() first"
        self._loop = asyncio.get_running_loop()
        self._snap_lock = asyncio.Lock()
        await self._journal.start()
        # Keeps what is created while serving out of full collections, as recover() did for
        # what it loaded (service/backend/heap.py).
        self._tasks["freezer"] = asyncio.create_task(heap.grow_frozen(), name="rankd-freezer")
        self._collapse_heap()  # the loaded heap: the first snapshot's fork is short too
        if hugepages.collapsible():
            self._tasks["collapser"] = asyncio.create_task(
                self._collapse_on_growth(), name="rankd-collapser"
            )
        if self._interval > 0:
            self._tasks["periodic"] = asyncio.create_task(self._periodic(), name="rankd-snapshots")

    async def stop(self) -> None:
        """Final snapshot, then drain and close the journal. Raises if the snapshot failed."""
        self._stopping = True
        self._collapse_stop.set()
        if self._collapser is not None:
            self._collapser.shutdown(wait=False)  # the collapse ends after its block in hand
        for name in ("periodic", "healer", "freezer", "collapser"):
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        error: Unavailable | None = None
        try:
            await self.snapshot()
        except Unavailable as exc:
            error = exc
        await self._journal.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if error is not None:
            raise error

    # -- the write path --------------------------------------------------------------------------

    def check_writable(self) -> None:
        if not self.healthy:
            raise Unavailable(
                f"persistence is unhealthy ({self.reason}); writes are refused until a "
                "snapshot succeeds, reads still work"
            )

    async def commit(self) -> None:
        """Resolve once every record appended so far is durable; Unavailable if it cannot be."""
        await self._journal.commit()

    # -- snapshots -----------------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        """Take a snapshot now (after any running one). Unavailable if it did not happen."""
        assert self._snap_lock is not None, "start() first"
        async with self._snap_lock:
            return await self._snapshot()

    async def _snapshot(self) -> dict[str, Any]:
        began = time.perf_counter()
        now = self._clock.now()
        failures = self._journal.failures
        gated = self._pause_collapse()
        try:
            # Rotate and fork with no await in between: the child's image and the new
            # segment's first record must meet at the same instant.
            journal_bytes = self._journal.bytes
            base = self._journal.rotate()
            try:
                job = bgsave.start(
                    self._dir, self._keyspace, self._sessions, base_segment=base, now=now
                )
            except OSError as exc:
                self._journal.bytes += journal_bytes
                return self._snapshot_failed(f"fork failed: {describe(exc)}")
            self._job, self._fork_records = job, self._journal.appended
        finally:
            self._forking = False  # from here on the child holds the collapse (_job)
            if gated:
                self._collapse_gate.release()
        try:
            stats = await asyncio.wait_for(self._wait_child(job), self.snapshot_timeout)
        except bgsave.SaveFailed as exc:
            self._journal.bytes += journal_bytes
            return self._snapshot_failed(str(exc))
        except TimeoutError:
            job.kill()
            self._journal.bytes += journal_bytes
            return self._snapshot_failed(f"no result after {self.snapshot_timeout:.0f} s")
        except asyncio.CancelledError:
            job.kill()
            self._journal.bytes += journal_bytes
            raise
        finally:
            self._job = None
            self._collapse_heap()
        with contextlib.suppress(Unavailable):
            await self._journal.barrier(
                sync=False
            )  # the new segment exists (or creating it failed)
        if self._journal.created < base or self._journal.failures != failures:
            return self._snapshot_failed(
                f"snapshot written, but the journal after it failed ({self.reason})"
            )
        await self._journal.run_io(self._remove_obsolete_segments)
        seconds = time.perf_counter() - began
        self.last_snapshot_at, self.last_snapshot_seconds = now, seconds
        if not self.healthy:
            log.warning("persistence healthy again: snapshot + new journal segment %d", base)
            self.healthy, self.reason = True, None
        log.info(
            "snapshot: %d boards, %d entries, %d sessions, %d bytes in %.3f s",
            stats.boards,
            stats.entries,
            stats.sessions,
            stats.bytes,
            seconds,
        )
        return {
            "bytes": stats.bytes,
            "seconds": round(seconds, 6),
            "boards": stats.boards,
            "entries": stats.entries,
            "sessions": stats.sessions,
        }

    async def _wait_child(self, job: bgsave.BackgroundSave) -> SnapshotStats:
        assert self._loop is not None
        loop = self._loop
        eof: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if job.read() and not eof.done():
                eof.set_result(None)

        loop.add_reader(job.fd, readable)
        try:
            await eof
        finally:
            loop.remove_reader(job.fd)
        # The pipe closes as the child exits; the zombie follows within microseconds.
        delay = 0.001
        while not job.reap():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return job.result()

    def _collapse_heap(self) -> None:
        """The child is gone: put the huge pages its copy-on-write split back together, and
        the heap allocated since the last time onto huge pages, in a worker thread, so the
        next fork stays short (service/hugepages.py). Also after recovery (start)."""
        if self._stopping or not hugepages.collapsible() or self._loop is None:
            return
        if self._collapsing is not None and not self._collapsing.done():
            return
        self._collapsed_at = memory.resident_bytes()
        try:
            if self._collapser is None:
                # Its own thread, at nice 19 (hugepages.background): on a busy box it takes
                # only spare CPU (~10 ms of CPU per 2 MiB block on a VM: measured competing with
                # a 10,000-subscriber fan-out for the loop's core, loadtest/RESULTS.md).
                self._collapser = concurrent.futures.ThreadPoolExecutor(
                    1, "rankd-heap", initializer=hugepages.background
                )
            self._collapsing = self._loop.run_in_executor(
                self._collapser, hugepages.collapse, hugepages.MAX_SECONDS, self._collapse_stop,
                self._collapse_held, self._collapse_gate,
            )  # fmt: skip
        except (RuntimeError, OSError, MemoryError) as exc:
            # No thread to run it in (out of memory or threads): only a speed-up, and this
            # runs inside the snapshot's clean-up, which must not fail for it.
            log.warning("collapsing huge pages skipped: %r", exc)
            return
        self._collapsing.add_done_callback(_log_collapse)

    def _collapse_held(self) -> bool:
        """A fork is about to happen or a snapshot child shares the heap: the collapse waits
        (read by its thread: plain attributes)."""
        return self._forking or self._job is not None

    def _pause_collapse(self) -> bool:
        """Before a fork: hold the collapse off its next block (both take the mmap lock for
        writing, and the fork would wait for a block's copy). True when no block is in hand
        (the caller releases ``_collapse_gate`` after the fork); else the fork waits for that
        one block in the kernel. No await: the fork must follow its caller's last write."""
        self._forking = True
        return self._collapse_gate.acquire(blocking=False)

    def _snapshot_failed(self, why: str) -> dict[str, Any]:
        log.error("snapshot failed: %s", why)
        self._set_unhealthy(f"snapshot failed: {why}")
        raise Unavailable(f"snapshot failed: {why}")

    def _remove_obsolete_segments(self) -> None:
        """I/O thread: delete segments no snapshot generation needs any more (best effort).

        The snapshot just installed was verified by loading it back (store/disk/snapshot.py), so the
        generation before it may go; the one it demoted and its journal stay (datadir.py).
        """
        try:
            recovery.remove_obsolete_segments(self._dir)
        except OSError as exc:
            # Harmless: recovery ignores (and deletes) segments below the oldest generation.
            log.warning("could not delete old journal segments: %s", describe(exc))

    def _undo(self, events: list[StoreEvent], first: int) -> None:
        """fsync=always, journal failure: revert the changes whose records were lost, newest
        first, before their writers hear 503 (service/backend/journal_flusher.py, "Undo")."""
        keyspace, sessions = self._keyspace, self._sessions
        try:
            for event in reversed(events):
                if event[0] == "sput" or event[0] == "stouch" or event[0] == "sdel":
                    sessions.undo(event)
                else:
                    keyspace.undo(event)
        except Exception:
            # A bug, never a disk state: say so loudly; the waiters still get their 503.
            log.exception("undoing %d lost journal records failed", len(events))
        job = self._job
        if job is not None and first < self._fork_records:
            # The running snapshot child forked after some of those changes, so its image holds
            # writes that were just refused: it must not become the snapshot. Killing it makes
            # the save fail (the healer retries from the undone state). A child that already
            # renamed its file escapes: see README "Durability" for that window.
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.pid, signal.SIGKILL)
        log.error(
            "journal failure: undid the last %d changes (records %d..%d were not durable; "
            "their writers are answered 503)",
            len(events),
            first + 1,
            first + len(events),
        )

    # -- health --------------------------------------------------------------------------------

    def _set_unhealthy(self, reason: str) -> None:
        if self.healthy:
            log.error(
                "persistence unhealthy, refusing writes until a snapshot succeeds: %s", reason
            )
        self.healthy, self.reason = False, reason
        if "healer" not in self._tasks and self._loop is not None and not self._stopping:
            self._tasks["healer"] = self._loop.create_task(self._heal(), name="rankd-heal")

    async def _heal(self) -> None:
        delay = self.heal_delay
        try:
            while not self.healthy:
                await asyncio.sleep(delay)
                try:
                    await self.snapshot()
                except Exception as exc:  # Unavailable, or out of memory & co.
                    # Anything but cancellation: a healer that died would leave the writes the
                    # journal lost (fsync everysec/no) unsaved until the final snapshot.
                    if not isinstance(exc, Unavailable):
                        log.error("healing snapshot raised %r", exc)
                    delay = min(delay * 2, self.heal_delay_max)
                    log.warning("persistence still unhealthy; next attempt in %.0f s", delay)
        finally:
            if self._tasks.get("healer") is asyncio.current_task():
                del self._tasks["healer"]

    def _check(self) -> None:
        """Assert the journal and health invariants (tests call it after every scenario)."""
        self._journal._check()
        assert self.healthy == (self.reason is None)

    async def _collapse_on_growth(self) -> None:
        """Between snapshots: once the heap grew COLLAPSE_GROWTH since the last collapse, move
        it onto huge pages now rather than after the next snapshot, whose fork then copies page
        tables only for what grew since (service/hugepages.py)."""
        while True:
            await asyncio.sleep(COLLAPSE_CHECK)
            grown = memory.resident_bytes() - self._collapsed_at
            if grown >= COLLAPSE_GROWTH and self._job is None:
                self._collapse_heap()

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self.healthy:  # the healer owns retries while unhealthy
                try:
                    await self.snapshot()
                except Unavailable:
                    pass  # logged, and persistence is unhealthy: the healer retries
                except Exception as exc:  # keep taking snapshots
                    log.error("periodic snapshot raised %r", exc)
