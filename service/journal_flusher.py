"""Journal group commit: store events become frames in memory, one I/O thread writes them.

The store emits one event per mutation; ``append`` encodes it into an in-memory buffer (a few
microseconds, no I/O). One flusher task hands buffered records to one I/O thread, which writes
them and fsyncs per policy, so records reach the file in store order and the event loop never
waits on the disk:

    write handler --> store --> append: frame into _buf, wake flusher
                 \\--> await commit()   (fsync=always only) resolves when its record is durable
    flusher:  take _buf --> I/O thread: os.write; os.fsync (always: every batch; everysec:
              once a second; no: never) --> resolve every commit() the batch covered

Group commit: every write of a loop turn (and every write arriving while an fsync runs) shares
the next fsync. With ``always`` a reply is sent only after its record is fsynced; a record
that could not be made durable fails its ``commit()`` with store.Unavailable (HTTP 503).

Records are counted, never tracked one by one: ``_appended`` (ever) >= ``_cut_upto`` (handed
to the flusher) >= ``_durable`` (written, and fsynced with fsync=always); a ``commit()`` waits
for ``_durable`` to pass the count at its call.

Failure. A failed write, fsync or segment creation loses every record after ``_durable``: the
flusher stops recording (a gap), fails whoever waits, and reports ``on_failure(reason)``. An
fsync is never retried -- after a failure the kernel may have dropped the dirty pages, so the
file's content is unknown. Recording resumes only at ``rotate()`` (a snapshot starts), whose
new segment carries FLAG_AFTER_GAP if records were lost (store/journal.py).

Everything here runs on the event loop thread except ``_io_batch`` and ``run_io`` callables
(the I/O thread, which owns the SegmentWriter).
"""

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from service.metrics import Histogram
from store import journal
from store.errors import Unavailable

log = logging.getLogger("rankd.persistence")

Chunk = tuple[int, int, bytes]  # (segment number, segment flags, frames)
NUDGE_AFTER = 0.002  # seconds an I/O call may be pending before the loop lends it the GIL
NUDGE_SLEEP = 0.0001
FsyncPolicy = Literal["always", "everysec", "no"]
T = TypeVar("T")


def describe(exc: BaseException) -> str:
    """``ENOSPC (No space left on device)``: an OSError as an operator reads it in a log."""
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code, str(code)) if code is not None else type(exc).__name__
    return f"{name} ({getattr(exc, 'strerror', None) or exc})"


class JournalFlusher:
    """The journal's write side for one data directory; see the module docstring."""

    def __init__(
        self,
        policy: FsyncPolicy,
        on_failure: Callable[[str], None],
        reason: Callable[[], str | None],
    ) -> None:
        """``on_failure(reason)``: records were lost. ``reason()``: why persistence is
        unhealthy now, quoted by a ``commit()`` that cannot succeed."""
        self._policy = policy
        self._on_failure = on_failure
        self._reason = reason
        self.fsync_seconds = Histogram()
        self.bytes = 0  # appended since the last rotation
        self.failures = 0  # journal failures, ever: a snapshot heals only if none in between
        self._recording = False  # False: events are not journalled (before open(), after
        self._gap = False  # a failure); True once records were lost since the last rotation
        self._segment = 0  # the segment new records go to
        self._buf = bytearray()
        self._chunks: list[Chunk] = []  # cut from _buf, waiting for the flusher
        self._appended = 0  # records appended, ever
        self._cut_upto = 0  # records moved into _chunks
        self._durable = 0  # records written (and fsynced, with fsync=always)
        self._lost_upto = 0  # records up to here were appended but lost in a failure
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._barriers: list[tuple[bool, asyncio.Future[None]]] = []
        self._unsynced = False
        self._last_sync = time.monotonic()
        self._writer: journal.SegmentWriter | None = None
        self._io = ThreadPoolExecutor(1, thread_name_prefix="rankd-journal")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def created(self) -> int:
        """The highest segment number created successfully so far."""
        assert self._writer is not None, "open() first"
        return self._writer.created

    def open(self, directory: Path, next_segment: int) -> None:
        """Record from now on into segment ``next_segment`` (created by ``start``)."""
        self._segment = next_segment
        self._writer = journal.SegmentWriter(
            directory, sync=self._policy != "no", created=next_segment - 1
        )
        self._recording = True

    async def start(self) -> None:
        assert self._writer is not None, "open() first"
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._flusher(), name="rankd-journal")
        # Create the first segment now: a data directory we cannot write shows at once.
        self._chunks.append((self._segment, 0, b""))
        with contextlib.suppress(Unavailable):
            await self.barrier(sync=False)

    async def close(self) -> None:
        """Write and sync what is buffered, stop recording, close the segment and the thread."""
        with contextlib.suppress(Unavailable):
            await self.barrier(sync=True)  # everysec/no: nothing written is left unsynced
        self._recording = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert self._loop is not None and self._writer is not None
        try:
            await self.run_io(self._writer.close)
        except OSError as exc:
            log.error("closing the journal failed: %s", describe(exc))
        self._io.shutdown(wait=True)

    # -- the write path --------------------------------------------------------------------------

    def append(self, event: tuple[Any, ...]) -> None:
        """Store observer: journal one event (nothing while not recording)."""
        if self._recording:
            self.bytes += journal.append_event(self._buf, event)
            self._appended += 1
            if self._wake is not None:
                self._wake.set()

    async def commit(self) -> None:
        """Resolve once every record appended so far is durable; Unavailable if it cannot be."""
        target = self._appended
        if self._durable >= target:
            return
        if not self._recording or target <= self._lost_upto:
            raise Unavailable(f"the write could not be made durable ({self._reason()})")
        assert self._loop is not None and self._wake is not None
        fut = self._loop.create_future()
        self._waiters.append((target, fut))
        self._wake.set()
        await fut

    async def barrier(self, *, sync: bool) -> None:
        """Wait for the flusher to finish a batch that starts after this call."""
        assert self._loop is not None and self._wake is not None
        fut = self._loop.create_future()
        self._barriers.append((sync, fut))
        self._wake.set()
        await fut

    def rotate(self) -> int:
        """Start a new segment at this instant and return its number (a snapshot's base).

        No await: the caller forks its snapshot child before yielding, so the child's image and
        the new segment's first record meet at the same instant. Resumes recording after a
        failure; the new segment then carries FLAG_AFTER_GAP.
        """
        assert self._writer is not None and self._wake is not None
        self._cut()
        base = self._writer.created + 1
        flags = journal.FLAG_AFTER_GAP if self._gap else 0
        self._segment = base
        self._chunks.append((base, flags, b""))
        self._gap = False
        self._recording = True
        self.bytes = 0
        self._wake.set()
        return base

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the I/O thread, in order with the journal's writes.

        While it is pending, the loop lends that thread the GIL every NUDGE_AFTER seconds.
        Why: a loop that always has ready callbacks (a saturated server) releases the GIL
        only for an instant per turn, in its zero-timeout poll. Each release wakes the
        waiting I/O thread, which finds the GIL taken again and restarts its 5 ms wait, so
        the wait never times out into a drop request and the thread can starve for seconds
        (measured with 64 busy tasks: 0.2-3.5 s per call; everysec records unwritten for
        1.7 s, the parent of a 1M-entry snapshot waiting 3 s for its new segment). Sleeping
        NUDGE_SLEEP with the GIL released bounds that to a few ms, at a cost of at most 5%
        of the loop while a call is overdue.
        """
        assert self._loop is not None
        fut = self._loop.run_in_executor(self._io, fn, *args)
        try:
            while not (await asyncio.wait((fut,), timeout=NUDGE_AFTER))[0]:
                time.sleep(NUDGE_SLEEP)
        except asyncio.CancelledError:
            fut.cancel()  # as awaiting the future itself would: its outcome goes unread
            raise
        return fut.result()

    def _cut(self) -> None:
        if self._buf:
            self._chunks.append((self._segment, 0, bytes(self._buf)))
            self._buf = bytearray()
            self._cut_upto = self._appended

    # -- the flusher ---------------------------------------------------------------------------

    async def _flusher(self) -> None:
        assert self._loop is not None and self._wake is not None
        wake = self._wake
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
                took = await self.run_io(self._io_batch, chunks, sync)
            except OSError as exc:
                self._failed(exc, barriers)
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

    def _failed(self, exc: OSError, barriers: list[tuple[bool, asyncio.Future[None]]]) -> None:
        """Records after ``_durable`` are lost: stop recording, fail whoever waits for them."""
        self.failures += 1
        self._recording = False
        self._gap = True
        self._buf = bytearray()
        self._chunks.clear()
        self._cut_upto = self._lost_upto = self._appended
        self._unsynced = False
        reason = f"journal write failed: {describe(exc)}"
        self._on_failure(reason)
        error = Unavailable(f"the write could not be made durable ({reason})")
        for _, fut in [*self._waiters, *barriers]:
            if not fut.done():
                fut.set_exception(error)
        self._waiters = []

    def _check(self) -> None:
        """Assert the bookkeeping invariants (tests call it after every scenario)."""
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
