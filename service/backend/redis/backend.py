"""``RedisBackend``: the backend protocols (service/backend/api.py) over a Redis/Valkey Cluster.

    RedisBackend     lifecycle: connect (cluster or single node), the HMAC secret, the function
                     library on every primary, a health loop (/readyz), metrics
      .boards        RedisBoardsApi  -> boards.RedisBoards (one function call per request)
      .sessions      sessions.RedisSessions
      .feed          feed.RedisFeed (sharded pub/sub, seq-gap healing)
      .views         RedisViews: what the hub shows, read with one ``rankd_view`` call per board

The process holds no data: any number of rankd processes share one cluster. Errors: a
connection failure, a timeout, CLUSTERDOWN, TRYAGAIN, READONLY or LOADING becomes
``Unavailable`` (503). Reads are retried once after refreshing the slot map; so are score
writes, which carry an idempotency id (boards.write_id) that makes a repeat answer the first
reply instead of applying twice; other writes are not (503 "may or may not have applied").
MOVED and ASK are followed by redis-py (nothing ran, so that is safe). With --redis-wait-*,
writes wait for replicas/fsync on their own connection (durability.py); a short wait is
``WriteUnconfirmed`` (503 write-unconfirmed: applied, durability unconfirmed).

Epoch of a board (WebSocket frames): the replication id of the primary that owns the board's
slot. A failover promotes a replica with a new replication id, so the epoch changes exactly
when acknowledged writes may have been lost and seq may step back; every rankd process reads
the same value. ``/readyz``'s ``epoch`` is this process's start token.
"""

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from service.backend.api import (
    BoardInfo,
    BoardList,
    Entry,
    Health,
    LookupPage,
    MemoryStats,
    Page,
    Period,
    PeriodList,
    RangePage,
    RankForScore,
    ScoreItem,
    Stats,
    WriteResult,
)
from service.backend.redis import keys
from service.backend.redis.boards import RedisBoards, entries_of, write_id
from service.backend.redis.durability import WaitPolicy, check_waitaof
from service.backend.redis.feed import RedisFeed
from service.backend.redis.functions import Client, fcall, library_loaded, load_library
from service.backend.redis.sessions import RedisSessions
from service.backend.redis.windows import RedisWindows, select
from service.memory import MemoryGuard
from service.metrics import Histogram
from service.settings import Settings
from store.clock import Clock, SystemClock
from store.errors import (
    BoardNotFound,
    InvalidArgument,
    PeriodNotFound,
    SessionNotFound,
    Unavailable,
    WriteUnconfirmed,
)
from store.options import BoardConfig
from store.periods import period_of
from store.sessions import SessionStore
from store.sortkey import key_score
from store.values import Limits, check_board_name, check_score
from store.writers import UNKNOWN, Writer

log = logging.getLogger("rankd.redis")

T = TypeVar("T")

HEALTH_INTERVAL = 1.0
ROLL_INTERVAL = 1.0  # an idle board's rollover reaches subscribers within this
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


# -- connection -------------------------------------------------------------------------------


class Target:
    """Where the cluster is: seed nodes, TLS, credentials (never in repr)."""

    def __init__(self, url: str, username: str | None, password: str | None) -> None:
        self.seeds: list[tuple[str, int]] = []
        self.tls = False
        self.username = username
        self.password = password
        scheme = "redis"
        for n, item in enumerate(p.strip() for p in url.split(",") if p.strip()):
            if "://" not in item:
                item = f"{scheme}://{item}"
            parts = urlsplit(item)
            if parts.scheme not in ("redis", "rediss"):
                raise ValueError(f"redis url #{n + 1} must start redis:// or rediss://")
            scheme = parts.scheme
            self.tls = self.tls or scheme == "rediss"
            if parts.username and self.username is None:
                self.username = unquote(parts.username)
            if parts.password and self.password is None:
                self.password = unquote(parts.password)
            self.seeds.append((parts.hostname or "127.0.0.1", parts.port or 6379))
        if not self.seeds:
            raise ValueError("--redis-url names no node")

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": COMMAND_TIMEOUT,
        }
        if self.username:
            kw["username"] = self.username
        if self.password:
            kw["password"] = self.password
        if self.tls:
            kw["ssl"] = True
        return kw

    def node(self, host: str, port: int) -> Redis:
        return Redis(host=host, port=port, **self.kwargs())

    def data_node(self, host: str, port: int) -> Redis:
        """The single-node data client: no automatic retry (redis-py's default re-sends a
        command up to 3 times after a connection error), as the cluster client's node
        connections: rankd decides what is repeated (_Calls.run), never the driver."""
        return Redis(host=host, port=port, retry=Retry(NoBackoff(), 0), **self.kwargs())

    async def connect(self) -> Client:
        """A cluster client if the first reachable seed runs in cluster mode, else one node."""
        error: Exception | None = None
        for host, port in self.seeds:
            probe = self.node(host, port)
            try:
                info = await probe.info("cluster")
            except RedisError as exc:
                error = exc
                continue
            finally:
                await probe.aclose()
            if info.get("cluster_enabled"):
                cluster = RedisCluster(
                    startup_nodes=[ClusterNode(h, p) for h, p in self.seeds],
                    require_full_coverage=False,
                    **self.kwargs(),
                )
                await cluster.initialize()
                return cluster
            return self.data_node(host, port)
        raise Unavailable(f"no redis node reachable: {error}")


# -- metrics ----------------------------------------------------------------------------------


class CallStats:
    """Backend call latency by kind, errors by class, retries, slot-map refreshes."""

    def __init__(self) -> None:
        self.latency: dict[str, Histogram] = {}
        self.errors: dict[str, int] = {}
        self.retries = 0
        self.refreshes = 0

    def observe(self, kind: str, seconds: float) -> None:
        h = self.latency.get(kind)
        if h is None:
            h = self.latency[kind] = Histogram(_BUCKETS)
        h.observe(seconds)


def _unavailable(exc: Exception) -> bool:
    if isinstance(exc, ReadOnlyError | TryAgainError | ClusterDownError):
        return True
    if isinstance(exc, ResponseError):
        text = str(exc)
        return text.startswith(("LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN"))
    return isinstance(exc, RedisError | OSError)


class _Calls:
    def __init__(self, backend: "RedisBackend") -> None:
        self.backend = backend
        self.stats = CallStats()

    async def run(
        self,
        kind: str,
        fn: Callable[[], Awaitable[T]],
        *,
        idempotent: bool | Callable[[], bool],
    ) -> T:
        """``fn`` under the call policy; ``idempotent`` (or, asked after a failure, what it
        answers) says whether one retry is safe."""
        began = time.perf_counter()
        try:
            for attempt in (0, 1):
                try:
                    return await fn()
                except WriteUnconfirmed:
                    # applied, durability unconfirmed: counted, never retried
                    self.stats.errors["WriteUnconfirmed"] = (
                        self.stats.errors.get("WriteUnconfirmed", 0) + 1
                    )
                    raise
                except Exception as exc:
                    if not _unavailable(exc):
                        raise
                    name = type(exc).__name__
                    self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
                    await self.backend.refresh_topology()
                    safe = idempotent() if callable(idempotent) else idempotent
                    if safe and attempt == 0:
                        self.stats.retries += 1
                        await asyncio.sleep(0.05)
                        continue
                    if kind == "write":
                        hint = (
                            "the write may or may not have applied: repeat it with the same "
                            "Idempotency-Key header to apply it at most once"
                        )
                    elif idempotent:
                        hint = "retry"
                    else:
                        hint = "the write may or may not have applied"
                    raise Unavailable(
                        f"the redis cluster did not answer ({name}); {hint}"
                    ) from None
            raise AssertionError("unreachable")
        finally:
            self.stats.observe(kind, time.perf_counter() - began)


# -- boards -----------------------------------------------------------------------------------

ALL = "all"


def _opts_refused(exc: ResponseError) -> bool:
    """The one-table functions refuse a board with windows, a ranking or bounds (rankd.lua)."""
    return str(exc).startswith("OPTS")


class RedisBoardsApi:
    """Plain boards (every option but order/update/ties/policy at its default) go through the
    one-table functions (boards.RedisBoards); every other board, and every lookup, score range,
    metadata patch and periods list, through windows.RedisWindows. A plain-path call that finds
    the board has options ("OPTS": another process configured it) re-reads it and goes there."""

    def __init__(self, core: RedisBoards, calls: _Calls, windows: RedisWindows) -> None:
        self._core = core
        self._calls = calls
        self._windows = windows
        self.limits: Limits = core.limits

    async def _read(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await self._calls.run("read", fn, idempotent=True)

    async def _write(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await self._calls.run("write", fn, idempotent=False)

    async def _either(
        self, name: str, plain: Callable[[], Awaitable[T]], windowed: Callable[[], Awaitable[T]]
    ) -> T:
        if self._windows.has_opts(name):
            return await windowed()
        try:
            return await plain()
        except ResponseError as exc:
            if not _opts_refused(exc):
                raise
        await self._windows.describe(name)
        return await windowed()

    async def _info(self, name: str) -> BoardInfo:
        info: Any = await self._read(lambda: self._windows.info(name))
        return info  # type: ignore[no-any-return]

    async def configure(self, name: str, options: dict[str, Any]) -> tuple[BoardInfo, bool]:
        name = check_board_name(name)
        created = await self._write(lambda: self._windows.configure(name, options))
        return await self._info(name), created

    async def describe(self, name: str) -> BoardInfo:
        return await self._info(check_board_name(name))

    async def list_boards(self, offset: int, limit: int) -> BoardList:
        client = self._core.client
        registry = keys.registry(self._core.prefix)

        async def page() -> tuple[int, list[Any]]:
            total = await client.zcard(registry)
            names = await client.zrange(registry, offset, offset + limit - 1)
            return total, names

        total, names = await self._read(page)
        boards = []
        for raw in names:
            board = raw.decode() if isinstance(raw, bytes) else raw
            try:
                boards.append(await self._info(board))
            except BoardNotFound:
                # a drop or a refused create left the name behind: repair it lazily
                total -= 1
                with contextlib.suppress(RedisError):
                    await client.zrem(registry, board)
        return {"total": total, "offset": offset, "boards": boards}

    async def drop(self, name: str) -> None:
        name = check_board_name(name)
        if not await self._write(lambda: self._windows.drop(name)):
            raise BoardNotFound(f"board {name!r} does not exist")

    async def exists(self, name: str) -> bool:
        return await self._read(lambda: self._core.describe(name)) is not None

    async def write(
        self,
        name: str,
        member: object,
        score: object,
        metadata: object,
        at: object = None,
        idempotency_key: str | None = None,
        writer: Writer = UNKNOWN,  # recorded by the embedded journal only
    ) -> Entry:
        if at is not None:
            return (
                await self.write_many(
                    name, [(member, score, metadata, at)], idempotency_key, writer
                )
            )[0]
        publish = self._core.publish
        members = [member] if type(member) is str else []
        idem = write_id(members, idempotency_key)
        now = self._windows.clock.now()

        async def windowed() -> Entry:
            items = [(member, score, metadata)]
            return (await self._windows.write_many(name, items, publish, idem, now))[0]

        return await self._calls.run(
            "write",
            lambda: self._either(
                name, lambda: self._core.write(name, member, score, metadata, idem), windowed
            ),
            idempotent=True,
        )

    async def write_many(
        self,
        name: str,
        items: Sequence[ScoreItem],
        idempotency_key: str | None = None,
        writer: Writer = UNKNOWN,
    ) -> list[WriteResult]:
        name = check_board_name(name)
        plain: list[tuple[object, object, object]] = []
        dated = False
        for item in items:
            if len(item) > 3 and item[3] is not None:
                dated = True
            plain.append((item[0], item[1], item[2]))
        members = [m for m, _, _ in plain if type(m) is str]
        idem = write_id(members, idempotency_key)
        publish = self._core.publish
        now = self._windows.clock.now()

        async def windowed() -> list[WriteResult]:
            got: Any = await self._windows.write_many(name, items, publish, idem, now)
            return got  # type: ignore[no-any-return]

        async def either() -> list[WriteResult]:
            if dated:  # `at` needs the board's windows and grace
                return await windowed()
            got: Any = await self._either(
                name, lambda: self._core.write_many(name, plain, idem), windowed
            )
            return got  # type: ignore[no-any-return]

        # Score writes carry an idempotency id drawn once per request (write_id), on both
        # paths (rankd_write, rankd_xwrite), so one retry after a connection error, a timeout,
        # TRYAGAIN or CLUSTERDOWN applies at most once: if the first attempt ran, the function
        # finds its id and answers its reply (sum and latest boards; a best score re-applied
        # is a no-op anyway -- in the periods the first attempt named: ``now`` is the
        # request's, not the retry's).
        return await self._calls.run("write", either, idempotent=True)

    async def remove(self, name: str, member: str, writer: Writer = UNKNOWN) -> None:
        name = check_board_name(name)
        await self._read(lambda: self._windows.state(name))  # BoardNotFound first
        publish = self._core.publish

        async def plain() -> None:
            await self._core.remove(name, member)

        await self._write(
            lambda: self._either(name, plain, lambda: self._windows.remove(name, member, publish))
        )

    def _plain(self, name: str, window: str | None, period: Period) -> bool:
        """A read the one-table functions can answer: a plain board, the current period of
        its one window."""
        return (
            not self._windows.has_opts(name)
            and window in (None, ALL)
            and period in (None, "current", ALL)
        )

    async def top(
        self, name: str, offset: int, limit: int, window: str | None = None, period: Period = None
    ) -> Page:
        name = check_board_name(name)

        async def windowed() -> Page:
            got: Any = await self._windows.page(name, offset, limit, window, period)
            return got  # type: ignore[no-any-return]

        if not self._plain(name, window, period):
            return await self._read(windowed)

        async def plain() -> Page:
            page = await self._core.page(name, offset, limit)
            return {
                "board": name,
                "window": ALL,
                "period": ALL,
                "total": page.total,
                "entries": page.entries,
            }

        return await self._read(lambda: self._either(name, plain, windowed))

    async def entry(
        self, name: str, member: str, window: str | None = None, period: Period = None
    ) -> Entry:
        name = check_board_name(name)
        return await self._read(lambda: self._windows.member(name, member, window, period))

    async def around(
        self, name: str, member: str, radius: int, window: str | None = None, period: Period = None
    ) -> Page:
        name = check_board_name(name)
        got: Any = await self._read(
            lambda: self._windows.around(name, member, radius, window, period)
        )
        return got  # type: ignore[no-any-return]

    async def rank_for_score(
        self, name: str, score: int | float, window: str | None = None, period: Period = None
    ) -> RankForScore:
        name = check_board_name(name)
        s = check_score(score)

        async def windowed() -> int:
            return await self._windows.rank_for_score(name, s, window, period)

        if self._plain(name, window, period):
            rank = await self._read(
                lambda: self._either(name, lambda: self._core.rank_for_score(name, s), windowed)
            )
        else:
            rank = await self._read(windowed)
        return {"board": name, "score": s, "rank": rank}

    async def lookup(self, name: str, members: list[str]) -> LookupPage:
        name = check_board_name(name)
        got: Any = await self._read(lambda: self._windows.lookup(name, members))
        return got  # type: ignore[no-any-return]

    async def score_range(
        self, name: str, low: int | float, high: int | float, offset: int, limit: int
    ) -> RangePage:
        name = check_board_name(name)
        got: Any = await self._read(
            lambda: self._windows.score_range(name, low, high, offset, limit)
        )
        return got  # type: ignore[no-any-return]

    async def patch_metadata(
        self, name: str, member: str, metadata: object, writer: Writer = UNKNOWN
    ) -> Entry:
        name = check_board_name(name)
        publish = self._core.publish
        return await self._write(
            lambda: self._windows.patch_metadata(name, member, metadata, publish)
        )

    async def periods(self, name: str, window: str | None) -> PeriodList:
        name = check_board_name(name)
        got: Any = await self._read(lambda: self._windows.periods(name, window))
        return got  # type: ignore[no-any-return]


class RedisSessionsApi:
    """Sessions with the call policy: reads retried once, writes never."""

    def __init__(self, core: RedisSessions, calls: _Calls) -> None:
        self._core = core
        self._calls = calls

    async def create(
        self,
        *,
        user: object,
        data: object,
        ttl: object,
        max_lifetime: object,
        sid: str | None = None,
    ) -> Any:
        return await self._calls.run(
            "session",
            lambda: self._core.create(
                user=user, data=data, ttl=ttl, max_lifetime=max_lifetime, sid=sid
            ),
            idempotent=False,
        )

    async def get(self, sid: str, *, touch: bool) -> Any:
        # a touch only pushes a deadline forward: applying it twice is applying it once
        return await self._calls.run(
            "session", lambda: self._core.get(sid, touch=touch), idempotent=True
        )

    async def patch(self, sid: str, data: object, *, if_version: int | None) -> Any:
        # a compare-and-set on the version: a repeat finds the new version and conflicts
        return await self._calls.run(
            "session", lambda: self._core.patch(sid, data, if_version=if_version), idempotent=False
        )

    async def replace(self, sid: str, data: object, *, if_version: int | None) -> Any:
        return await self._calls.run(
            "session",
            lambda: self._core.replace(sid, data, if_version=if_version),
            idempotent=False,
        )

    async def touch(self, sid: str) -> Any:
        return await self._calls.run("session", lambda: self._core.touch(sid), idempotent=True)

    async def rotate(self, sid: str) -> Any:
        return await self._calls.run("session", lambda: self._core.rotate(sid), idempotent=False)

    async def delete(self, sid: str) -> None:
        await self._calls.run("session", lambda: self._core.delete(sid), idempotent=False)

    async def list_user(self, user: str) -> Any:
        return await self._calls.run("session", lambda: self._core.list_user(user), idempotent=True)

    async def revoke_user(self, user: str, *, except_id: str | None) -> int:
        n: int = await self._calls.run(
            "session",
            lambda: self._core.revoke_user(user, except_id=except_id),
            idempotent=False,
        )
        return n


# -- views ------------------------------------------------------------------------------------


class RedisViews:
    """The hub's views, fetched by ``load`` (one ``rankd_view`` or ``rankd_xview`` call per
    board and window) and then read synchronously from what that call returned. Views are kept
    per (board, window as subscribed); a window's current period comes from this process's
    clock and the board's options (store/periods.py), so ``period_view`` needs no call."""

    synchronous = False

    def __init__(self, backend: "RedisBackend") -> None:
        self._backend = backend
        View = tuple[str, str | None]
        self._tops: dict[View, tuple[list[Entry], int, int]] = {}
        # (board, window) -> member -> (rank shown, score, position)
        self._ranks: dict[View, dict[str, tuple[int | None, Any, int | None]]] = {}
        # (board, window) -> (member, radius) -> (entries around member, member's position)
        self._arounds: dict[View, dict[tuple[str, int], tuple[list[Entry], int | None]]] = {}
        self._epochs: dict[str, str] = {}
        self._seqs: dict[str, int] = {}
        self._replids: dict[str, str] = {}  # node name -> master_replid
        self._absent: set[str] = set()  # boards the last load found absent
        # (board, timed window) -> its current period when last noted (what roll compares)
        self.periods: dict[tuple[str, str], str | None] = {}

    async def load(
        self,
        name: str,
        top: int,
        members: list[str],
        arounds: Sequence[tuple[str, int]] = (),
        window: str | None = None,
    ) -> None:
        backend = self._backend
        await backend.feed.watch_board(name)  # subscribe first, then read: no write between
        core = backend.boards_core
        windows = backend.windows
        k = core.keys(name)
        pairs = [arg for member, radius in arounds for arg in (member, radius)]

        async def plain() -> tuple[Any, str]:
            reply = await fcall(
                core.client,
                "rankd_view",
                [k.z, k.m, k.d, k.cfg],
                [top, len(members), *members, *pairs],
                readonly=True,
            )
            return reply, await self._replid(k.cfg)

        async def windowed() -> tuple[Any, str]:
            for _ in range(3):
                try:
                    state = await windows.state(name)
                except BoardNotFound:
                    return None, await self._replid(k.cfg)
                try:
                    w, p = select(name, state.config, window, None, backend.clock.now())
                except (InvalidArgument, PeriodNotFound):
                    return False, await self._replid(k.cfg)  # no such window or period
                t = windows.table(name, w.name, p.id)
                try:
                    reply = await fcall(
                        core.client,
                        "rankd_xview",
                        [k.cfg, *t],
                        [
                            *state.head(),
                            state.config.ranking,
                            top,
                            len(members),
                            *members,
                            *pairs,
                        ],
                        readonly=True,
                    )
                except ResponseError as exc:
                    if not str(exc).startswith("STALEOPTS"):
                        raise
                    await windows.describe(name)
                    continue
                return (state, reply), await self._replid(k.cfg)
            raise RuntimeError(f"board {name!r}: options keep changing under the views")

        async def read() -> tuple[Any, str]:
            if windows.has_opts(name) or window not in (None, ALL):
                return await windowed()
            try:
                return await plain()
            except ResponseError as exc:
                if not _opts_refused(exc):
                    raise
            await windows.describe(name)
            return await windowed()

        reply, replid = await backend.calls.run("view", read, idempotent=True)
        view = (name, window)
        epoch = replid
        reset = self._epochs.get(name) not in (None, epoch)
        self._epochs[name] = epoch
        ranks = self._ranks.setdefault(view, {})
        near = self._arounds.setdefault(view, {})
        if not reply:
            seq = self._seqs.get(name, 0) if reply is False else 0
            if reply is None:
                self._absent.add(name)
            else:
                self._absent.discard(name)
            self._tops[view] = ([], 0, seq)
            for m in members:
                ranks[m] = (None, None, None)
            for pair in arounds:
                near[pair] = ([], None)
            self._seqs[name] = seq
            backend.feed.seen(name, seq, reset)
            return
        self._absent.discard(name)
        if isinstance(reply, tuple):
            state, (seq, total, _token, key_list, metas, shown, places, near_reply) = reply
            entries = windows.entries(state, key_list, metas, shown)
            self._tops[view] = (entries, total, seq)
            for i, m in enumerate(members):
                key, rank, pos = places[3 * i : 3 * i + 3]
                ranks[m] = (rank, key_score(key, state.desc), pos) if key else (None, None, None)
            for pair, (pos, _first, around_keys, around_metas, around_ranks) in zip(
                arounds, near_reply, strict=True
            ):
                if pos:
                    got = windows.entries(state, around_keys, around_metas, around_ranks)
                    near[pair] = (got, pos)
                else:
                    near[pair] = ([], None)
        else:
            order, ties, seq, total, _token, key_list, metas, places, arounds_reply = reply
            desc, first = order == b"desc", ties == b"first"
            self._tops[view] = (entries_of(key_list, metas, 1, desc, first), total, seq)
            for i, m in enumerate(members):
                key, rank = places[2 * i], places[2 * i + 1]
                ranks[m] = (rank, key_score(key, desc), rank) if key else (None, None, None)
            for pair, (pos, first_rank, around_keys, around_metas) in zip(
                arounds, arounds_reply, strict=True
            ):
                if pos:
                    got = entries_of(around_keys, around_metas, first_rank, desc, first)
                    near[pair] = (got, pos)
                else:
                    near[pair] = ([], None)
        self._seqs[name] = seq
        backend.feed.seen(name, seq, reset)
        self._note_periods(name)

    async def _replid(self, key: str) -> str:
        client = self._backend.boards_core.client
        if isinstance(client, RedisCluster):
            node = client.get_node_from_key(key)
            if node is None:
                raise Unavailable("no node owns the board's slot")
            cached = self._replids.get(node.name)
            if cached is not None:
                return cached
            info = await client.execute_command("INFO", "replication", target_nodes=node)
            name = node.name
        else:
            cached = self._replids.get("single")
            if cached is not None:
                return cached
            info = await client.info("replication")
            name = "single"
        replid = info["master_replid"]
        value = replid.decode() if isinstance(replid, bytes) else str(replid)
        self._replids[name] = value
        return value

    def _note_periods(self, name: str) -> None:
        state = self._backend.windows.cached(name)
        if state is None:
            return
        now = self._backend.clock.now()
        for w in state.config.windows:
            if w.kind != "all" and (name, w.name) not in self.periods:
                p = period_of(w, now)
                self.periods[(name, w.name)] = None if p is None else p.id

    def roll(self, now: float) -> None:
        """A ``broll`` for every loaded window whose current period is no longer the noted one."""
        feed = self._backend.feed
        for (name, wname), was in list(self.periods.items()):
            state = self._backend.windows.cached(name)
            if state is None:
                continue
            for w in state.config.windows:
                if w.name == wname:
                    p = period_of(w, now)
                    pid = None if p is None else p.id
                    if pid != was:
                        self.periods[(name, wname)] = pid
                        feed.announce(("broll", name, wname, was, pid))

    def forget_replids(self) -> None:
        self._replids.clear()

    def forget(self, name: str) -> None:
        for views in (self._tops, self._ranks, self._arounds):
            for view in [v for v in views if v[0] == name]:
                del views[view]
        self._epochs.pop(name, None)
        self._seqs.pop(name, None)
        self._absent.discard(name)
        for key in [k for k in self.periods if k[0] == name]:
            del self.periods[key]

    def top_view(
        self, name: str, n: int, window: str | None = None
    ) -> tuple[list[Entry], int, int]:
        entries, total, seq = self._tops.get((name, window), ([], 0, self._seqs.get(name, 0)))
        return entries[:n], total, seq

    def rank_view(
        self, name: str, member: str, window: str | None = None
    ) -> tuple[int | None, Any, int, int | None]:
        ranks = self._ranks.get((name, window), {})
        rank, score, pos = ranks.get(member, (None, None, None))
        return rank, score, self._seqs.get(name, 0), pos

    def ranking(self, name: str) -> str:
        state = self._backend.windows.cached(name)
        return "ordinal" if state is None else state.config.ranking

    def period_view(self, name: str, window: str | None = None) -> tuple[str | None, str | None]:
        if name in self._absent:
            return None, None
        state = self._backend.windows.cached(name)
        if state is None:  # not read yet here, or plain: one window, "all"
            return (ALL, ALL) if window in (None, ALL) else (None, None)
        return current_period(state.config, window, self._backend.clock.now())

    def around_view(
        self, name: str, member: str, radius: int, window: str | None = None
    ) -> tuple[list[Entry], int, int, int | None]:
        view = (name, window)
        entries, pos = self._arounds.get(view, {}).get((member, radius), ([], None))
        _, total, seq = self._tops.get(view, ([], 0, self._seqs.get(name, 0)))
        return entries, total, seq, pos

    def epoch(self, name: str) -> str:
        return self._epochs.get(name, self._backend.epoch)


def current_period(
    config: BoardConfig, window: str | None, now: float
) -> tuple[str | None, str | None]:
    """(window name, its current period id or None); (None, None) for a window the board lacks."""
    names = [w.name for w in config.windows]
    if window is not None and window not in names:
        return None, None
    w = config.windows[0 if window is None else names.index(window)]
    p = period_of(w, now)
    return w.name, None if p is None else p.id


# -- the backend ------------------------------------------------------------------------------


class RedisBackend:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        limits = settings.limits
        self.target = Target(settings.redis_url, settings.redis_username, settings.redis_password)
        self.prefix = keys.check_prefix(settings.redis_prefix)
        local, replicas = settings.redis_wait_aof
        self.wait = WaitPolicy(
            replicas=settings.redis_wait_replicas,
            timeout_ms=settings.redis_wait_timeout_ms,
            aof_local=local,
            aof_replicas=replicas,
        )
        self.calls = _Calls(self)
        self.memory = MemoryGuard(settings.max_memory or 0)
        self._checks = SessionStore.with_limits(self.clock, limits.store())
        self.client: Client | None = None
        self.boards_core: RedisBoards
        self.views = RedisViews(self)
        self.epoch = secrets.token_hex(8)  # this process's start; frames carry the shard's
        self.ready = False
        self.fatal: str | None = None
        self.started_at = self.clock.now()
        self.reason: str | None = "not connected yet"
        self.library_ok = False
        # The hub listens from the start; the feed gets its client once connected.
        self._feed = RedisFeed(None, self.prefix, self.target.node)
        self._feed.expiry_check = self._expires_at
        self._feed.on_unwatch = self.views.forget
        self._tasks: list[asyncio.Task[Any]] = []
        self._refreshing: asyncio.Task[None] | None = None

    # the protocol's parts exist only once connected; routes run only when ready
    @property
    def boards(self) -> RedisBoardsApi:
        return self._boards

    @property
    def sessions(self) -> RedisSessionsApi:
        return self._sessions

    @property
    def feed(self) -> RedisFeed:
        return self._feed

    async def _connect(self) -> None:
        client = await self.target.connect()
        self.client = client
        self.boards_core = RedisBoards(client, self.prefix, self.settings.limits.store())
        self.boards_core.wait = self.wait
        self.windows = RedisWindows(self.boards_core, self.clock)
        self._boards = RedisBoardsApi(self.boards_core, self.calls, self.windows)
        core = RedisSessions(client, self.prefix, self._checks)
        core.wait = self.wait
        core.max_anonymous = self.settings.limits.max_anonymous_sessions
        secret_key = keys.secret(self.prefix)
        await client.set(secret_key, secrets.token_hex(32), nx=True)
        secret = await client.get(secret_key)
        assert secret is not None
        core.secret = secret if isinstance(secret, bytes) else secret.encode()
        self._sessions = RedisSessionsApi(core, self.calls)
        self._feed.client = client
        self._feed.locate = core.locate

    async def _expires_at(self, sid: str) -> float | None:
        try:
            info = await self._sessions.get(sid, touch=False)
        except SessionNotFound:
            return None
        return float(info["expires_at"])

    async def start(self) -> None:
        """Connect and load the library; a cluster that is not there yet is waited for (not
        ready meanwhile), not a failure: rankd processes may start before their cluster."""
        while self.client is None:
            try:
                await self._connect()
            except (Unavailable, RedisError, OSError) as exc:
                self.reason = "the redis cluster is unreachable"
                log.warning("redis unreachable (%s); retrying", exc)
                await asyncio.sleep(HEALTH_INTERVAL)
        log.info("redis backend on %d seed(s), prefix %r", len(self.target.seeds), self.prefix)
        if self.wait.uses_waitaof:
            refused = await check_waitaof(self.client)
            if refused is not None:
                self.fatal = refused
                raise Unavailable(refused)
        self.memory.start_reserve()
        self._tasks.append(asyncio.create_task(self.memory.run(), name="rankd-memory-sample"))
        await self._check_health(load=True)
        self._tasks.append(asyncio.create_task(self._health(), name="rankd-redis-health"))
        self._tasks.append(asyncio.create_task(self._roll(), name="rankd-period-roll"))

    async def _check_health(self, load: bool = False) -> None:
        client = self.client
        assert client is not None
        try:
            if isinstance(client, RedisCluster):
                await client.nodes_manager.initialize()
            else:
                await client.ping()
            if load or not await library_loaded(client):
                await load_library(client)
                self.views.forget_replids()
            self.library_ok = await library_loaded(client)
            self.reason = None if self.library_ok else "function library not loaded"
        except Exception as exc:
            self.library_ok = False
            # clients see the reason (/readyz, 503s): no addresses; the log has the details
            self.reason = "the redis cluster is unreachable"
            detail = f"{type(exc).__name__}: {exc}"
        else:
            detail = self.reason or ""
        was, self.ready = self.ready, self.library_ok
        if was != self.ready:
            log.warning("redis backend %s", "ready" if self.ready else f"not ready: {detail}")
            if self.ready:
                self.views.forget_replids()

    async def _roll(self) -> None:
        """Announce a ``broll`` when a watched board's window enters a new period, so this
        process's WebSocket subscribers hear of a rollover within ROLL_INTERVAL even when
        nobody writes (the embedded backend's tick; periods come from the clock, nothing is
        stored at a boundary). The period each window had when its views were first loaded
        here is the starting point (RedisViews.periods)."""
        while True:
            await asyncio.sleep(ROLL_INTERVAL)
            try:
                self.views.roll(self.clock.now())
            except Exception:
                log.exception("period rollover check failed; retrying")

    async def _health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            await self._check_health()

    async def refresh_topology(self) -> None:
        """Re-read the slot map (single flight): after a failover the next call goes to the
        promoted replica instead of the dead primary."""
        client = self.client
        if not isinstance(client, RedisCluster):
            return
        if self._refreshing is None or self._refreshing.done():
            self.calls.stats.refreshes += 1
            self.views.forget_replids()

            async def refresh() -> None:
                with contextlib.suppress(Exception):
                    await client.nodes_manager.initialize()

            self._refreshing = asyncio.create_task(refresh())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._refreshing), CONNECT_TIMEOUT * 2)

    async def stop(self) -> None:
        self.ready = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._feed.close()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()

    def health(self) -> Health:
        return {"ready": self.ready, "writable": self.ready, "reason": self.reason}

    def stats(self) -> Stats:
        m = self.memory
        memory: MemoryStats = {
            "used": m.used,
            "limit": m.limit,
            "refused": m.refused,
            "memory_errors": m.memory_errors,
        }
        return {"store": None, "persistence": None, "memory": memory}

    def check_grow(self) -> None:
        if self.memory.over:
            self.memory.check()

    def on_memory_error(self) -> None:
        self.memory.on_memory_error()

    async def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError("the redis backend's durability is the cluster's")

    def backend_metrics(self) -> dict[str, Any]:
        """For /metrics (service/metrics.py)."""
        feed = self._feed
        sessions: RedisSessionsApi | None = getattr(self, "_sessions", None)
        return {
            "latency": {k: (h.cumulative(), h.sum) for k, h in self.calls.stats.latency.items()},
            "errors": dict(self.calls.stats.errors),
            "retries": self.calls.stats.retries,
            "refreshes": self.calls.stats.refreshes,
            "session_events": dict(sessions._core.counters) if sessions else {},
            "gaps": feed.gaps if feed else 0,
            "resubscribes": feed.resubscribes if feed else 0,
            "messages": feed.messages if feed else 0,
            "library_loaded": self.library_ok,
        }


__all__ = ["RedisBackend", "Target"]
