"""The backend seam: what routes, the WebSocket hub and the metrics may ask of the data.

Two backends stand behind these protocols: ``embedded.py`` (this process holds everything, a
snapshot + journal keep it safe) and the Redis/Valkey cluster backend (``redis/``). Nothing
outside ``service/backend/`` touches ``Keyspace``, ``Board``, ``SessionStore`` or
``store.disk``; tests/test_layering.py fails the build if anything does::

    routes_*.py  ws.py  hub/  metrics.py            (HTTP/WS edge: status codes, frames)
            |      |      |        |
            v      v      v        v
    service/backend/api.py   Backend = Boards + Sessions + ChangeFeed + Views + Lifecycle
            |                              |
            v                              v
    embedded.py (+ persistence,       redis/ (key layout, server-side
    journal_flusher, heap)             functions, sharded pub/sub feed)
            |
            v
    store/ (Keyspace, Board, SessionStore)   store/disk/ (snapshot, journal, recovery)

Contracts every backend keeps:

* Errors are ``store.errors.StoreError`` subclasses (BoardNotFound -> 404, Unavailable -> 503,
  InsufficientStorage -> 507, ...); the edge maps them to HTTP/WS (service/errors.py).
* A write is refused *before* it changes anything when it cannot be made durable, and answers
  only once it is as durable as the backend promises (fsync=always: the group commit).
* Ranks are 1-based everywhere. Entries are ``{rank, member, score, metadata?}`` dicts. The
  result types are the wire shapes themselves (service/schemas.py): a route sends them as-is.
* The change feed delivers the store's typed events (store/events.py), carrying resulting
  state, in the order the writes were applied, on the event-loop thread. The hub reads views
  through ``Views``: synchronous reads of what the backend holds (the embedded engine answers
  from memory); a backend whose data is elsewhere (redis) sets ``synchronous = False`` and the
  hub awaits ``load`` for a board before reading its views.

Room for what comes next (periods, lookup, range, metadata patches) is left by keeping each
operation a method of its own rather than one catch-all.
"""

from collections.abc import Callable, Sequence
from typing import Any, NotRequired, Protocol, TypedDict

from service.schemas import (
    BoardInfo,
    BoardList,
    Entry,
    LookupPage,
    Page,
    PeriodList,
    RangePage,
    RankForScore,
    SessionInfo,
    WriteResult,
)
from store.events import BoardEvent, SessionEvent
from store.values import Limits
from store.writers import UNKNOWN, Writer

# (member, score, metadata) or (member, score, metadata, at), unchecked
ScoreItem = tuple[object, ...]
Period = str | None  # current (None), "previous" or a period id


class Health(TypedDict):
    ready: bool
    writable: bool
    reason: str | None


class StoreStats(TypedDict):
    boards: int
    entries: int
    sessions: int  # held, expired ones not yet purged included
    session_events: dict[str, int]  # lifecycle events since start, by kind
    # The largest boards (name, entries), biggest first, at most service.metrics.LARGEST_BOARDS.
    largest: NotRequired[list[tuple[str, int]]]


class RecoveryStats(TypedDict):
    seconds: float
    journal_records: int


class RecoveryProgressStats(TypedDict):
    running: bool  # loading the snapshot / replaying the journal right now
    bytes_total: int  # snapshot + journal bytes recovery reads (0 before it starts)
    bytes_done: int
    journal_records: int  # replayed so far (every 65,536 while running)


class PersistenceStats(TypedDict):
    healthy: bool
    journal_bytes: int
    snapshot_age: float | None
    snapshot_seconds: float | None
    fsync_buckets: list[tuple[str, float]]  # cumulative histogram
    fsync_sum: float
    snapshot_running: NotRequired[bool]
    recovery: NotRequired[RecoveryStats]  # what loading took at start


class MemoryStats(TypedDict):
    used: int
    limit: int
    refused: int
    memory_errors: int


class Stats(TypedDict):
    store: StoreStats | None  # None while recovering (the data is being loaded)
    persistence: PersistenceStats | None  # None where the backend keeps no local disk
    memory: MemoryStats
    # Embedded only: live while recovery runs, so a scrape can follow a long start-up.
    recovery_progress: NotRequired[RecoveryProgressStats]


class Boards(Protocol):
    limits: Limits

    async def configure(self, name: str, options: dict[str, Any]) -> tuple[BoardInfo, bool]:
        """Create (True) or reconfigure (False) a board; order/ties only while empty."""
        ...

    async def describe(self, name: str) -> BoardInfo: ...
    async def list_boards(self, offset: int, limit: int) -> BoardList: ...
    async def drop(self, name: str) -> None: ...
    async def exists(self, name: str) -> bool: ...

    # ``writer``: who makes a change (store/writers.py), recorded in the embedded journal.
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
        """One score to every window; an absent board is created with defaults (only for a
        valid write). ``at``: when it was achieved (within the board's grace).
        ``idempotency_key``: the client's Idempotency-Key header (checked by the route), for
        backends whose writes can end ambiguously (redis: a repeat applies once)."""
        ...

    async def write_many(
        self,
        name: str,
        items: Sequence[ScoreItem],
        idempotency_key: str | None = None,
        writer: Writer = UNKNOWN,
    ) -> list[WriteResult]:
        """In order, all or nothing; a refused item is named by its index."""
        ...

    async def remove(self, name: str, member: str, writer: Writer = UNKNOWN) -> None:
        """From every window's current period."""
        ...

    # Reads name a window (None: the board's first) and a period (None: current).
    async def top(
        self, name: str, offset: int, limit: int, window: str | None = None, period: Period = None
    ) -> Page: ...
    async def entry(
        self, name: str, member: str, window: str | None = None, period: Period = None
    ) -> Entry: ...
    async def around(
        self, name: str, member: str, radius: int, window: str | None = None, period: Period = None
    ) -> Page: ...
    async def rank_for_score(
        self, name: str, score: int | float, window: str | None = None, period: Period = None
    ) -> RankForScore: ...
    async def periods(self, name: str, window: str | None) -> PeriodList: ...

    async def lookup(self, name: str, members: list[str]) -> LookupPage:
        """The listed members present, in board order with board-wide ranks; the rest."""
        ...

    async def score_range(
        self, name: str, low: int | float, high: int | float, offset: int, limit: int
    ) -> RangePage:
        """Entries with low <= score <= high in board order, and how many there are."""
        ...

    async def patch_metadata(
        self, name: str, member: str, metadata: object, writer: Writer = UNKNOWN
    ) -> Entry:
        """Replace (object) or clear (None) an entry's metadata; the score stays."""
        ...


class Sessions(Protocol):
    async def create(
        self,
        *,
        user: object,
        data: object,
        ttl: object,
        max_lifetime: object,
        sid: str | None = None,
    ) -> SessionInfo:
        """A new session; ``sid`` a caller-chosen id (SessionExists / SessionEnded if taken)."""
        ...

    async def get(self, sid: str, *, touch: bool) -> SessionInfo:
        """The live session (SessionNotFound otherwise); ``touch`` refreshes its idle deadline.

        A touch is not a write: it is not refused while persistence is unhealthy."""
        ...

    async def patch(self, sid: str, data: object, *, if_version: int | None) -> SessionInfo: ...
    async def replace(self, sid: str, data: object, *, if_version: int | None) -> SessionInfo: ...
    async def touch(self, sid: str) -> SessionInfo: ...
    async def rotate(self, sid: str) -> SessionInfo: ...
    async def delete(self, sid: str) -> None: ...
    async def list_user(self, user: str) -> list[SessionInfo]: ...
    async def revoke_user(self, user: str, *, except_id: str | None) -> int: ...


BoardListener = Callable[[BoardEvent], None]
SessionListener = Callable[[SessionEvent], None]


class ChangeFeed(Protocol):
    def listen(self, on_board: BoardListener, on_session: SessionListener) -> None:
        """Deliver every later board event and session-end (``sdel``) event to these."""
        ...

    def unlisten(self, on_board: BoardListener, on_session: SessionListener) -> None: ...

    def unwatch_board(self, name: str) -> None:
        """Nobody here watches ``name`` any more (a remote feed unsubscribes from it)."""
        ...

    async def watch_session(self, sid: str, expires_at: float, now: float) -> None:
        """Deliver ``sdel`` for this session (a connection is bound to it), expiry included."""
        ...

    def unwatch_session(self, sid: str) -> None: ...


class Views(Protocol):
    """What the hub shows subscribers; cheap and synchronous (a flush calls it per board)."""

    synchronous: bool  # False: ``load`` first (the data is across the network)

    async def load(
        self,
        name: str,
        top: int,
        members: list[str],
        arounds: Sequence[tuple[str, int]] = (),
        window: str | None = None,
    ) -> None:
        """Fetch the top ``top``, these members' places and the entries within radius of each
        ``arounds`` (member, radius), in ``window``'s current period (None: the board's first
        window), for the reads that follow."""
        ...

    def epoch(self, name: str) -> str:
        """Changes exactly when the board's history may have forked (frames carry it)."""
        ...

    def top_view(
        self, name: str, n: int, window: str | None = None
    ) -> tuple[list[Entry], int, int]:
        """(top n entries, total, seq) of the window's current period; an absent board (or
        window, or period) is ([], 0, seq)."""
        ...

    def rank_view(
        self, name: str, member: str, window: str | None = None
    ) -> tuple[int | None, Any, int, int | None]:
        """(rank, score, seq, position); (None, None, seq, None) when the member or board is
        absent. ``position`` is the ordinal rank whatever the board's ranking: change events
        carry positions, and the hub compares them with it."""
        ...

    def ranking(self, name: str) -> str:
        """The board's ranking ("ordinal" when absent): how far a change can move ranks."""
        ...

    def period_view(self, name: str, window: str | None = None) -> tuple[str | None, str | None]:
        """(window name, current period id); (None, None) for an absent board or window, and
        (name, None) before a custom window's first period."""
        ...

    def around_view(
        self, name: str, member: str, radius: int, window: str | None = None
    ) -> tuple[list[Entry], int, int, int | None]:
        """(entries within radius positions of member in the window's current period, total,
        seq, the member's 1-based position); ([], total, seq, None) when the member, board or
        window is absent. The entries' ranks follow the board's ranking."""
        ...


class Lifecycle(Protocol):
    epoch: str  # changes exactly when history may have forked (here: per process start)
    ready: bool
    fatal: str | None  # start-up failed for good; the CLI exits non-zero
    started_at: float

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def health(self) -> Health: ...
    def stats(self) -> Stats: ...
    def check_grow(self) -> None:
        """Refuse (InsufficientStorage -> 507) a request that would add data now."""
        ...

    def on_memory_error(self) -> None: ...

    async def snapshot(self) -> dict[str, Any]:
        """Take a snapshot now (embedded); NotImplementedError where there is none (501)."""
        ...


class Backend(Lifecycle, Protocol):
    """One handle per process; a handler asks for the part it needs (``backend.boards``)."""

    @property
    def boards(self) -> Boards: ...
    @property
    def sessions(self) -> Sessions: ...
    @property
    def feed(self) -> ChangeFeed: ...
    @property
    def views(self) -> Views: ...


__all__ = [
    "Backend",
    "BoardInfo",
    "BoardList",
    "BoardListener",
    "Boards",
    "ChangeFeed",
    "Entry",
    "Health",
    "Lifecycle",
    "LookupPage",
    "MemoryStats",
    "Page",
    "Period",
    "PeriodList",
    "PersistenceStats",
    "RangePage",
    "RankForScore",
    "ScoreItem",
    "SessionInfo",
    "SessionListener",
    "Sessions",
    "Stats",
    "StoreStats",
    "Views",
    "WriteResult",
]
