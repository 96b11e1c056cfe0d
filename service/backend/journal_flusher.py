"""Journal group commit: store events become frames in memory, one I/O thread writes them.

The store emits one event per mutation; ``append`` encodes it into an in-memory buffer (a few
microseconds, no I/O). One flusher task hands buffered records to one I/O thread, which writes
them and fsyncs per policy, so records reach the file in store order and the event loop does
not wait on the disk:

    write handler --> store --> append: frame into _buf, wake flusher
                 \\--> await commit()   (fsync=always only) resolves when its record is durable
    flusher:  take _buf --> I/O thread: os.write; os.fsync (always: every batch; everysec:
              once a second; no: never) --> resolve every commit() the batch covered

Except for one case, the loop's own ``os.write`` (``_inline_ok``): with fsync everysec or no, a
batch of at most INLINE_MAX bytes for the open segment, no fsync due and nobody waiting on it
is written by the loop itself when the I/O thread is idle, as Redis writes its AOF buffer from
its event loop. Handing it over costs more than the write: below saturation writes come alone,
and each one's round trip woke the I/O thread and then the loop again (7-8 context switches
per write against 2; 29 % less CPU per isolated write with everysec, loadtest/RESULTS.md, "The
journal's write on the loop"). A write into the page cache takes microseconds. Where it could
wait, the thread keeps it: every fsync and segment creation; any write while a call runs on
the thread (an fsync in progress holds the file); while ``offload()`` says so (a snapshot child
is filling the page cache and the kernel may throttle writers); and for INLINE_BACKOFF seconds
after a loop write that took longer than INLINE_SLOW (a disk the kernel has started to throttle).

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
new segment carries FLAG_AFTER_GAP if records were lost (store/disk/journal.py).

Undo (fsync=always): a 503 means nothing happened. The store applies a write before its record
exists (the record *is* the store's event), so a lost record stands for a change that memory
already shows. With ``always`` no lost record was ever acknowledged -- each writer still waits
in ``commit()`` -- so the flusher keeps the events of every record after ``_durable`` and, on a
failure, hands all of them to ``on_lost`` before any waiter hears of it; the owner reverts them
newest first (Keyspace.undo, SessionStore.undo). That covers the failing batch and everything
appended while it was in flight, from later loop turns too. It also cuts the segments this
batch wrote back to where the batch began, so a record that reached the file before the
failure (write done, fsync failed; or the first frames of a batch that hit ENOSPC) cannot come
back at recovery for a write that was refused.

Why undo rather than applying a write only once its record is durable: results (rank, sum,
tie order, session version) depend on every earlier write of the same loop turn, which group
commit has not made durable yet either, so "apply later" would need a second, pending view of
the store on every read and write. Undo costs the hot path one list append per write, only
with ``always``, and does its work only on the rare failure. With ``everysec``/``no`` nothing
is undone: a write was acknowledged as soon as it was applied, so a lost record is not a
refused write -- memory keeps it and the healing snapshot makes it durable.

Everything here runs on the event loop thread except ``_io_batch`` and ``run_io`` callables
(the I/O thread, which owns the SegmentWriter whenever a call is on it; the loop uses it only
when none is).
"""

import asyncio
import contextlib
import errno
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from service.metrics import Histogram
from store.disk import datadir, journal
from store.errors import Unavailable
from store.events import StoreEvent

log = logging.getLogger("rankd.persistence")

Chunk = tuple[int, int, bytes]  # (segment number, segment flags, frames)
Event = StoreEvent
NUDGE_AFTER = 0.002  # seconds an I/O call may be pending before the loop lends it the GIL
NUDGE_SLEEP = 0.0001
INLINE_MAX = 64 * 1024  # bytes the loop writes itself at most (fsync everysec/no, thread idle)
INLINE_SLOW = 0.002  # seconds: a loop write slower than this hands the writes to the thread...
INLINE_BACKOFF = 1.0  # ...for this long
FsyncPolicy = Literal["always", "everysec", "no"]
T = TypeVar("T")


def describe(exc: BaseException) -> str:
    """``ENOSPC (No space left on device)``: an OSError as an operator reads it in a log."""
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code, str(code)) if code is not None else type(exc).__name__
    return f"{name} ({getattr(exc, 'strerror', None) or exc})"


class IOThread:
    """One thread that runs callables in the order given, each outcome handed to the loop.

    Hand-written rather than ``loop.run_in_executor`` on a one-thread ThreadPoolExecutor:
    below saturation a write comes alone and makes one round trip of its own, and the
    executor's work item, its concurrent Future chained to an asyncio one and the
    ``asyncio.wait`` around it cost the loop about as much CPU as handling the write itself
    (loadtest/RESULTS.md, "The floor under an isolated write"). Here a round trip is a queue
    put, one asyncio future and one ``call_soon_threadsafe`` back.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.pending = 0  # calls whose outcome is not back on the loop yet (cancelled ones too)

    def submit(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], args: tuple[Any, ...]
    ) -> "asyncio.Future[T]":
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
            self._thread.start()
        fut: asyncio.Future[T] = loop.create_future()
        self.pending += 1
        self._queue.put((loop, fut, fn, args))
        return fut

    def shutdown(self) -> None:
        """Run what is queued, then end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _main(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, fut, fn, args = item
            outcome: tuple[Any, BaseException | None]
            try:
                outcome = (fn(*args), None)
            except BaseException as exc:  # handed to the caller, as an executor would
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(self._settle, fut, *outcome)
            del item, fut, outcome  # hold nothing while waiting for the next

    def _settle(self, fut: "asyncio.Future[Any]", value: Any, error: BaseException | None) -> None:
        self.pending -= 1
        if fut.cancelled():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)


class JournalFlusher:
    """The journal's write side for one data directory; see the module docstring."""

    def __init__(
        self,
        policy: FsyncPolicy,
        on_failure: Callable[[str], None],
        reason: Callable[[], str | None],
        on_lost: Callable[[list[Event], int], None] | None = None,
        offload: Callable[[], bool] = lambda: False,
    ) -> None:
        """``on_failure(reason)``: records were lost. ``reason()``: why persistence is
        unhealthy now, quoted by a ``commit()`` that cannot succeed. ``on_lost(events,
        first)`` (fsync=always): the events of the lost records, oldest first, the first of
        them being record number ``first + 1``; called before any waiter fails.
        ``offload()``: True while every write should go to the I/O thread (a snapshot is
        being written), see the module docstring."""
        self._policy = policy
        self._on_failure = on_failure
        self._reason = reason
        self._on_lost = on_lost
        self._keep = policy == "always" and on_lost is not None
        self._offload = offload
        self._inline_from = 0.0  # monotonic time from which the loop may write again
        self._events: list[Event] = []  # with _keep: events of records _events_base+1 .. _appended
        self._events_base = 0
        self._io_size = 0  # I/O thread: bytes in the open segment file (as written)
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
        # Who makes the change being made now (store/writers.py Writer.row(); () for rankd
        # itself): set by the embedded backend around each store call, recorded on board writes.
        self.author: tuple[int] | tuple[int, str] | tuple[()] = ()
        self._io = IOThread("rankd-journal")
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
        self._io.shutdown()

    # -- the write path --------------------------------------------------------------------------

    def append(self, event: StoreEvent) -> None:
        """Store observer: journal one event (nothing while not recording)."""
        if self._recording:
            self.bytes += journal.append_event(self._buf, event, self.author)
            self._appended += 1
            if self._keep:
                self._events.append(event)
            if self._wake is not None:
                self._wake.set()

    @property
    def appended(self) -> int:
        """Records appended, ever: the number of the newest one."""
        return self._appended

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
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[T] = self._io.submit(loop, fn, args)

        def nudge() -> None:
            if not fut.done():
                time.sleep(NUDGE_SLEEP)
                timer[0] = loop.call_later(NUDGE_AFTER, nudge)

        timer = [loop.call_later(NUDGE_AFTER, nudge)]
        try:
            return await fut  # cancelled: the thread finishes fn, its outcome goes unread
        finally:
            timer[0].cancel()

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
                    # The once-a-second fsync's alarm: a timer that sets ``wake``. Not
                    # asyncio.wait_for, which wraps each wait in a task of its own: one per
                    # isolated write (loadtest/RESULTS.md, "The fsync alarm").
                    delay = max(0.0, self._last_sync + 1.0 - time.monotonic())
                    alarm = self._loop.call_later(delay, wake.set)
                    try:
                        await wake.wait()
                    finally:
                        alarm.cancel()
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
                if self._inline_ok(chunks, sync, barriers):
                    took = self._inline_batch(chunks)
                else:
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
            if self._keep and upto > self._events_base:
                del self._events[: upto - self._events_base]
                self._events_base = upto
            self._resolve(barriers)

    def _inline_ok(self, chunks: list[Chunk], sync: bool, barriers: list[Any]) -> bool:
        """Whether the loop writes this batch itself (the module docstring says when)."""
        if self._policy == "always" or sync or barriers or self._io.pending:
            return False
        w = self._writer
        if w is None or w.number is None or any(number != w.number for number, _, _ in chunks):
            return False  # a segment to create: an fsync
        if sum(len(data) for _, _, data in chunks) > INLINE_MAX or self._offload():
            return False
        return time.monotonic() >= self._inline_from

    def _inline_batch(self, chunks: list[Chunk]) -> float:
        began = time.monotonic()
        took = self._io_batch(chunks, False)
        ended = time.monotonic()
        if ended - began > INLINE_SLOW:
            self._inline_from = ended + INLINE_BACKOFF
        return took

    def _io_batch(self, chunks: list[Chunk], sync: bool) -> float:
        """Runs on the I/O thread (or on the loop, see ``_inline_ok``). Returns the fsync's
        duration, or -1 if none ran."""
        w = self._writer
        assert w is not None
        # Where each segment this batch writes stood before it: what a failure cuts back to.
        marks: dict[int, int] = {} if w.number is None else {w.number: self._io_size}
        try:
            for number, flags, data in chunks:
                if w.number != number:
                    w.open(number, flags)
                    self._io_size = journal.HEADER_SIZE
                    marks.setdefault(number, journal.HEADER_SIZE)
                if data:
                    w.write(data)
                    self._io_size += len(data)
            if sync and w.dirty and w.sync_enabled:
                began = time.perf_counter()
                w.fsync()
                return time.perf_counter() - began
            return -1.0
        except BaseException:
            w.abandon()
            if self._keep:
                self._cut_back(marks)
            raise

    def _cut_back(self, marks: dict[int, int]) -> None:
        """I/O thread, after a failure with undo: remove this batch's records from the files.

        Their writes are undone in memory, so a record that did reach the file (written, then
        the fsync failed; the first frames of a batch that hit ENOSPC) must not be replayed
        after a crash. Best effort: if even the truncation fails the disk is beyond us, and
        the log says what may come back.
        """
        assert self._writer is not None
        for number, size in marks.items():
            path = datadir.segment_path(self._writer.directory, number)
            try:
                if path.stat().st_size > size:
                    journal.truncate(path, size)
            except OSError as exc:
                log.error(
                    "could not cut refused records off %s at %d bytes (%s): after a crash "
                    "before the next snapshot, writes answered 503 may reappear",
                    path.name,
                    size,
                    describe(exc),
                )

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
        self._recording = False  # first: what the undo emits must not be journalled
        self._gap = True
        self._buf = bytearray()
        self._chunks.clear()
        self._cut_upto = self._lost_upto = self._appended
        self._unsynced = False
        lost, first = self._events, self._events_base
        self._events, self._events_base = [], self._appended
        if lost:
            assert self._on_lost is not None
            self._on_lost(lost, first)
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
        if self._keep:
            assert self._events_base == max(self._durable, self._lost_upto)
            assert len(self._events) == self._appended - self._events_base
        assert all(target > self._durable for target, _ in self._waiters)
        assert not self._buf or self._recording  # nothing is buffered while not recording
        assert all(number >= self._segment - 1 for number, _, _ in self._chunks)
        if self._writer is not None:
            assert self._writer.created <= self._segment
