"""The change feed over sharded pub/sub (SSUBSCRIBE), with seq-gap healing.

The write functions SPUBLISH on the board's shard channel ``P:{B}:ev`` (``set <seq> <rank>
<prev> <member>``, ``del <seq> <prev> <member>``, ``drop``; ``private`` when configure turns
``public_read`` off) and the session functions on the
bucket's ``P:sev:{T}`` (``rotated|deleted|revoked|evicted <id>``). This process subscribes only
to the boards its WebSocket clients watch and the buckets of the sessions they are bound to (a
caller-chosen id's bucket is looked up through ``locate``: its pointer, session_ids.py).

One plain pub/sub connection per cluster node (``_NodeSub``), opened to the node that owns the
channel's slot, read by its own task. Pub/sub is at-most-once, so:

* every board mutation adds exactly 1 to the board's ``seq``: an event whose seq is not
  ``last + 1`` means something was missed, and the feed announces the whole board as changed
  (a ``bcfg`` event: the hub re-reads every view of it). ``gaps`` counts them;
* a connection that fails (node killed, failover, slot moved) loses its subscriptions: the
  feed refreshes the slot map, re-subscribes each channel at its current owner (retrying every
  ``RETRY`` seconds while the cluster has no owner for it) and then announces every board it
  carried as changed -- subscribe first, then read, so no write falls between the two. The
  re-read also fetches the shard's replication id, so subscribers see the new epoch.

Session expiry publishes nothing: a bound session's deadline is known, so a local timer checks
it (one read) when it falls due and announces ``expired`` if it is gone.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster

from service.backend.api import BoardListener, SessionListener
from service.backend.redis import keys
from service.backend.redis.session_ids import session_bucket
from store.events import BoardEvent, SessionEvent

log = logging.getLogger("rankd.redis")

RETRY = 0.25  # seconds between re-subscribe attempts while a shard has no reachable owner
READ_TIMEOUT = 1.0

NodeFactory = Callable[[str, int], Redis]


ALL = "all"  # boards here have one window, "all", with one period, "all"


class _NodeSub:
    """One pub/sub connection to one node and the channels subscribed on it."""

    def __init__(self, feed: "RedisFeed", name: str, conn: Redis) -> None:
        self.feed = feed
        self.name = name
        self.conn = conn
        self.pubsub = conn.pubsub()
        self.channels: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._read(), name=f"rankd-feed-{self.name}")

    async def _read(self) -> None:
        try:
            while True:
                if not self.channels:
                    await asyncio.sleep(READ_TIMEOUT)
                    continue
                msg = await self.pubsub.get_message(
                    ignore_subscribe_messages=False, timeout=READ_TIMEOUT
                )
                if msg is None:
                    continue
                kind = msg["type"]
                if kind in (b"smessage", "smessage"):
                    self.feed._on_message(_text(msg["channel"]), msg["data"])
                elif kind in (b"sunsubscribe", "sunsubscribe"):
                    # the server moves us off a slot that changed hands (or our own unsubscribe)
                    channel = _text(msg["channel"])
                    if channel in self.channels:
                        self.channels.discard(channel)
                        self.feed._lost([channel])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("pub/sub connection to %s failed: %s", self.name, exc)
            self.feed._node_failed(self)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            await self.conn.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisFeed:
    def __init__(
        self, client: Redis | RedisCluster | None, prefix: str, node_factory: NodeFactory
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._node_factory = node_factory
        self._board_listeners: list[BoardListener] = []
        self._session_listeners: list[SessionListener] = []
        self._nodes: dict[str, _NodeSub] = {}
        self._where: dict[str, _NodeSub] = {}  # channel -> its subscription
        self._boards: dict[str, int | None] = {}  # watched board -> last seq seen
        self._channel_board: dict[str, str] = {}
        self._buckets: dict[str, int] = {}  # session channel -> bound sessions in it
        self._bound: dict[str, asyncio.TimerHandle | None] = {}  # bound session id -> timer
        self._channel_of: dict[str, str] = {}  # bound session id -> its bucket's channel
        # id -> bucket for ids that do not name it (set by RedisBackend: RedisSessions.locate)
        self.locate: Callable[[str], Awaitable[str | None]] | None = None
        self._pending: set[str] = set()  # channels to (re-)subscribe
        self._healer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.expiry_check: Callable[[str], Awaitable[float | None]] | None = None
        self.on_unwatch: Callable[[str], None] | None = None  # drops a board's cached views
        # metrics
        self.gaps = 0
        self.resubscribes = 0
        self.messages = 0

    # -- ChangeFeed ----------------------------------------------------------------------------

    def listen(self, on_board: BoardListener, on_session: SessionListener) -> None:
        self._board_listeners.append(on_board)
        self._session_listeners.append(on_session)

    def unlisten(self, on_board: BoardListener, on_session: SessionListener) -> None:
        if on_board in self._board_listeners:
            self._board_listeners.remove(on_board)
        if on_session in self._session_listeners:
            self._session_listeners.remove(on_session)

    async def watch_board(self, name: str) -> None:
        """Subscribe to a board's events (before its view is read: no write falls between)."""
        if name in self._boards:
            return
        channel = keys.board_keys(self.prefix, name).ev
        self._boards[name] = None
        self._channel_board[channel] = name
        await self._subscribe(channel)

    def unwatch_board(self, name: str) -> None:
        if name not in self._boards:
            return
        del self._boards[name]
        if self.on_unwatch is not None:
            self.on_unwatch(name)
        channel = keys.board_keys(self.prefix, name).ev
        self._channel_board.pop(channel, None)
        self._drop_channel(channel)

    def seen(self, name: str, seq: int, reset: bool) -> None:
        """A view of ``name`` at ``seq`` was read: later events continue from there."""
        if name in self._boards:
            last = self._boards[name]
            if reset or last is None or seq > last:
                self._boards[name] = seq

    async def watch_session(self, sid: str, expires_at: float, now: float) -> None:
        if sid in self._bound:
            return
        bucket = session_bucket(sid)
        if bucket is None and self.locate is not None:
            bucket = await self.locate(sid)  # a caller-chosen id: its pointer names the bucket
        if bucket is None or sid in self._bound:
            return
        channel = keys.session_channel(self.prefix, bucket)
        self._channel_of[sid] = channel
        self._bound[sid] = None
        self._buckets[channel] = self._buckets.get(channel, 0) + 1
        if self._buckets[channel] == 1:
            await self._subscribe(channel)
        self._arm(sid, expires_at, now)

    def unwatch_session(self, sid: str) -> None:
        if sid not in self._bound:
            return
        timer = self._bound.pop(sid)
        if timer is not None:
            timer.cancel()
        channel = self._channel_of.pop(sid)
        self._buckets[channel] -= 1
        if not self._buckets[channel]:
            del self._buckets[channel]
            self._drop_channel(channel)

    # -- subscriptions -------------------------------------------------------------------------

    async def _subscribe(self, channel: str) -> None:
        try:
            await self._subscribe_now(channel)
        except Exception as exc:
            log.warning("cannot subscribe to a channel yet: %s", exc)
            self._pending.add(channel)
            self._heal_soon()

    async def _subscribe_now(self, channel: str) -> None:
        client = self.client
        if client is None:
            raise ConnectionError("not connected yet")
        if isinstance(client, RedisCluster):
            await client.initialize()
            node = client.get_node_from_key(channel)
            if node is None:
                raise ConnectionError("no node owns the channel's slot")
            name, host, port = node.name, node.host, int(node.port)
        else:
            kw = client.connection_pool.connection_kwargs
            name, host, port = "single", str(kw.get("host", "localhost")), int(kw.get("port", 6379))
        sub = self._nodes.get(name)
        if sub is None:
            sub = self._nodes[name] = _NodeSub(self, name, self._node_factory(host, port))
        await sub.pubsub.ssubscribe(channel)
        sub.channels.add(channel)
        self._where[channel] = sub
        if sub.task is None:
            sub.start()

    def _drop_channel(self, channel: str) -> None:
        self._pending.discard(channel)
        sub = self._where.pop(channel, None)
        if sub is None:
            return
        sub.channels.discard(channel)

        async def unsubscribe() -> None:
            with contextlib.suppress(Exception):
                await sub.pubsub.sunsubscribe(channel)

        asyncio.get_running_loop().create_task(unsubscribe())

    def _node_failed(self, sub: _NodeSub) -> None:
        if self._nodes.get(sub.name) is sub:
            del self._nodes[sub.name]
        lost = list(sub.channels)
        sub.channels.clear()
        asyncio.get_running_loop().create_task(sub.close())
        self._lost(lost)

    def _lost(self, channels: list[str]) -> None:
        for channel in channels:
            if self._where.get(channel) is not None:
                del self._where[channel]
            if channel in self._channel_board or channel in self._buckets:
                self._pending.add(channel)
        if self._pending:
            self._heal_soon()

    def _heal_soon(self) -> None:
        if self._healer is None or self._healer.done():
            self._healer = asyncio.get_running_loop().create_task(self._heal())

    async def _heal(self) -> None:
        """Re-subscribe lost channels at their current owners, then re-read their boards."""
        while self._pending:
            self.resubscribes += 1
            client = self.client
            if isinstance(client, RedisCluster):
                with contextlib.suppress(Exception):
                    await client.nodes_manager.initialize()  # the slot map after a failover
            healed = []
            for channel in list(self._pending):
                try:
                    await self._subscribe_now(channel)
                except Exception as exc:
                    log.debug("re-subscribe failed, will retry: %s", exc)
                    continue
                self._pending.discard(channel)
                healed.append(channel)
            for channel in healed:
                board = self._channel_board.get(channel)
                if board is not None:
                    self._boards[board] = None
                    self._board_event(("bcfg", board, {}, None, 0.0))
            if self._pending:
                await asyncio.sleep(RETRY)

    # -- events --------------------------------------------------------------------------------

    def watched_boards(self) -> list[str]:
        """The boards this process's subscribers watch."""
        return list(self._boards)

    def announce(self, event: BoardEvent) -> None:
        """Deliver a locally derived event (a ``broll``: periods come from the clock)."""
        self._board_event(event)

    def _board_event(self, event: BoardEvent) -> None:
        for fn in list(self._board_listeners):
            try:
                fn(event)
            except Exception:
                log.exception("a board listener failed")

    def _session_event(self, event: SessionEvent) -> None:
        for fn in list(self._session_listeners):
            try:
                fn(event)
            except Exception:
                log.exception("a session listener failed")

    def _on_message(self, channel: str, data: bytes) -> None:
        self.messages += 1
        board = self._channel_board.get(channel)
        if board is not None:
            self._on_board_message(board, data)
            return
        kind, _, sid = data.decode().partition(" ")
        if sid in self._bound:
            self._end(sid, kind)

    def _on_board_message(self, board: str, data: bytes) -> None:
        text = data.decode()
        kind = text.partition(" ")[0]
        parts = text.split(" ", 4 if kind == "set" else 3)
        if kind == "drop":
            self._boards[board] = None
            self._board_event(("bdrop", board, cast(Any, None)))
            return
        if kind == "private":  # public_read turned off (boards.configure): no seq of its own
            self._board_event(("bcfg", board, {"public_read": False}, None, 0.0))
            return
        seq = int(parts[1])
        last = self._boards.get(board, None)
        if last is not None and seq <= last:
            return  # already in the view that was read
        if last is not None and seq != last + 1:
            self.gaps += 1
            self._boards[board] = seq
            self._board_event(("bcfg", board, {}, None, 0.0))
            return
        self._boards[board] = seq if last is not None else None
        if kind == "set":
            rank, prev = int(parts[2]), int(parts[3])
            self._board_event(
                ("bset", board, parts[4], 0, seq, None, rank, prev or None, None, None, ALL, ALL)
            )
        elif kind == "del":
            self._board_event(("bdel", board, parts[3], seq, int(parts[2]), b"", None, ALL, ALL))

    # -- session expiry ------------------------------------------------------------------------

    def _arm(self, sid: str, expires_at: float, now: float) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, expires_at - now) + 0.05
        self._bound[sid] = loop.call_later(delay, lambda: loop.create_task(self._due(sid)))

    async def _due(self, sid: str) -> None:
        if sid not in self._bound or self.expiry_check is None:
            return
        try:
            expires_at = await self.expiry_check(sid)
        except Exception:
            expires_at = time.time() + 1.0  # cluster unreachable: look again soon
        if sid not in self._bound:
            return
        if expires_at is None:
            self._end(sid, "expired")
        else:
            self._arm(sid, expires_at, time.time())

    def _end(self, sid: str, reason: str) -> None:
        self.unwatch_session(sid)
        self._session_event(("sdel", sid, reason, cast(Any, None)))

    async def close(self) -> None:
        if self._healer is not None:
            self._healer.cancel()
            with contextlib.suppress(BaseException):
                await self._healer
        for timer in self._bound.values():
            if timer is not None:
                timer.cancel()
        for sub in list(self._nodes.values()):
            await sub.close()
        self._nodes.clear()
