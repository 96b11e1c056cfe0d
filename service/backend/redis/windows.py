"""Windows, periods, rankings and bounds on the redis backend (DESIGN "Windows and periods",
"Ranks"): the ``rankd_x*`` functions of rankd.lua, their keys and their answers.

A board whose options are all at their defaults (but order, update, ties and the player
policy) keeps the original one-table path (boards.py); every other board has an ``opts`` field
in its cfg hash -- the JSON of ``EXTRA`` options that differ from the defaults -- and the
original functions refuse it ("OPTS"), so a process that did not know is sent here. The x
functions serve any board, so lookups, score ranges, metadata patches and periods come here for
plain boards too.

Periods come from this process's clock through store/periods.py (the same arithmetic as the
embedded backend); functions never read a clock. Each (window, period) is one table of keys
(keys.table_keys); a write names every target table, so one function call updates every window
atomically. Closed periods stay until trimmed: a write that leaves a window with more stored
periods than ``keep + 1`` trims those not among ``recent_periods(now, keep + 1)`` (one more
call), and so does a configure. Reads never depend on trimming: which periods exist is decided
here from the clock, as ``Board.select`` does, and a period not kept is a 404 whether or not its
keys are gone yet.

Every call carries this process's idea of (order, ties, opts); the function answers
STALEOPTS when it is wrong, and the call is rebuilt from a fresh read (another rankd process
reconfigured the board).
"""

import math
import secrets
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
from redis.exceptions import ResponseError

from service.backend.redis import keys
from service.backend.redis.boards import RedisBoards, fingerprint, idem_conflict
from service.backend.redis.functions import Arg, fcall
from store.boards import Entry
from store.clock import Clock
from store.errors import BoardNotFound, Conflict, InvalidArgument, MemberNotFound
from store.options import DEFAULT_PLAYER_RATE, BoardConfig
from store.periods import (
    ALL,
    Period,
    Window,
    named_period,
    period_of,
    recent_periods,
)
from store.show import show
from store.sortkey import encode_num, key_member, key_score, next_num
from store.values import Score, check_batch_size, check_member, check_metadata, check_score

EXTRA = ("ranking", "windows", "reset_offset", "keep", "grace", "min_score", "max_score")
_DEFAULTS = BoardConfig().as_dict()
_RETRIES = 3


def opts_of(config: BoardConfig) -> str:
    """The cfg ``opts`` field for ``config``: "" when every EXTRA option is at its default."""
    d = config.as_dict()
    extra = {k: d[k] for k in EXTRA if d[k] != _DEFAULTS[k]}
    return orjson.dumps(extra, option=orjson.OPT_SORT_KEYS).decode() if extra else ""


class State(NamedTuple):
    config: BoardConfig
    opts: str
    seq: int
    epoch: str

    def head(self) -> list[Arg]:
        return [self.config.order, self.config.ties, self.opts]

    @property
    def desc(self) -> bool:
        return self.config.order == "desc"

    @property
    def first(self) -> bool:
        return self.config.ties == "first"


def _window_index(name: str, config: BoardConfig, window: str | None) -> int:
    if window is None:
        return 0
    for i, w in enumerate(config.windows):
        if w.name == window:
            return i
    raise InvalidArgument(
        f"window must be one of board {show(name)}'s windows "
        f"{[w.name for w in config.windows]}, but got {show(window)}"
    )


def kept(w: Window, period: Period, now: float, keep: int) -> bool:
    return period == period_of(w, now) or period in recent_periods(w, now, keep + 1)


def select(
    name: str, config: BoardConfig, window: str | None, period: str | None, now: float
) -> tuple[Window, Period]:
    """The (window, period) a read names, as store.boards.Board.select decides it."""
    w = config.windows[_window_index(name, config, window)]
    p = named_period(
        name, w, period_of(w, now), period, config.keep, lambda p: kept(w, p, now, config.keep)
    )
    return w, p


class RedisWindows:
    def __init__(self, core: RedisBoards, clock: Clock) -> None:
        self.core = core
        self.clock = clock
        self._states: dict[str, State | None] = {}

    def table(self, board: str, window: str, period: str) -> keys.TableKeys:
        return keys.table_keys(self.core.prefix, board, window, period)

    def cached(self, board: str) -> State | None:
        return self._states.get(board)

    def has_opts(self, board: str) -> bool:
        state = self._states.get(board)
        return state is not None and state.opts != ""

    # -- board state -------------------------------------------------------------------------

    async def describe(self, board: str, z_keys: Sequence[str] = ()) -> tuple[State, list[int]]:
        """The board's state (fresh) and the ZCARD of each of ``z_keys``; BoardNotFound."""
        k = self.core.keys(board)
        reply = await fcall(
            self.core.client, "rankd_xdescribe", [k.cfg, *z_keys], [], readonly=True
        )
        if reply is None:
            self._states.pop(board, None)
            self.core._shape.pop(board, None)
            raise BoardNotFound(f"board {show(board)} does not exist")
        order, update, ties, seq, epoch, pw, pr, pub, opts, sizes = reply
        options: dict[str, Any] = {
            "order": order.decode(),
            "update": update.decode(),
            "ties": ties.decode(),
            "player_writes": pw == b"1",
            "player_rate": DEFAULT_PLAYER_RATE if pr is None else int(pr),
            "public_read": pub == b"1",
        }
        text = opts.decode() if opts else ""
        if text:
            options.update(orjson.loads(text))
        state = State(BoardConfig.from_options(options), text, seq, epoch.decode())
        self._states[board] = state
        self.core._shape[board] = (state.config.order, state.config.ties)
        return state, list(sizes)

    async def state(self, board: str) -> State:
        state = self._states.get(board)
        if state is None:
            state, _ = await self.describe(board)
        return state

    async def info(self, board: str) -> dict[str, Any]:
        """GET /v1/boards/{board}: every option, size (first window's current period), sizes."""
        state = await self.state(board)
        for _ in range(_RETRIES):
            now = self.clock.now()
            current = [(w, period_of(w, now)) for w in state.config.windows]
            zs = [self.table(board, w.name, p.id).z for w, p in current if p is not None]
            fresh, sizes = await self.describe(board, zs)
            if fresh.opts != state.opts:
                state = fresh
                continue
            it = iter(sizes)
            by_window = {w.name: (next(it) if p is not None else 0) for w, p in current}
            first = state.config.windows[0].name
            return {
                "board": board,
                **fresh.config.as_dict(),
                "size": by_window[first],
                "sizes": by_window,
            }
        raise RuntimeError(f"board {board!r}: options keep changing under the reads")

    async def _stored(self, board: str, config: BoardConfig) -> list[keys.TableKeys]:
        """Every stored table of the board under ``config`` (each window's registry read)."""
        tables: list[keys.TableKeys] = []
        client: Any = self.core.client
        for w in config.windows:
            if w.kind == "all":
                tables.append(self.table(board, "all", "all"))
                continue
            for raw in await client.zrange(self.table(board, w.name, "").r, 0, -1):
                pid = raw.decode() if isinstance(raw, bytes) else raw
                tables.append(self.table(board, w.name, pid))
        return tables

    # -- configure and drop --------------------------------------------------------------------

    async def configure(self, board: str, options: dict[str, Any]) -> bool:
        """Create or change a board (any options); True when created. Conflict when an option
        fixed while entries exist changes on a board holding entries in any period."""
        for _ in range(_RETRIES):
            try:
                current: State | None = (await self.describe(board))[0]
            except BoardNotFound:
                current = None
            if current is not None:
                await self.trim(board)  # periods no longer kept hold no entries that count
            base = current.config if current else None
            config = BoardConfig.from_options(options, base)
            fixed = config.fixed_changes(base) if base is not None else []
            tables = await self._stored(board, base) if base is not None else []
            if fixed:
                tables += [t for t in await self._stored(board, config) if t not in tables]
            declared = [k for t in tables for k in t]
            opts = opts_of(config)
            k = self.core.keys(board)
            try:
                if current is None and self.core.limits.boards:
                    await self.core._admit(board)  # --max-boards: listed before it exists
                reply = await self.core._fcall_write(
                    "rankd_xconfigure",
                    [k.cfg, *declared],
                    [
                        config.order,
                        config.update,
                        config.ties,
                        secrets.token_hex(8),
                        "1" if config.player_writes else "0",
                        config.player_rate,
                        "1" if config.public_read else "0",
                        opts,
                        config.ranking,
                        "1" if fixed else "0",
                        current.opts if current else "-",
                    ],
                )
            except ResponseError as exc:
                text = str(exc)
                if text.startswith("STALEOPTS"):
                    continue
                if text.startswith("CONFLICT"):
                    raise Conflict(
                        f"board {show(board)} holds entries; {', '.join(fixed)} can change "
                        "only while it is empty (in every period)"
                    ) from None
                raise
            self._states[board] = State(config, opts, reply[1], "")
            self.core._shape[board] = (config.order, config.ties)
            await self.core.client.zadd(keys.registry(self.core.prefix), {board: 0})
            await self.trim(board)
            if base is not None and base.public_read and not config.public_read:
                # Every instance's credential-less subscribers of the board must be cut now
                # (service/hub.py); the feed turns this into a "bcfg" event (redis/feed.py).
                await self.core.client.spublish(k.ev, "private")
            return bool(reply[0])
        raise RuntimeError(f"board {board!r}: options keep changing under the configure")

    async def drop(self, board: str) -> bool:
        try:
            state, _ = await self.describe(board)
        except BoardNotFound:
            return False
        tables = await self._stored(board, state.config)
        # the idempotency records go too: a board created again under the name must not
        # answer its writes from the old one's
        extra = [k for t in tables for k in t] + list(keys.idem_keys(self.core.prefix, board))
        k = self.core.keys(board)
        dropped = await self.core._fcall_write(
            "rankd_xdrop", [k.cfg, k.ev, *extra], [self.core.publish]
        )
        await self.core.client.zrem(keys.registry(self.core.prefix), board)
        self._states.pop(board, None)
        self.core._shape.pop(board, None)
        return bool(dropped)

    async def trim(self, board: str, only: Sequence[Window] | None = None) -> None:
        """Drop the stored periods no longer kept (store.boards.Board._roll's rule)."""
        state = self._states.get(board)
        if state is None:
            return
        now = self.clock.now()
        client: Any = self.core.client
        for w in only if only is not None else state.config.windows:
            if w.kind == "all":
                continue
            r = self.table(board, w.name, "").r
            stored = [x.decode() for x in await client.zrange(r, 0, -1)]
            keep = {p.id for p in recent_periods(w, now, state.config.keep + 1)}
            gone = [pid for pid in stored if pid not in keep]
            if not gone:
                continue
            declared = [r]
            for pid in gone:
                t = self.table(board, w.name, pid)
                declared += [t.z, t.m, t.d, t.u, t.c]
            await fcall(self.core.client, "rankd_xtrim", declared, gone)

    # -- calls with the STALEOPTS retry ------------------------------------------------------

    async def _fresh(self, board: str, exc: ResponseError) -> None:
        if not str(exc).startswith("STALEOPTS"):
            raise exc
        await self.describe(board)

    async def read(
        self, board: str, window: str | None, period: str | None, op: str, *args: Arg
    ) -> tuple[State, Window, Period, Any]:
        """One rankd_xread of the table a read names."""
        for _ in range(_RETRIES):
            state = await self.state(board)
            w, p = select(board, state.config, window, period, self.clock.now())
            t = self.table(board, w.name, p.id)
            try:
                reply = await fcall(
                    self.core.client,
                    "rankd_xread",
                    [self.core.keys(board).cfg, *t],
                    [*state.head(), state.config.ranking, op, *args],
                    readonly=True,
                )
            except ResponseError as exc:
                await self._fresh(board, exc)
                continue
            if reply is None:
                self._states.pop(board, None)
                raise BoardNotFound(f"board {show(board)} does not exist")
            return state, w, p, reply
        raise RuntimeError(f"board {board!r}: options keep changing under the reads")

    def entries(
        self, state: State, key_list: list[bytes], metas: list[Any], ranks: list[int]
    ) -> list[Entry]:
        out: list[Entry] = []
        for i, key in enumerate(key_list):
            e: Entry = {
                "rank": ranks[i],
                "member": key_member(key, state.first),
                "score": key_score(key, state.desc),
            }
            if metas and metas[i] is not None:
                e["metadata"] = orjson.loads(metas[i])
            out.append(e)
        return out

    async def page(
        self, board: str, offset: int, limit: int, window: str | None, period: str | None
    ) -> dict[str, Any]:
        state, w, p, reply = await self.read(board, window, period, "top", offset, limit)
        _seq, total, _pos0, key_list, metas, ranks = reply
        return {
            "board": board,
            "window": w.name,
            "period": p.id,
            "total": total,
            "entries": self.entries(state, key_list, metas, ranks),
        }

    async def member(
        self, board: str, member: str, window: str | None, period: str | None
    ) -> Entry:
        state, _w, _p, reply = await self.read(board, window, period, "entry", member)
        if not reply:
            raise MemberNotFound(f"member {show(member)} is not on board {show(board)}")
        _seq, total, _pos, key, meta, rank, below = reply
        entry = self.entries(state, [key], [meta], [rank])[0]
        entry["percentile"] = 100.0 if total <= 1 else 100.0 * below / (total - 1)
        return entry

    async def around(
        self, board: str, member: str, radius: int, window: str | None, period: str | None
    ) -> dict[str, Any]:
        state, w, p, reply = await self.read(board, window, period, "around", member, radius)
        if not reply:
            raise MemberNotFound(f"member {show(member)} is not on board {show(board)}")
        _seq, total, _pos0, key_list, metas, ranks = reply
        return {
            "board": board,
            "window": w.name,
            "period": p.id,
            "total": total,
            "entries": self.entries(state, key_list, metas, ranks),
        }

    async def rank_for_score(
        self, board: str, score: Score, window: str | None, period: str | None
    ) -> int:
        for _ in range(_RETRIES):
            state = await self.state(board)
            num = encode_num(-score if state.desc else score)
            got, _w, _p, reply = await self.read(board, window, period, "rank", num, num)
            if got.desc == state.desc:
                return int(reply[2])
        raise RuntimeError(f"board {board!r}: order keeps changing under the reads")

    async def lookup(self, board: str, members: list[str]) -> dict[str, Any]:
        unique = list(dict.fromkeys(members))
        state, _w, _p, reply = await self.read(board, None, None, "lookup", *unique)
        _seq, total, key_list, metas, ranks = reply
        rows = sorted(zip(key_list, metas or [None] * len(key_list), ranks, strict=True))
        entries = self.entries(state, [r[0] for r in rows], [r[1] for r in rows],
                               [r[2] for r in rows])  # fmt: skip
        found = {e["member"] for e in entries}
        return {
            "board": board,
            "total": total,
            "entries": entries,
            "missing": [m for m in unique if m not in found],
        }

    async def score_range(
        self, board: str, low: Score, high: Score, offset: int, limit: int
    ) -> dict[str, Any]:
        for _ in range(_RETRIES):
            state = await self.state(board)
            lo, hi = (0 - high, 0 - low) if state.desc else (low, high)
            start, stop = encode_num(lo), next_num(encode_num(hi))
            got, _w, _p, reply = await self.read(
                board, None, None, "range", start, stop, offset, limit
            )
            if got.desc != state.desc:
                continue
            _seq, total, count, _pos0, key_list, metas, ranks = reply
            return {
                "board": board,
                "total": total,
                "count": count,
                "entries": self.entries(got, key_list, metas, ranks),
            }
        raise RuntimeError(f"board {board!r}: order keeps changing under the reads")

    async def periods(self, board: str, window: str | None) -> dict[str, Any]:
        state = await self.state(board)
        w = state.config.windows[_window_index(board, state.config, window)]
        now = self.clock.now()
        if w.kind == "all":
            listed = [ALL]
        elif period_of(w, now) is None:
            listed = []
        else:
            listed = recent_periods(w, now, state.config.keep + 1)
        zs = [self.table(board, w.name, p.id).z for p in listed]
        _, sizes = await self.describe(board, zs)
        current = period_of(w, now)
        return {
            "board": board,
            "window": w.name,
            "periods": [
                {"id": p.id, "start": p.start, "end": p.end, "size": n, "closed": p != current}
                for p, n in zip(listed, sizes, strict=True)
            ],
        }

    # -- writes --------------------------------------------------------------------------------

    def _check_at(self, board: str, config: BoardConfig, at: object, now: float) -> float | None:
        if at is None:
            return None
        if type(at) not in (int, float) or not math.isfinite(at):  # type: ignore[arg-type]
            raise InvalidArgument(f"at must be unix seconds (a number), but got {show(at)}")
        t: float = at  # type: ignore[assignment]
        if t > now:
            raise InvalidArgument(f"at {show(at)} is in the future (now is {now:.3f})")
        if t < now - config.grace:
            raise InvalidArgument(
                f"at {show(at)} is more than board {show(board)}'s grace of {config.grace} s "
                f"before now ({now:.3f})"
            )
        return t

    def _check_bounds(self, board: str, config: BoardConfig, score: Score) -> None:
        lo, hi = config.min_score, config.max_score
        if lo is not None and score < lo:
            raise InvalidArgument(
                f"score {show(score)} is below board {show(board)}'s min_score {show(lo)}"
            )
        if hi is not None and score > hi:
            raise InvalidArgument(
                f"score {show(score)} is above board {show(board)}'s max_score {show(hi)}"
            )

    async def write_many(
        self,
        board: str,
        items: Sequence[tuple[object, ...]],
        publish: str,
        idem: str = "",
        now: float | None = None,
    ) -> list[Entry]:
        """Every item to every window (the periods containing its ``at``, else now's), in
        order, all or nothing; the results of store.boards.Board.write.

        ``idem``: the write's idempotency id (boards.write_id), "" for none, as
        RedisBoards.write_many: a repeat gets the first application's result back and writes
        nothing (in no window); the same id with another body is a Conflict. ``now``: the
        request's time (default: the clock's); a retry passes the first attempt's, so it names
        the periods the first attempt named even across a rollover."""
        check_batch_size(len(items), self.core.limits)
        for _ in range(_RETRIES):
            try:
                state: State | None = await self.state(board)
            except BoardNotFound:
                state = None  # a valid write creates it with the defaults, as POST score does
            config = state.config if state is not None else BoardConfig()
            if now is None:
                now = self.clock.now()
            checked: list[tuple[str, Score, bytes, list[tuple[int, Period]]]] = []
            asked: list[tuple[str, Score, bytes, float | None]] = []  # the fingerprint's
            for item in items:
                member = check_member(item[0], self.core.limits)
                score = check_score(item[1])
                meta = check_metadata(item[2], self.core.limits) if item[2] is not None else None
                self._check_bounds(board, config, score)
                at = self._check_at(board, config, item[3] if len(item) > 3 else None, now)
                targets: list[tuple[int, Period]] = []
                for i, w in enumerate(config.windows):
                    p = period_of(w, now if at is None else at)
                    if p is None or (at is not None and not kept(w, p, now, config.keep)):
                        continue
                    targets.append((i, p))
                meta_json = orjson.dumps(meta) if meta is not None else b""
                checked.append((member, score, meta_json, targets))
                asked.append((member, score, meta_json, at))
            if state is None:
                await self.configure(board, {})
                continue
            tables: dict[tuple[int, str], int] = {}
            table_args: list[Arg] = []
            declared: list[str] = []
            for *_, targets in checked:
                for i, p in targets:
                    if (i, p.id) not in tables:
                        tables[(i, p.id)] = len(tables) + 1
                        w = config.windows[i]
                        declared += self.table(board, w.name, p.id)
                        all_ = w.kind == "all"
                        table_args += [p.id, 0 if all_ else p.start or 0, "1" if all_ else "0"]
            args: list[Arg] = [*state.head(), publish, config.ranking, idem, fingerprint(asked)]
            args += [len(tables), *table_args]
            for member, score, meta_json, targets in checked:
                num = encode_num(-score if state.desc else score)
                args += [member, num, "1" if type(score) is float else "0", meta_json]
                args += [len(targets), *(tables[(i, p.id)] for i, p in targets)]
            k = self.core.keys(board)
            iz, ih = keys.idem_keys(self.core.prefix, board)
            try:
                reply = await self.core._fcall_write(
                    "rankd_xwrite", [k.cfg, k.ev, iz, ih, *declared], args
                )
            except ResponseError as exc:
                text = str(exc)
                if text.startswith("IDEMMISMATCH"):
                    raise idem_conflict() from None
                if text.startswith("RANGE"):
                    i = int(text.split()[1])
                    raise InvalidArgument(
                        f"sum for member {show(checked[i][0])} would reach magnitude 2**63"
                    ) from None
                await self._fresh(board, exc)
                continue
            counts = reply[1]
            over = {
                config.windows[i]
                for (i, _pid), n in tables.items()
                if counts[n - 1] > config.keep + 1
            }
            results = [
                self._result(state, member, score, targets, reply[2 + j])
                for j, (member, score, _m, targets) in enumerate(checked)
            ]
            if over:
                await self.trim(board, [w for w in config.windows if w in over])
            return results
        raise RuntimeError(f"board {board!r}: options keep changing under the writes")

    def _result(
        self,
        state: State,
        member: str,
        score: Score,
        targets: list[tuple[int, Period]],
        rows: list[list[Any]],
    ) -> Entry:
        windows = state.config.windows
        desc = state.desc
        results: dict[str, Entry] = {}
        for (i, p), row in zip(targets, rows, strict=True):
            changed, rank, prev, key, old = row[0], row[1], row[2], row[3], row[4]
            new = key_score(key, desc)
            if not changed:
                results[windows[i].name] = {"period": p.id, "score": new, "rank": rank,
                                            "previous": {"score": new, "rank": rank},
                                            "changed": False}  # fmt: skip
                continue
            previous = {"score": key_score(old, desc), "rank": prev} if old else None
            results[windows[i].name] = {"period": p.id, "score": new, "rank": rank,
                                        "previous": previous, "changed": True}  # fmt: skip
        head = results.get(windows[0].name)
        out: Entry
        if head is None:
            out = {"member": member, "score": score, "rank": None, "previous": None,
                   "changed": False}  # fmt: skip
        else:
            out = {"member": member, "score": head["score"], "rank": head["rank"],
                   "previous": head["previous"], "changed": head["changed"]}  # fmt: skip
        if len(windows) > 1:
            out["windows"] = results
        return out

    def _current_tables(self, board: str, config: BoardConfig) -> list[str]:
        now = self.clock.now()
        declared: list[str] = []
        for w in config.windows:
            p = period_of(w, now)
            if p is not None:
                declared += self.table(board, w.name, p.id)
        return declared

    async def _on_current(
        self, board: str, function: str, publish: str, member: str, *extra: Arg
    ) -> tuple[State, Any]:
        """One ``function`` call on ``member`` in every current table of ``board``, retried
        while the board's options change under it: (the state it ran with, its reply)."""
        for _ in range(_RETRIES):
            state = await self.state(board)
            k = self.core.keys(board)
            declared = self._current_tables(board, state.config)
            try:
                reply = await self.core._fcall_write(
                    function,
                    [k.cfg, k.ev, *declared],
                    [*state.head(), publish, state.config.ranking, member, *extra],
                )
            except ResponseError as exc:
                await self._fresh(board, exc)
                continue
            if reply is None:
                self._states.pop(board, None)
                raise BoardNotFound(f"board {show(board)} does not exist")
            return state, reply
        raise RuntimeError(f"board {board!r}: options keep changing under the writes")

    async def remove(self, board: str, member: str, publish: str) -> None:
        _, reply = await self._on_current(board, "rankd_xremove", publish, member)
        if reply == 0:
            raise MemberNotFound(
                f"member {show(member)} is not in any current period of board {show(board)}"
            )

    async def patch_metadata(
        self, board: str, member: str, metadata: object, publish: str
    ) -> Entry:
        meta = check_metadata(metadata, self.core.limits) if metadata is not None else None
        meta_json = orjson.dumps(meta) if meta is not None else b""
        state, reply = await self._on_current(board, "rankd_xpatch", publish, member, meta_json)
        if not reply:
            raise MemberNotFound(f"member {show(member)} is not on board {show(board)}")
        _seq, key, rank, meta_reply = reply
        return self.entries(state, [key], [meta_reply or None], [rank])[0]
