"""Board operations over the ``rankd`` function library: encode arguments, decode replies.

The seam-independent core of the future ``RedisBackend`` boards (service/backend/api.py lands
with the seam): validation stays in store/values.py on the instance, the candidate NUM is built
with rankd's own ``encode_num`` (negated on desc boards), and scores come back decoded from the
stored sort keys with ``key_score``, so result types (int vs float) are exactly rankd's.

Every call is one function call on the board's slot. The caller's idea of a board's order and
ties (needed to build NUM) is a cache: a write or rank_for_score that assumed wrong gets
STALECONFIG back, nothing written, and is re-encoded and retried. Order and ties change only
while a board is empty, so the cache is right almost always.

Results use store.boards' shapes: writes return {member, score, rank, previous, changed};
reads return entries {rank, member, score, metadata?}; ranks are 1-based.
"""

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from service.backend.redis import keys
from service.backend.redis.durability import WaitPolicy, fcall_acked
from service.backend.redis.functions import Arg, Client, fcall
from store.boards import Entry
from store.errors import (
    BoardNotFound,
    Conflict,
    InsufficientStorage,
    InvalidArgument,
    MemberNotFound,
)
from store.options import DEFAULT_PLAYER_RATE, BoardConfig
from store.show import show
from store.sortkey import encode_num, key_member, key_score, key_seq, make_key
from store.values import (
    SCORE_LIMIT,
    Limits,
    Score,
    check_batch_size,
    check_board_name,
    check_member,
    check_metadata,
    check_score,
)

_STALE_RETRIES = 3
# The board options the one-table functions keep (in the board's cfg hash: order, update and
# ties, the player policy as fields pw/pr/pub); every other option (windows, periods, ranking,
# bounds) is the cfg "opts" field that windows.RedisWindows.configure writes, which RedisBackend
# uses for every configure.
SHAPE = ("order", "update", "ties")
POLICY = ("player_writes", "player_rate", "public_read")
_DEFAULTS = BoardConfig().as_dict()


def _changed(config: BoardConfig) -> dict[str, Any]:
    """The options other than order, update and ties that differ from their defaults."""
    return {k: v for k, v in config.as_dict().items() if k not in SHAPE and v != _DEFAULTS[k]}


class Page(NamedTuple):
    seq: int
    total: int
    entries: list[Entry]


class RedisBoards:
    def __init__(
        self,
        client: Client,
        prefix: str = keys.DEFAULT_PREFIX,
        limits: Limits | None = None,
        publish: bool = True,
    ) -> None:
        self.client = client
        self.prefix = keys.check_prefix(prefix)
        self.limits = limits or Limits()
        self.publish = "1" if publish else "0"
        # board -> (order, ties) as last seen; absent = the defaults a write creates with
        self._shape: dict[str, tuple[str, str]] = {}
        # what an acknowledged write waits for (--redis-wait-*); set by RedisBackend
        self.wait = WaitPolicy()

    def keys(self, board: str) -> keys.BoardKeys:
        return keys.board_keys(self.prefix, board)

    # -- durability, idempotency, --max-boards -------------------------------------------------

    async def _fcall_write(self, function: str, key_list: list[str], args: list[Arg]) -> Any:
        """A writing function call, followed on the same connection by the waits of
        ``self.wait`` when any are configured (durability.py)."""
        if self.wait.active:
            return await fcall_acked(self.client, function, key_list, args, self.wait)
        return await fcall(self.client, function, key_list, args)

    def _create_flag(self) -> str:
        # without a cap a function may create the board itself: one call, as before
        return "0" if self.limits.boards else "1"

    async def _admit(self, board: str) -> None:
        """--max-boards on the cluster: list the board in the registry if there is room
        (rankd_admit_board), else InsufficientStorage (507), as the embedded keyspace does."""
        try:
            await self._fcall_write(
                "rankd_admit_board", [keys.registry(self.prefix)], [board, self.limits.boards]
            )
        except ResponseError as exc:
            if not str(exc).startswith("FULL"):
                raise
            raise InsufficientStorage(
                f"there are already {str(exc).split()[1]} boards, the limit (--max-boards); "
                "drop one or raise the limit"
            ) from None

    # -- config ------------------------------------------------------------------------------

    async def configure(self, board: str, options: dict[str, Any]) -> dict[str, Any]:
        """Create a board or change its options (order/ties only while empty: Conflict)."""
        board = check_board_name(board)
        # options not named keep their current values (an empty dict changes nothing)
        current = await self.describe(board)
        base = BoardConfig.from_options(current["config"]) if current else None
        config = BoardConfig.from_options(options, base)
        extra = _changed(config)
        unsupported = sorted(name for name in extra if name not in POLICY)
        if unsupported:
            raise InvalidArgument(
                f"board options {unsupported} (ranking, windows, periods, score bounds) are "
                "configured through RedisWindows.configure (service/backend/redis/windows.py)"
            )
        k = self.keys(board)
        args: list[Arg] = [
            config.order,
            config.update,
            config.ties,
            secrets.token_hex(8),
            "1" if config.player_writes else "0",
            config.player_rate,
            "1" if config.public_read else "0",
            self._create_flag(),
        ]
        while True:
            try:
                reply = await self._fcall_write("rankd_configure", [k.z, k.cfg], args)
            except ResponseError as exc:
                if str(exc).startswith("CONFLICT"):
                    raise Conflict(
                        f"board {show(board)} is not empty: order and ties cannot change"
                    ) from None
                if str(exc).startswith("NOBOARD") and args[-1] == "0":
                    await self._admit(board)
                    args[-1] = "1"
                    continue
                raise
            break
        self._shape[board] = (config.order, config.ties)
        await self.client.zadd(keys.registry(self.prefix), {board: 0})
        if base is not None and base.public_read and not config.public_read:
            # Every instance's credential-less subscribers of the board must be cut now
            # (service/hub.py); the feed turns this into a "bcfg" event (redis/feed.py).
            await self.client.spublish(k.ev, "private")
        return {"created": bool(reply[0]), "config": config.as_dict(), "seq": reply[4]}

    async def describe(self, board: str) -> dict[str, Any] | None:
        k = self.keys(board)
        reply = await fcall(self.client, "rankd_describe", [k.z, k.cfg], [], readonly=True)
        if reply is None:
            return None
        order, update, ties, seq, epoch, total, pw, pr, pub = reply
        self._shape[board] = (order.decode(), ties.decode())
        return {
            "config": {
                "order": order.decode(),
                "update": update.decode(),
                "ties": ties.decode(),
                "player_writes": pw == b"1",
                "player_rate": DEFAULT_PLAYER_RATE if pr is None else int(pr),
                "public_read": pub == b"1",
            },
            "seq": seq,
            "epoch": epoch.decode(),
            "total": total,
        }

    async def epoch(self, board: str) -> str:
        """``<board token>.<shard replication id>``: the same on every instance, and changed
        exactly when history may have forked -- a failover promotes a replica with a new
        replication id (acknowledged writes may be lost, seq may step back), and a dropped and
        re-created board draws a new token. BoardNotFound if absent."""
        found = await self.describe(board)
        if found is None:
            raise BoardNotFound(f"board {show(board)} does not exist")
        client = self.client
        if isinstance(client, RedisCluster):
            node = client.get_node_from_key(self.keys(board).cfg)
            info = await client.execute_command("INFO", "replication", target_nodes=node)
        else:
            info = await client.info("replication")
        replid = info["master_replid"]
        return f"{found['epoch']}.{replid.decode() if isinstance(replid, bytes) else replid}"

    async def list_boards(self, after: str = "", limit: int = 100) -> list[str]:
        """Board names in byte order after ``after`` (the registry; may hold a stale name)."""
        start = b"(" + after.encode() if after else b"-"
        names = await self.client.zrangebylex(keys.registry(self.prefix), start, b"+", 0, limit)
        return [n.decode() if isinstance(n, bytes) else n for n in names]

    async def drop(self, board: str) -> bool:
        k = self.keys(board)
        dropped = await self._fcall_write(
            "rankd_drop", [*k, *keys.idem_keys(self.prefix, board)], [self.publish]
        )
        await self.client.zrem(keys.registry(self.prefix), board)
        self._shape.pop(board, None)
        return bool(dropped)

    # -- writes ------------------------------------------------------------------------------

    async def write(
        self, board: str, member: object, score: object, metadata: object = None, idem: str = ""
    ) -> Entry:
        return (await self.write_many(board, [(member, score, metadata)], idem))[0]

    async def write_many(
        self, board: str, items: list[tuple[object, object, object]], idem: str = ""
    ) -> list[Entry]:
        """Apply writes in order, all or nothing (validated here, sum overflow in the function).

        ``idem``: the write's idempotency id (``write_id``), "" for none. A call repeated with
        the same id (rankd's retry after a connection error, a client's Idempotency-Key) gets
        the first application's result back and writes nothing; the same id with other items
        is a Conflict."""
        board = check_board_name(board)
        if not items:
            raise InvalidArgument("a batch holds at least 1 item, but got 0")
        check_batch_size(len(items), self.limits)  # 413, as the embedded store answers
        checked: list[tuple[str, Score, bytes]] = []
        for member, score, metadata in items:
            m = check_member(member, self.limits)
            s = check_score(score)
            meta = check_metadata(metadata, self.limits)
            checked.append((m, s, orjson.dumps(meta) if meta is not None else b""))
        k = self.keys(board)
        key_list = [*k, *keys.idem_keys(self.prefix, board)]
        fp = fingerprint([(m, s, meta, None) for m, s, meta in checked])
        create = self._create_flag()
        for _ in range(_STALE_RETRIES + 1):
            order, ties = self._shape.get(board, ("desc", "first"))
            desc = order == "desc"
            args: list[Arg] = [order, ties, self.publish, secrets.token_hex(8), create, idem, fp]
            for m, s, meta_json in checked:
                args += (m, encode_num(-s if desc else s), "1" if type(s) is float else "0")
                args.append(meta_json)
            try:
                reply = await self._fcall_write("rankd_write", key_list, args)
            except ResponseError as exc:
                text = str(exc)
                if text.startswith("NOBOARD") and create == "0":
                    await self._admit(board)
                    create = "1"
                    continue
                if text.startswith("IDEMMISMATCH"):
                    raise idem_conflict() from None
                if text.startswith("STALECONFIG"):
                    _, order, ties = text.split()
                    self._shape[board] = (order, ties)
                    continue
                if text.startswith("RANGE"):
                    i = int(text.split()[1])
                    raise InvalidArgument(
                        f"sum for member {show(checked[i][0])} would reach magnitude 2**63"
                    ) from None
                raise
            self._shape[board] = (order, ties)
            if reply[0]:
                await self.client.zadd(keys.registry(self.prefix), {board: 0})
            return [
                _write_result(m, desc, reply[2 + 5 * i : 7 + 5 * i])
                for i, (m, _, _) in enumerate(checked)
            ]
        raise RuntimeError(f"board {board!r}: order/ties keep changing under the writes")

    async def remove(self, board: str, member: str) -> tuple[int, int]:
        """Delete an entry: (seq, previous rank); MemberNotFound if absent."""
        reply = await self._fcall_write(
            "rankd_remove", list(self.keys(board)), [member, self.publish]
        )
        if reply is None:
            raise MemberNotFound(f"member {show(member)} is not on board {show(board)}")
        return reply[0], reply[1]

    # -- reads -------------------------------------------------------------------------------

    async def page(self, board: str, offset: int = 0, limit: int = 10) -> Page:
        """Ranks offset+1 .. offset+limit in one snapshot. Runtime complexity: O(log n + limit)."""
        _check_count("offset", offset)
        _check_count("limit", limit)
        k = self.keys(board)
        reply = await fcall(
            self.client, "rankd_top", [k.z, k.d, k.cfg], [offset, limit], readonly=True
        )
        if reply is None:
            raise BoardNotFound(f"board {show(board)} does not exist")
        order, ties, seq, total, key_list, metas = reply
        return Page(seq, total, _entries(order, ties, offset + 1, key_list, metas))

    async def top(self, board: str, offset: int = 0, limit: int = 10) -> list[Entry]:
        return (await self.page(board, offset, limit)).entries

    async def entry(self, board: str, member: str) -> Entry:
        """{rank, member, score, metadata?}. Runtime complexity: O(log n)."""
        k = self.keys(board)
        reply = await fcall(
            self.client, "rankd_entry", [k.z, k.m, k.d, k.cfg], [member], readonly=True
        )
        _found(board, member, reply)
        order, ties, rank, key, meta = reply
        return _entries(order, ties, rank, [key], [meta])[0]

    async def around(self, board: str, member: str, radius: int) -> list[Entry]:
        """Up to ``radius`` entries each side of member, member included. O(log n + radius)."""
        _check_count("radius", radius)
        k = self.keys(board)
        reply = await fcall(
            self.client, "rankd_around", [k.z, k.m, k.d, k.cfg], [member, radius], readonly=True
        )
        _found(board, member, reply)
        order, ties, first_rank, key_list, metas = reply
        return _entries(order, ties, first_rank, key_list, metas)

    async def rank_for_score(self, board: str, score: object) -> int:
        """The rank a newcomer posting ``score`` now would get (store.boards' rule)."""
        s = check_score(score)
        k = self.keys(board)
        for _ in range(_STALE_RETRIES):
            order, ties = self._shape.get(board, ("desc", "first"))
            num = encode_num(-s if order == "desc" else s)
            try:
                rank = await fcall(
                    self.client,
                    "rankd_rank_for_score",
                    [k.z, k.cfg],
                    [order, ties, num],
                    readonly=True,
                )
            except ResponseError as exc:
                if not str(exc).startswith("STALECONFIG"):
                    raise
                _, order, ties = str(exc).split()
                self._shape[board] = (order, ties)
                continue
            if rank is None:
                raise BoardNotFound(f"board {show(board)} does not exist")
            return int(rank)
        raise RuntimeError(f"board {board!r}: order/ties keep changing under the reads")


async def check_board(client: Client, prefix: str, board: str) -> None:
    """Assert every invariant of one board's keys (store.boards.Board._check's counterpart).

    ZSET members and the member hash agree one to one; every key is canonical (re-encoding
    its score gives the same bytes); on ties=first its SEQ is in 1..cfg.seq; metadata only for
    members on the board; every score below 2**63. O(n) reads: for tests, not for production.
    """
    client_any: Any = client  # replies are bytes (no decode_responses): typed as bytes | str
    k = keys.board_keys(prefix, board)
    cfg = {f.decode(): v.decode() for f, v in (await client_any.hgetall(k.cfg)).items()}
    zkeys: list[bytes] = await client_any.zrange(k.z, 0, -1, withscores=False)
    members = {m.decode(): key for m, key in (await client_any.hgetall(k.m)).items()}
    with_meta = {m.decode() for m in await client_any.hkeys(k.d)}
    if not cfg:
        assert not zkeys and not members and not with_meta, board
        return
    desc, first, seq = cfg["order"] == "desc", cfg["ties"] == "first", int(cfg["seq"])
    assert len(zkeys) == len(set(zkeys)) == len(members), (len(zkeys), len(members))
    assert set(zkeys) == set(members.values()), board
    assert all(s == 0 for _, s in await client_any.zrange(k.z, 0, -1, withscores=True))
    for member, key in members.items():
        assert key_member(key, first) == member, (member, key)
        score = key_score(key, desc)
        assert abs(score) < SCORE_LIMIT, key
        key_seq_value = key_seq(key) if first else None
        if key_seq_value is not None:
            assert 0 < key_seq_value <= seq, (key, seq)
        canonical = make_key(encode_num(-score if desc else score), key_seq_value, member, score)
        assert key == canonical, (key, canonical)
    assert with_meta <= members.keys(), with_meta - members.keys()


def write_id(members: list[str], client_key: str | None) -> str:
    """The idempotency id of one write request (rankd.lua "Idempotency"): 128 random bits
    drawn per request, or, for a client's Idempotency-Key, 128 bits of SHA-256 of the key and
    the request's members -- so one key may be reused for different members of a board."""
    if client_key is None:
        return "r" + secrets.token_hex(16)
    h = hashlib.sha256(client_key.encode())
    for m in members:
        h.update(b"\0" + m.encode())
    return "c" + h.hexdigest()[:32]


def fingerprint(checked: Sequence[tuple[str, Score, bytes, float | None]]) -> str:
    """What a write request asked for (member, score, metadata, ``at`` per item), 32 hex
    chars: an idempotency id replayed with another body must not get the first reply. An item
    without ``at`` hashes as it did before ``at`` existed, so one body has one fingerprint on
    both write paths (rankd_write and rankd_xwrite share the board's records)."""
    h = hashlib.sha256()
    for member, score, meta, at in checked:
        row: list[object] = [member, repr(score), meta.decode()]
        if at is not None:
            row.append(repr(at))
        h.update(orjson.dumps(row))
    return h.hexdigest()[:32]


def idem_conflict() -> Conflict:
    """IDEMMISMATCH from rankd_write or rankd_xwrite: the id was recorded with another body."""
    return Conflict(
        "this Idempotency-Key was used for another request on this board and "
        "member(s) in the last 5 minutes; use a new key per request"
    )


def _check_count(what: str, n: int) -> None:
    # a negative index would count from the end in ZRANGE: never let one through
    if type(n) is not int or n < 0:
        raise InvalidArgument(f"{what} must be a non-negative integer, but got {show(n)}")


def _found(board: str, member: str, reply: Any) -> None:
    if reply is None:
        raise BoardNotFound(f"board {show(board)} does not exist")
    if not reply:
        raise MemberNotFound(f"member {show(member)} is not on board {show(board)}")


def _write_result(member: str, desc: bool, item: list[Any]) -> Entry:
    changed, rank, prev, key, old = item
    previous = {"score": key_score(old, desc), "rank": prev} if prev else None
    return {
        "member": member,
        "score": key_score(key, desc),
        "rank": rank,
        "previous": previous,
        "changed": bool(changed),
    }


def _entries(
    order: bytes, ties: bytes, first_rank: int, key_list: list[bytes], metas: list[Any]
) -> list[Entry]:
    return entries_of(key_list, metas, first_rank, order == b"desc", ties == b"first")


def entries_of(
    keys: list[bytes], metas: list[Any], rank: int, desc: bool, first: bool
) -> list[Entry]:
    """Entries from a range of sort keys (ranks from ``rank`` on) and their metadata."""
    out: list[Entry] = []
    for i, key in enumerate(keys):
        e: Entry = {
            "rank": rank + i,
            "member": key_member(key, first),
            "score": key_score(key, desc),
        }
        if metas and metas[i] is not None:
            e["metadata"] = orjson.loads(metas[i])
        out.append(e)
    return out
