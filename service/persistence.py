"""Persistence for a serving process: journal group commit, background snapshots, health.

The store emits one event per mutation; ``_on_event`` encodes it into an in-memory buffer (a
few microseconds, no I/O). One flusher task hands buffered records to one I/O thread, which
writes them and fsyncs per policy, so records reach the file in store order and the event
loop never waits on the disk:

    write handler --> store --> _on_event: frame into _buf, wake flusher
                 \\--> await commit()   (fsync=always only) resolves when its record is durable
    flusher:  take _buf --> I/O thread: os.write; os.fsync (always: every batch; everysec:
              once a second; no: never) --> resolve every commit() the batch covered

Group commit: every write of a loop turn (and every write arriving while an fsync runs) shares
the next fsync. With ``always`` a reply is sent only after its record is fsynced; a record
that could not be made durable fails its ``commit()`` with store.Unavailable (HTTP 503).

Snapshots (store/bgsave.py): at the fork instant the journal rotates to a new segment B, so
snapshot (state at the fork) + segments >= B is the exact state. Old segments go once the
snapshot is durable. Snapshots run every ``snapshot_interval``, on ``snapshot()`` and at
``stop()``.

Health. Any failed journal write, fsync or segment creation, and any failed snapshot, marks
persistence unhealthy: ``check_writable()`` raises store.Unavailable, reads go on. An fsync
is never retried -- after a failure the kernel may have dropped the dirty pages, so the
file's content is unknown -- and the journal stops recording (a gap: the next segment carries
FLAG_AFTER_GAP). Only a complete snapshot plus a freshly created segment, with no failure in
between, makes it healthy again; a healer task retries that with backoff (1 s .. 30 s).

Everything here runs on the event loop thread except ``recover()`` (a worker thread, before
serving) and ``_io_batch`` (the I/O thread, which owns the SegmentWriter).
"""

import asyncio
import contextlib
import errno
import gc
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service.metrics import Histogram
from service.settings import Settings
from store import bgsave, datadir, journal, recovery
from store.clock import Clock
from store.errors import Unavailable
from store.keyspace import Keyspace
from store.sessions import SessionStore
from store.snapshot import SnapshotStats
from store.snapshot import save as save_snapshot

log = logging.getLogger("rankd.persistence")

Chunk = tuple[int, int, bytes]  # (segment number, segment flags, frames)


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code, str(code)) if code is not None else type(exc).__name__
    return f"{name} ({getattr(exc, 'strerror', None) or exc})"


class Persistence:
    heal_delay = 1.0  # first retry of a healing snapshot; doubles up to heal_delay_max
    heal_delay_max = 30.0
    snapshot_timeout = 3600.0  # a child running longer is killed and the save fails

    def __init__(
        self, settings: Settings, keyspace: Keyspace, sessions: SessionStore, clock: Clock
    ) -> None:
        self._dir = Path(settings.data_dir)
        self._policy = settings.fsync
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
        self.fsync_seconds = Histogram()
        self.journal_bytes = 0  # appended since the last snapshot's rotation
        self.recovery: recovery.RecoveryReport | None = None
        # Journal state (event loop thread).
        self._recording = False  # False: events are not journalled (before recovery, after
        self._gap = False  # a failure); True once records were lost since the last rotation
        self._segment = 0  # the segment new records go to
        self._buf = bytearray()
        self._chunks: list[Chunk] = []  # cut from _buf, waiting for the flusher
        self._appended = 0  # records appended, ever
        self._cut_upto = 0  # records moved into _chunks
        self._durable = 0  # records written (and fsynced, with fsync=always)
        self._lost_upto = 0  # records up to here were appended but lost in a failure
        self._failures = 0  # journal failures, ever: a snapshot heals only if none in between
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._barriers: list[tuple[bool, asyncio.Future[None]]] = []
        self._unsynced = False
        self._last_sync = time.monotonic()
        # Machinery.
        self._lock_fd: int | None = None
        self._writer: journal.SegmentWriter | None = None
        self._io = ThreadPoolExecutor(1, thread_name_prefix="rankd-journal")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._snap_lock: asyncio.Lock | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        keyspace.observers.append(self._on_event)
        sessions.observers.append(self._on_event)

    # -- start-up ------------------------------------------------------------------------------

    def recover(self) -> dict[str, Any]:
        """Lock the data directory, load snapshot + journal (store/recovery.py). Synchronous.

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
            )
            if report.needs_snapshot:
                # History was moved aside: pin the state we kept before any new record.
                now = self._clock.now()
                save_snapshot(
                    self._dir,
                    self._keyspace,
                    self._sessions,
                    base_segment=report.next_segment,
                    now=now,
                )
                report.snapshot_created_at = now
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()
        self.recovery = report
        self.last_snapshot_at = report.snapshot_created_at
        self.journal_bytes = sum(
            p.stat().st_size for n, p in datadir.segments(self._dir) if n >= report.snapshot_base
        )
        self._segment = report.next_segment
        self._writer = journal.SegmentWriter(
            self._dir, sync=self._policy != "no", created=report.next_segment - 1
        )
        self._recording = True
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
        assert self._writer is not None, "recover() first"
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._snap_lock = asyncio.Lock()
        self._tasks["flusher"] = asyncio.create_task(self._flusher(), name="rankd-journal")
        # Create the first segment now: a data directory we cannot write shows at once.
        self._chunks.append((self._segment, 0, b""))
        with contextlib.suppress(Unavailable):
            await self._barrier(sync=False)
        if self._interval > 0:
            self._tasks["periodic"] = asyncio.create_task(self._periodic(), name="rankd-snapshots")

    async def stop(self) -> None:
        """Final snapshot, then drain and close the journal. Raises if the snapshot failed."""
        self._stopping = True
        for name in ("periodic", "healer"):
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
        with contextlib.suppress(Unavailable):
            await self._barrier(sync=True)  # everysec/no: nothing written is left unsynced
        self._recording = False
        flusher = self._tasks.pop("flusher")
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        assert self._loop is not None and self._writer is not None
        try:
            await self._loop.run_in_executor(self._io, self._writer.close)
        except OSError as exc:
            log.error("closing the journal failed: %s", _describe(exc))
        self._io.shutdown(wait=True)
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

    def _on_event(self, event: tuple[Any, ...]) -> None:
        if self._recording:
            self.journal_bytes += journal.append_event(self._buf, event)
            self._appended += 1
            if self._wake is not None:
                self._wake.set()

    async def commit(self) -> None:
        """Resolve once every record appended so far is durable; Unavailable if it cannot be."""
        target = self._appended
        if self._durable >= target:
            return
        if not self._recording or target <= self._lost_upto:
            raise Unavailable(f"the write could not be made durable ({self.reason})")
        assert self._loop is not None and self._wake is not None
        fut = self._loop.create_future()
        self._waiters.append((target, fut))
        self._wake.set()
        await fut

    async def _barrier(self, *, sync: bool) -> None:
        """Wait for the flusher to finish a batch that starts after this call."""
        assert self._loop is not None and self._wake is not None
        fut = self._loop.create_future()
        self._barriers.append((sync, fut))
        self._wake.set()
        await fut

    def _cut(self) -> None:
        if self._buf:
            self._chunks.append((self._segment, 0, bytes(self._buf)))
            self._buf = bytearray()
            self._cut_upto = self._appended

    # -- the flusher ---------------------------------------------------------------------------

    async def _flusher(self) -> None:
        assert self._loop is not None and self._wake is not None
        loop, wake = self._loop, self._wake
        everysec = self._policy == "everysec"
        while True:
            if not (self._buf or self._chunks or self._barriers):
                if everysec and self._unsynced:
                    timeout = max(0.0, self._last_sync + 1.0 - time.monotonic())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout)
                else:
                    await wake.wait()
            wake.clear()
            self._cut()
            chunks, self._chunks = self._chunks, []
            barriers, self._barriers = self._barriers, []
            upto = self._cut_upto
            data = any(c[2] for c in chunks)
            if self._policy == "always":
                sync = data or self._unsynced
            elif everysec:
                sync = (data or self._unsynced) and time.monotonic() - self._last_sync >= 1.0
            else:
                sync = False
            sync = sync or any(s for s, _ in barriers)
            assert self._writer is not None
            try:
                took = await loop.run_in_executor(self._io, self._io_batch, chunks, sync)
            except OSError as exc:
                self._journal_failed(exc, barriers)
                continue
            if sync:
                self._unsynced = False
                self._last_sync = time.monotonic()
                if took >= 0:
                    self.fsync_seconds.observe(took)
            elif data:
                self._unsynced = True
            self._durable = max(self._durable, upto)
            self._resolve(barriers)

    def _io_batch(self, chunks: list[Chunk], sync: bool) -> float:
        """Runs on the I/O thread. Returns the fsync's duration, or -1 if none ran."""
        w = self._writer
        assert w is not None
        try:
            for number, flags, data in chunks:
                if w.number != number:
                    w.open(number, flags)
                if data:
                    w.write(data)
            if sync and w.dirty and w.sync_enabled:
                began = time.perf_counter()
                w.fsync()
                return time.perf_counter() - began
            return -1.0
        except BaseException:
            w.abandon()
            raise

    def _resolve(self, barriers: list[tuple[bool, asyncio.Future[None]]]) -> None:
        durable = self._durable
        keep = []
        for target, fut in self._waiters:
            if target <= durable:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep
        for _, fut in barriers:
            if not fut.done():
                fut.set_result(None)

    def _journal_failed(
        self, exc: OSError, barriers: list[tuple[bool, asyncio.Future[None]]]
    ) -> None:
        """Records after ``_durable`` are lost: stop recording, fail whoever waits for them."""
        self._failures += 1
        self._recording = False
        self._gap = True
        self._buf = bytearray()
        self._chunks.clear()
        self._cut_upto = self._lost_upto = self._appended
        self._unsynced = False
        reason = f"journal write failed: {_describe(exc)}"
        self._set_unhealthy(reason)
        error = Unavailable(f"the write could not be made durable ({reason})")
        for _, fut in [*self._waiters, *barriers]:
            if not fut.done():
                fut.set_exception(error)
        self._waiters = []

    # -- snapshots -----------------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        """Take a snapshot now (after any running one). Unavailable if it did not happen."""
        assert self._snap_lock is not None, "start() first"
        async with self._snap_lock:
            return await self._snapshot()

    async def _snapshot(self) -> dict[str, Any]:
        assert self._writer is not None and self._wake is not None
        began = time.perf_counter()
        now = self._clock.now()
        failures = self._failures
        # Rotate and fork with no await in between: the child's image and the new segment's
        # first record must meet at the same instant.
        self._cut()
        base = self._writer.created + 1
        flags = journal.FLAG_AFTER_GAP if self._gap else 0
        self._segment = base
        self._chunks.append((base, flags, b""))
        self._gap = False
        self._recording = True
        journal_bytes, self.journal_bytes = self.journal_bytes, 0
        self._wake.set()
        try:
            job = bgsave.start(
                self._dir, self._keyspace, self._sessions, base_segment=base, now=now
            )
        except OSError as exc:
            self.journal_bytes += journal_bytes
            return self._snapshot_failed(f"fork failed: {_describe(exc)}")
        try:
            stats = await asyncio.wait_for(self._wait_child(job), self.snapshot_timeout)
        except bgsave.SaveFailed as exc:
            self.journal_bytes += journal_bytes
            return self._snapshot_failed(str(exc))
        except TimeoutError:
            job.kill()
            self.journal_bytes += journal_bytes
            return self._snapshot_failed(f"no result after {self.snapshot_timeout:.0f} s")
        except asyncio.CancelledError:
            job.kill()
            self.journal_bytes += journal_bytes
            raise
        with contextlib.suppress(Unavailable):
            await self._barrier(sync=False)  # the new segment exists (or creating it failed)
        if self._writer.created < base or self._failures != failures:
            return self._snapshot_failed(
                f"snapshot written, but the journal after it failed ({self.reason})"
            )
        assert self._loop is not None
        await self._loop.run_in_executor(self._io, self._remove_segments_below, base)
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

    def _snapshot_failed(self, why: str) -> dict[str, Any]:
        log.error("snapshot failed: %s", why)
        self._set_unhealthy(f"snapshot failed: {why}")
        raise Unavailable(f"snapshot failed: {why}")

    def _remove_segments_below(self, base: int) -> None:
        """I/O thread: delete segments the durable snapshot made obsolete (best effort)."""
        try:
            removed = 0
            for number, path in datadir.segments(self._dir):
                if number < base:
                    path.unlink()
                    removed += 1
            if removed:
                datadir.fsync_dir(self._dir)
        except OSError as exc:
            # Harmless: recovery ignores (and deletes) segments below the snapshot's base.
            log.warning("could not delete old journal segments: %s", _describe(exc))

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
                except Unavailable:
                    delay = min(delay * 2, self.heal_delay_max)
                    log.warning("persistence still unhealthy; next attempt in %.0f s", delay)
        finally:
            if self._tasks.get("healer") is asyncio.current_task():
                del self._tasks["healer"]

    def _check(self) -> None:
        """Assert the journal bookkeeping invariants (tests call it after every scenario)."""
        assert self._durable <= self._cut_upto <= self._appended, (
            self._durable,
            self._cut_upto,
            self._appended,
        )
        assert self._lost_upto <= self._appended
        assert all(target > self._durable for target, _ in self._waiters)
        assert not self._buf or self._recording  # nothing is buffered while not recording
        assert all(number >= self._segment - 1 for number, _, _ in self._chunks)
        if self._writer is not None:
            assert self._writer.created <= self._segment
        assert self.healthy == (self.reason is None)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self.healthy:  # the healer owns retries while unhealthy
                with contextlib.suppress(Unavailable):
                    await self.snapshot()
