"""The embedded backend: this process holds every board and session; disk keeps them safe.

    EmbeddedBackend   lifecycle: recovery, persistence, the session purge, the memory guard
      .boards         EmbeddedBoards   -> store.Keyspace / store.Board
      .sessions       EmbeddedSessions -> store.SessionStore
      .feed           the store's observer lists (the journal listens first, then the hub)
      .views          synchronous reads for the hub's flush

The write path (it was service/writes.py), the same for every mutation, in this order:

    1. memory gate                   a write that adds data is refused (507) while memory is
                                     over --max-memory, before anything is touched
    2. persistence.check_writable()  refuse (store.Unavailable -> 503) *before* touching the
                                     store, so an unhealthy disk never leaves a change in
                                     memory that the journal did not get
    3. the store call                synchronous: validates, mutates, emits one journal record,
                                     which records the caller's ``writer`` (store/writers.py:
                                     key, player + user id, open), set as the journal's author
                                     for the length of the call
    4. await persistence.commit()    only with fsync=always: the answer waits until the
                                     journal is durable (group commit: one fsync per loop turn)

What a 503 means. Step 2 refuses before anything happens. Step 4 fails (fsync=always) when the
journal write or fsync of the write's batch fails; by then the change is in memory, so the
journal flusher undoes it -- it and every later change whose record was lost, newest first,
before any of their writers resumes (journal_flusher.py, "Undo"). Either way the 503'd write is
invisible to the next read, absent after a restart, and safe to retry. A batch is one journal
record, so it is applied, undone or replayed as a whole.

A MemoryError from the store call may have cut a mutation half-way (a skip list relinked but
its spans not updated), so the guard gets the structure's ``_check`` to run once memory is
back; the error propagates (503). Without persistence (before ``start()``, and in tests of the
HTTP layer alone) steps 2 and 4 vanish.
"""

import asyncio
import heapq
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

from service.backend import offline
from service.backend.api import (
    BoardInfo,
    BoardList,
    BoardListener,
    Entry,
    Health,
    LookupPage,
    MemoryStats,
    Page,
    Period,
    PeriodList,
    PersistenceStats,
    RangePage,
    RankForScore,
    ScoreItem,
    SessionInfo,
    SessionListener,
    Stats,
    StoreStats,
    WriteResult,
)
from service.backend.persistence import Persistence
from service.memory import MemoryGuard
from service.settings import Settings
from store.boards import Board, Table
from store.clock import Clock, SystemClock
from store.disk.recovery import RecoveryProgress
from store.errors import InvalidArgument, PeriodNotFound, Unavailable
from store.keyspace import Keyspace
from store.sessions import Session, SessionStore
from store.values import Limits
from store.writers import UNKNOWN, Writer

log = logging.getLogger("rankd")

T = TypeVar("T")

LARGEST_BOARDS = 10  # boards with a series of their own in /metrics (bounded cardinality)

# The purge reclaims at most this many sessions per call, then yields to the loop, so a mass
# expiry never stalls requests; it sleeps at most PURGE_MAX_SLEEP between rounds.
PURGE_BATCH = 1000
PURGE_MAX_SLEEP = 1.0
ROLL_INTERVAL = 0.5  # seconds between checks for an ended period: O(timed boards), O(1) each


def _describe(board: Board) -> BoardInfo:
    sizes = board.sizes()
    info: dict[str, Any] = {"board": board.name, **board.config.as_dict()}
    info["size"] = sizes[board.config.windows[0].name]
    info["sizes"] = sizes
    return info  # type: ignore[return-value]


def _current_size(board: Board) -> int:
    """Entries in the first window's current period (what ``total`` counts on reads)."""
    return board.sizes()[board.config.windows[0].name]


def _info(s: Session) -> SessionInfo:
    return {
        "id": s.id,
        "user": s.user,
        "data": s.data,
        "created_at": s.created_at,
        "expires_at": s.expires_at,
        "ttl": s.ttl,
        "max_expires_at": s.max_expires_at,
        "version": s.version,
    }


class _WritePath:
    """Steps 1, 2 and 4 of every mutation; shared by boards and sessions."""

    __slots__ = ("memory", "persistence")

    def __init__(self, memory: MemoryGuard) -> None:
        self.memory = memory
        self.persistence: Persistence | None = None

    def grow(self) -> None:
        if self.memory.over:
            self.memory.check()

    async def run(
        self,
        check: Callable[[], None] | None,
        fn: Callable[..., T],
        *args: Any,
        writer: Writer = UNKNOWN,
        **kw: Any,
    ) -> T:
        p = self.persistence
        if p is not None:
            p.check_writable()
            p.journal.author = writer.row()
        try:
            result = fn(*args, **kw)
        except MemoryError:
            if check is not None:
                self.memory.verify_later(check)
            raise
        finally:
            if p is not None:
                p.journal.author = ()  # the store call is synchronous: nothing else ran
        if p is not None and p.needs_commit:
            await p.commit()
        return result


class EmbeddedBoards:
    def __init__(self, keyspace: Keyspace, path: _WritePath) -> None:
        self._ks = keyspace
        self._path = path
        self.limits: Limits = keyspace.limits
        # Bound once for write(), the hottest call of the service.
        self._memory = path.memory
        self._write = keyspace.write

    def _board_check(self, name: str) -> Callable[[], None]:
        # The board's _check rather than the whole keyspace's: only that board was changing.
        def check() -> None:
            board = self._ks.find(name)
            if board is not None:
                board._check()

        return check

    async def configure(self, name: str, options: dict[str, Any]) -> tuple[BoardInfo, bool]:
        if self._ks.find(name) is None:
            self._path.grow()  # reconfiguring an existing board adds nothing
        board, created = await self._path.run(self._ks._check, self._ks.configure, name, options)
        return _describe(board), created

    async def describe(self, name: str) -> BoardInfo:
        return _describe(self._ks.get(name))

    async def list_boards(self, offset: int, limit: int) -> BoardList:
        ks = self._ks
        names = sorted(ks.names())
        page = [_describe(ks.get(n)) for n in names[offset : offset + limit]]
        return {"total": len(names), "offset": offset, "boards": page}

    async def drop(self, name: str) -> None:
        await self._path.run(self._ks._check, self._ks.drop, name)

    async def exists(self, name: str) -> bool:
        return self._ks.find(name) is not None

    async def write(
        self,
        name: str,
        member: object,
        score: object,
        metadata: object,
        at: object = None,
        idempotency_key: str | None = None,
        writer: Writer = UNKNOWN,
    ) -> Entry:
        # idempotency_key is not used here: one process answers only after the write is
        # applied (and journaled), so rankd never has an ambiguous outcome of its own to retry.
        # Spelled out rather than via _WritePath.run: this is the hottest path of the service.
        memory = self._memory
        if memory.over:
            memory.check()
        p = self._path.persistence
        if p is not None:
            p.check_writable()
            p.journal.author = writer.row()  # recorded with the write's journal record
        try:
            result = self._write(name, member, score, metadata, at)
        except MemoryError:
            memory.verify_later(self._board_check(name))
            raise
        finally:
            if p is not None:
                p.journal.author = ()
        if p is not None and p.needs_commit:
            await p.commit()
        return result

    async def write_many(
        self,
        name: str,
        items: Sequence[ScoreItem],
        idempotency_key: str | None = None,
        writer: Writer = UNKNOWN,
    ) -> list[WriteResult]:
        # The keyspace validates the whole batch before it creates an absent board.
        self._path.grow()
        return await self._path.run(
            self._board_check(name), self._ks.write_many, name, items, writer=writer
        )

    async def remove(self, name: str, member: str, writer: Writer = UNKNOWN) -> None:
        board = self._ks.get(name)
        await self._path.run(board._check, board.remove, member, writer=writer)

    async def top(
        self, name: str, offset: int, limit: int, window: str | None = None, period: Period = None
    ) -> Page:
        board = self._ks.get(name)
        w, p, table = board.select(window, period)
        return {
            "board": board.name,
            "window": w.name,
            "period": p.id,
            "total": len(table) if table is not None else 0,
            "entries": table.top(offset, limit) if table is not None else [],
        }

    async def entry(
        self, name: str, member: str, window: str | None = None, period: Period = None
    ) -> Entry:
        return self._ks.get(name).member(member, window, period)

    async def around(
        self, name: str, member: str, radius: int, window: str | None = None, period: Period = None
    ) -> Page:
        board = self._ks.get(name)
        w, p, table = board.select(window, period)
        return {
            "board": board.name,
            "window": w.name,
            "period": p.id,
            "total": len(table) if table is not None else 0,
            "entries": board.around(member, radius, window, period),
        }

    async def rank_for_score(
        self, name: str, score: int | float, window: str | None = None, period: Period = None
    ) -> RankForScore:
        board = self._ks.get(name)
        return {
            "board": board.name,
            "score": score,
            "rank": board.rank_for_score(score, window, period),
        }

    async def periods(self, name: str, window: str | None) -> PeriodList:
        board = self._ks.get(name)
        w = board.config.windows[board.window_index(window)]
        return {"board": board.name, "window": w.name, "periods": board.periods(w.name)}  # type: ignore[typeddict-item]

    async def lookup(self, name: str, members: list[str]) -> LookupPage:
        board = self._ks.get(name)
        entries, missing = board.lookup(members)
        total = _current_size(board)
        return {"board": board.name, "total": total, "entries": entries, "missing": missing}

    async def score_range(
        self, name: str, low: int | float, high: int | float, offset: int, limit: int
    ) -> RangePage:
        board = self._ks.get(name)
        count, entries = board.score_range(low, high, offset, limit)
        total = _current_size(board)
        return {"board": board.name, "total": total, "count": count, "entries": entries}

    async def patch_metadata(
        self, name: str, member: str, metadata: object, writer: Writer = UNKNOWN
    ) -> Entry:
        board = self._ks.get(name)
        if metadata is not None:
            self._path.grow()  # metadata may add bytes; clearing it never does
        entry: Entry = await self._path.run(
            board._check, board.set_metadata, member, metadata, writer=writer
        )
        return entry


class EmbeddedSessions:
    def __init__(self, store: SessionStore, path: _WritePath) -> None:
        self._store = store
        self._path = path

    async def create(
        self,
        *,
        user: object,
        data: object,
        ttl: object,
        max_lifetime: object,
        sid: str | None = None,
    ) -> SessionInfo:
        self._path.grow()
        s = await self._path.run(
            self._store._check,
            self._store.create,
            user=user,
            data=data,
            ttl=ttl,
            max_lifetime=max_lifetime,
            sid=sid,
        )
        return _info(s)

    async def get(self, sid: str, *, touch: bool) -> SessionInfo:
        # A touch only pushes an idle deadline: it is no reason to refuse a read while the disk
        # is unhealthy, so it skips the write path (a lost touch costs at most an early expiry).
        return _info(self._store.get(sid, touch=touch))

    async def patch(self, sid: str, data: object, *, if_version: int | None) -> SessionInfo:
        self._path.grow()
        store = self._store
        return _info(
            await self._path.run(store._check, store.patch, sid, data, if_version=if_version)
        )

    async def replace(self, sid: str, data: object, *, if_version: int | None) -> SessionInfo:
        self._path.grow()
        store = self._store
        return _info(
            await self._path.run(store._check, store.replace, sid, data, if_version=if_version)
        )

    async def touch(self, sid: str) -> SessionInfo:
        return _info(await self._path.run(self._store._check, self._store.touch, sid))

    async def rotate(self, sid: str) -> SessionInfo:
        return _info(await self._path.run(self._store._check, self._store.rotate, sid))

    async def delete(self, sid: str) -> None:
        await self._path.run(self._store._check, self._store.delete, sid)

    async def list_user(self, user: str) -> list[SessionInfo]:
        return [_info(s) for s in self._store.list_user(user)]

    async def revoke_user(self, user: str, *, except_id: str | None) -> int:
        store = self._store
        revoked: int = await self._path.run(
            store._check, store.revoke_user, user, except_id=except_id
        )
        return revoked


class _Feed:
    def __init__(self, keyspace: Keyspace, sessions: SessionStore) -> None:
        self._ks = keyspace
        self._sessions = sessions

    def listen(self, on_board: BoardListener, on_session: SessionListener) -> None:
        self._ks.observers.append(on_board)
        self._sessions.observers.append(on_session)

    def unlisten(self, on_board: BoardListener, on_session: SessionListener) -> None:
        if on_board in self._ks.observers:
            self._ks.observers.remove(on_board)
        if on_session in self._sessions.observers:
            self._sessions.observers.remove(on_session)

    # Every event of this process reaches the observers: nothing to (un)subscribe.
    def unwatch_board(self, name: str) -> None:
        pass

    async def watch_session(self, sid: str, expires_at: float, now: float) -> None:
        pass

    def unwatch_session(self, sid: str) -> None:
        pass


class _Views:
    synchronous = True

    def __init__(self, keyspace: Keyspace, epoch: str) -> None:
        self._ks = keyspace
        self._epoch = epoch

    async def load(
        self,
        name: str,
        top: int,
        members: list[str],
        arounds: Sequence[tuple[str, int]] = (),
        window: str | None = None,
    ) -> None:
        pass  # everything is in memory

    def epoch(self, name: str) -> str:
        return self._epoch  # one process: history forks only when it restarts

    def _table(self, board: Board, window: str | None) -> Table | None:
        try:
            return board.select(window).table
        except (PeriodNotFound, InvalidArgument):
            return None

    def top_view(
        self, name: str, n: int, window: str | None = None
    ) -> tuple[list[Entry], int, int]:
        board = self._ks.find(name)
        if board is None:
            return [], 0, 0
        table = self._table(board, window)
        if table is None:
            return [], 0, board.seq
        return table.top(0, n), len(table), board.seq

    def rank_view(
        self, name: str, member: str, window: str | None = None
    ) -> tuple[int | None, Any, int, int | None]:
        board = self._ks.find(name)
        if board is None:
            return None, None, 0, None
        table = self._table(board, window)
        if table is None or member not in table:
            return None, None, board.seq, None
        entry = table.entry(member, name)
        return entry["rank"], entry["score"], board.seq, table.position(member)

    def ranking(self, name: str) -> str:
        board = self._ks.find(name)
        return "ordinal" if board is None else board.config.ranking

    def period_view(self, name: str, window: str | None = None) -> tuple[str | None, str | None]:
        board = self._ks.find(name)
        if board is None:
            return None, None
        try:
            w = board.config.windows[board.window_index(window)]
        except InvalidArgument:
            return None, None
        try:
            return w.name, board.select(window).period.id
        except PeriodNotFound:
            return w.name, None

    def around_view(
        self, name: str, member: str, radius: int, window: str | None = None
    ) -> tuple[list[Entry], int, int, int | None]:
        board = self._ks.find(name)
        if board is None:
            return [], 0, 0, None
        table = self._table(board, window)
        if table is None:
            return [], 0, board.seq, None
        pos = table.position(member)  # a position, which is what the hub's spans speak
        if pos is None:
            return [], len(table), board.seq, None
        low = max(1, pos - radius)
        return table.top(low - 1, pos + radius + 1 - low), len(table), board.seq, pos


class EmbeddedBackend:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        limits = settings.limits.store()
        self._keyspace = Keyspace(limits, self.clock)
        self._sessions = SessionStore.with_limits(self.clock, limits)
        self.memory = MemoryGuard(settings.max_memory or 0)
        self.memory.on_corrupt = self._memory_corrupt
        self._path = _WritePath(self.memory)
        self.boards = EmbeddedBoards(self._keyspace, self._path)
        self.sessions = EmbeddedSessions(self._sessions, self._path)
        self.feed = _Feed(self._keyspace, self._sessions)
        self.persistence: Persistence | None = None
        # Changes on every start, so a WebSocket client can tell a restart from a quiet board.
        self.epoch = secrets.token_hex(8)
        self.views = _Views(self._keyspace, self.epoch)
        self.ready = False
        self.started_at = self.clock.now()
        self.recovery: dict[str, Any] | None = None
        # Moved by the recovering thread, read by /metrics while /readyz still says 503.
        self.recovery_progress = RecoveryProgress()
        # Set when start-up failed for good (e.g. corrupt data); the CLI exits non-zero.
        self.fatal: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def _memory_corrupt(self) -> None:
        # Not ready: /readyz and every gated route answer 503, so an orchestrator restarts us.
        self.ready = False
        self.fatal = "in-memory data failed verification after an allocation failure"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover (a worker thread: /healthz answers meanwhile), start persistence, the
        session purge and the memory sampler; then ready. Sets ``fatal`` and raises on failure.
        """
        settings = self.settings
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            p = Persistence(settings, self._keyspace, self._sessions, self.clock)
            began = time.perf_counter()
            self.recovery = await asyncio.to_thread(p.recover, self.recovery_progress)
            log.info("recovered data in %.3f s: %s", time.perf_counter() - began, self.recovery)
            await p.start()
            self.persistence = self._path.persistence = p
            self._tasks.append(asyncio.create_task(self._purge(), name="rankd-session-purge"))
            self._tasks.append(asyncio.create_task(self._roll(), name="rankd-period-roll"))
            self.memory.start_reserve()
            self._tasks.append(asyncio.create_task(self.memory.run(), name="rankd-memory-sample"))
            if self.memory.limit:
                log.info("memory limit %d MiB (--max-memory)", self.memory.limit >> 20)
        except Exception as exc:
            # Out of memory, an I/O error and damage each name their own way out (offline.py).
            self.fatal = offline.describe_failure(exc, settings.data_dir)
            raise
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        p = self.persistence
        if p is not None:
            began = time.perf_counter()
            await p.stop()  # final snapshot: failures must surface, not be swallowed
            log.info("final snapshot done in %.3f s", time.perf_counter() - began)

    def health(self) -> Health:
        p = self.persistence
        return {
            "ready": self.ready,
            "writable": p is not None and p.healthy,
            "reason": p.reason if p is not None else "not recovered yet",
        }

    def stats(self) -> Stats:
        store: StoreStats | None = None
        if self.ready:
            # Recovery mutates the store from a worker thread: iterating it then could race.
            boards = list(self._keyspace)
            store = {
                "boards": len(boards),
                "entries": sum(len(b) for b in boards),
                "sessions": len(self._sessions),
                "session_events": dict(self._sessions.counters),
                "largest": [
                    (b.name, len(b)) for b in heapq.nlargest(LARGEST_BOARDS, boards, key=len)
                ],
            }
        persistence: PersistenceStats | None = None
        p = self.persistence
        if p is not None:
            fsync = p.fsync_seconds
            last_at = p.last_snapshot_at
            persistence = {
                "healthy": p.healthy,
                "journal_bytes": p.journal_bytes,
                "snapshot_age": None if last_at is None else max(0.0, self.clock.now() - last_at),
                "snapshot_seconds": p.last_snapshot_seconds,
                "fsync_buckets": fsync.cumulative(),
                "fsync_sum": fsync.sum,
                "snapshot_running": p.snapshot_running,
            }
            if self.recovery is not None:
                persistence["recovery"] = {
                    "seconds": float(self.recovery["seconds"]),
                    "journal_records": int(self.recovery["journal_records"]),
                }
        m = self.memory
        memory: MemoryStats = {
            "used": m.used,
            "limit": m.limit,
            "refused": m.refused,
            "memory_errors": m.memory_errors,
        }
        progress = self.recovery_progress
        return {
            "store": store,
            "persistence": persistence,
            "memory": memory,
            "recovery_progress": {
                "running": progress.running,
                "bytes_total": progress.bytes_total,
                "bytes_done": progress.bytes_done,
                "journal_records": progress.records,
            },
        }

    def check_grow(self) -> None:
        self._path.grow()

    def on_memory_error(self) -> None:
        self.memory.on_memory_error()

    async def snapshot(self) -> dict[str, Any]:
        p = self.persistence
        if p is None:
            raise Unavailable("persistence is not running in this process")
        return await p.snapshot()

    async def _roll(self) -> None:
        """Close ended periods even on boards nobody touches, so WebSocket subscribers hear
        of a rollover within ROLL_INTERVAL (a touch rolls a board at once anyway)."""
        keyspace, clock = self._keyspace, self.clock
        while True:
            try:
                keyspace.tick(clock.now())
            except Exception:
                log.exception("period rollover failed; retrying")
            await asyncio.sleep(ROLL_INTERVAL)

    async def _purge(self) -> None:
        """Reclaim expired sessions in bounded rounds; sleep until the next deadline (<= 1 s)."""
        sessions, clock = self._sessions, self.clock
        while True:
            now = clock.now()
            try:
                due = sessions.purge(now, PURGE_BATCH)
            except Exception:
                log.exception("session purge failed; retrying")
                due = None
            if due is not None and due <= now:
                await asyncio.sleep(0)  # more is due: let requests run between rounds
                continue
            delay = PURGE_MAX_SLEEP if due is None else min(due - now, PURGE_MAX_SLEEP)
            await asyncio.sleep(delay)
