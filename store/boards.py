"""Leaderboards: per window and period, a dict member -> sort key plus a SkipList of the keys.

Two structures, one truth (the shape of Redis's zset): the dict answers "what is alice's entry"
in O(1); the SkipList answers "who is 5th" and "what rank is alice" in O(log n). The dict owns
nothing the SkipList lacks: its value *is* the key object stored in the SkipList, so an entry
costs one tuple, and removing it means finding that same tuple again. That pair, with the
entries' metadata and a cache of the top page, is a ``Table``: one period of one window.

    Board "b", windows ["all", "week"], keep 2, now in 2026-W49:
      window all    {"all": Table}                               never closes
      window week   {"2026-W49": Table,                          current
                     "2026-W48": Table, "2026-W47": Table}       closed: frozen, still queried
                     ("2026-W46" was dropped: keep = 2)

A period is current while ``start <= now < end`` (store/periods.py computes both from the
window, the instant and the board's reset_offset); nothing runs at the boundary. Every call that
reads or writes first ``roll``s the board to "now": a cheap comparison against the earliest end
of any current period; past it, closed periods beyond ``keep`` are dropped and a ``broll`` event
tells observers (the WebSocket hub) which period closed. Which tables exist is thus a function
of the journal and of "now" only, and the journal names the period of every write, so a restart
on another day neither loses nor re-applies a rollover. A write carrying ``at`` (within
``grace`` seconds of now) goes to the periods containing ``at``, closed or not.

The sort key (store/sortkey.py) is one ``bytes`` object that sorts best first (index 0 =
rank 1): the score (negated on ``desc`` boards), then on ``ties=first`` the board's write counter
``seq`` when the score was reached, then the member id. ``seq`` is data, not object identity, so
"who reached the score first" survives a snapshot and a journal replay. One write takes one seq
for all its windows. A write that changes nothing (a non-improving ``best``, an equal
``latest``, a ``sum`` of 0) takes no sequence number and keeps its place among equal scores.

Ranks in this module's public results are 1-based (rank 1 is the best); SkipList positions are
0-based. Every rank the board answers goes through ``Table.rank_at`` (one place to change what
"rank" means): the ``ranking`` option (ordinal, competition, dense; store/ranks.py) is applied
there and in ``Table._ranked`` for pages. Events and the top cache keep working in positions
(ordinal ranks), which the ranking never changes.

Every mutation is reported to ``Board.emit`` (set by the Keyspace) as a tuple carrying the
resulting state (store/events.py), so a journal can replay it idempotently and a WebSocket hub
can tell whether a top-N view moved -- and, at the end, the state it replaced, so a write whose
journal record was lost can be undone (``undo``; service/backend/journal_flusher.py says when):

    ("bset", board, member, score, seq, metadata | None, rank, previous_rank | None,
             old_key | None, old_metadata | None, window, period)
    ("bdel", board, member, seq, previous_rank, old_key, old_metadata | None, window, period)
    ("bbatch", board, [bset | bdel, ...])   one journal record, all or nothing: a scores:batch,
                                            or one write/delete that touched several windows
    ("broll", board, window, closed period | None, current period | None)   not journalled

Undo restores the replaced key object itself (so a restored entry keeps its tie order) and
takes a new ``seq``: the board's write counter never goes back, so a WebSocket client that saw
the undone write at seq N gets the restored state at a seq above N, not a repeat of N.
"""

import math
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, cast

from store import ranks
from store.errors import InvalidArgument, MemberNotFound, PeriodNotFound
from store.events import BatchSet, BoardEvent, EntryChange, EntryDeleted, EntrySet, PeriodRolled
from store.options import BoardConfig, Order, Ties, Update
from store.periods import (
    Period,
    PeriodCache,
    Window,
    named_period,
    parse_period,
    recent_periods,
)
from store.ranks import Index, Ranking
from store.show import show
from store.sortkey import NUM_BYTES, SEQ_LIMIT, encode_num, key_member, key_score, key_seq, make_key
from store.values import (
    SCORE_LIMIT,
    Limits,
    Score,
    check_batch_size,
    check_member,
    check_metadata,
    check_score,
)

TOP_CACHE = 100
INF = float("inf")

Key = bytes
Event = BoardEvent
Entry = dict[str, Any]
Item = tuple[str, Score, dict[str, Any] | None, float | None]  # checked (member, score, meta, at)

__all__ = [
    "Board",
    "BoardConfig",
    "Entry",
    "Event",
    "Order",
    "PeriodNotFound",
    "Table",
    "Ties",
    "Update",
]


def _ignore(event: Event) -> None:
    pass


def _system_now() -> float:
    return time.time()


class Table:
    """One period of one window: member -> key, the SkipList of keys, metadata, top cache."""

    __slots__ = (
        "_desc",
        "_first",
        "_index",
        "_keys",
        "_meta",
        "_ordinal",
        "_ranking",
        "_top",
        "period",
        "window",
    )

    def __init__(
        self, window: str, period: str, desc: bool, first: bool, ranking: Ranking = "ordinal"
    ) -> None:
        self.window = window
        self.period = period
        self._desc = desc
        self._first = first
        self._ranking: Ranking = ranking
        self._ordinal = ranking == "ordinal"
        self._keys: dict[str, Key] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._index: Index = ranks.make_index(ranking)
        # Decoded entries of ranks 1..len(_top), or None. Most writes land far below the
        # top, so the page every dashboard polls is decoded once per change, not per read.
        self._top: list[Entry] | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, member: object) -> bool:
        return member in self._keys

    def rank_at(self, pos: int, key: Key) -> int:
        """The rank shown for the entry ``key`` found at 0-based position ``pos`` (or about to
        leave it), under the board's ranking (store/ranks.py): every rank the board answers
        comes from here. Events and the top cache keep positions, which no ranking changes."""
        if self._ordinal:
            return pos + 1
        return ranks.rank_at(self._ranking, self._index, pos, key)

    def set_ranking(self, ranking: Ranking) -> None:
        """Change what ``rank`` shows; O(n) to build or drop a dense index, else O(1)."""
        if ranking != self._ranking:
            self._index = ranks.convert(self._index, ranking)
            self._ranking = ranking
            self._ordinal = ranking == "ordinal"
            self._top = None

    def position(self, member: str) -> int | None:
        """The member's ordinal rank (1-based), whatever the ranking; None if absent."""
        key = self._keys.get(member)
        return None if key is None else self._index.index(key) + 1

    def member(self, member: str, board: str) -> Entry:
        """The member answer: {rank, member, score, percentile, metadata?}. O(log n)."""
        key = self._keys.get(member)
        if key is None:
            raise MemberNotFound(f"member {show(member)} is not on board {show(board)}")
        pos = self._index.index(key)
        entry = self._entry(self.rank_at(pos, key), key)
        entry["percentile"] = ranks.percentile(self._ranking, self._index, pos, key)
        return entry

    def lookup(self, members: list[str]) -> tuple[list[Entry], list[str]]:
        """See Board.lookup (the members already checked)."""
        found: set[Key] = set()
        missing: dict[str, None] = {}
        for member in members:
            key = self._keys.get(member)
            if key is None:
                missing[member] = None
            else:
                found.add(key)
        index = self._index
        entries = [self._entry(self.rank_at(index.index(k), k), k) for k in sorted(found)]
        return entries, list(missing)

    def score_range(self, lo: Score, hi: Score, offset: int, limit: int) -> tuple[int, list[Entry]]:
        """See Board.score_range (the bounds already checked)."""
        start, stop = ranks.score_span(self._index, lo, hi, self._desc)
        first = min(start + offset, stop)
        return stop - start, self._ranked(first, self._index[first : min(stop, first + limit)])

    def _ranked(self, offset: int, keys: list[Key]) -> list[Entry]:
        """Entries for the consecutive ``keys`` from position ``offset``. O(log n + len(keys))."""
        entry = self._entry
        if self._ordinal:
            return [entry(r, k) for r, k in enumerate(keys, offset + 1)]
        shown = ranks.page_ranks(self._ranking, self._index, offset, keys)
        return [entry(r, k) for r, k in zip(shown, keys, strict=True)]

    def _entry(self, rank: int, key: Key) -> Entry:
        member = key_member(key, self._first)
        entry = {"rank": rank, "member": member, "score": key_score(key, self._desc)}
        meta = self._meta.get(member)
        if meta is not None:
            entry["metadata"] = meta
        return entry

    def entry(self, member: str, board: str) -> Entry:
        """{rank, member, score, metadata?}; MemberNotFound if absent. O(log n)."""
        key = self._keys.get(member)
        if key is None:
            raise MemberNotFound(f"member {show(member)} is not on board {show(board)}")
        return self._entry(self.rank_at(self._index.index(key), key), key)

    def top(self, offset: int, limit: int) -> list[Entry]:
        """Entries ranked offset+1 .. offset+limit. Runtime complexity: O(log n + limit).

        Pages within the first TOP_CACHE ranks come from a cache that only writes reaching
        into it invalidate; the entry dicts are shared, so callers must treat them as read-only.
        """
        end = offset + limit
        if end > TOP_CACHE:
            return self._page(offset, limit)
        top = self._top
        if top is None or (len(top) < end and len(top) < len(self._keys)):
            top = self._top = self._page(0, max(end, len(top) if top else 0))
        return top[offset:end]

    def _page(self, offset: int, limit: int) -> list[Entry]:
        return self._ranked(offset, self._index[offset : offset + limit])

    def around(self, member: str, radius: int, board: str) -> list[Entry]:
        """Up to ``radius`` entries on each side of member, member included. O(log n + radius)."""
        key = self._keys.get(member)
        if key is None:
            raise MemberNotFound(f"member {show(member)} is not on board {show(board)}")
        pos = self._index.index(key)
        lo = max(0, pos - radius)
        return self.top(lo, pos + radius + 1 - lo)

    def rank_for_score(self, score: Score, seq: int) -> int:
        """The rank a newcomer posting ``score`` at write counter ``seq + 1`` would get.

        ties=first: behind everyone already at that score (they reached it first).
        ties=member: the best rank among equal scores (the member id decides the rest).
        """
        probe = encode_num(-score if self._desc else score)
        if self._first:
            probe += (seq + 1).to_bytes(6, "big")
        rank: int = self._index.bisect_left(probe) + 1
        if self._ordinal:
            return rank
        return ranks.rank_for_num(self._ranking, self._index, probe[:NUM_BYTES], rank)

    # -- persistence -----------------------------------------------------------------------

    def dump(self) -> Iterator[tuple[str, Score, int, dict[str, Any] | None]]:
        first, desc, meta = self._first, self._desc, self._meta
        for key in self._index:
            member = key_member(key, first)
            yield member, key_score(key, desc), key_seq(key) if first else 0, meta.get(member)

    def dump_keys(self) -> Iterator[Key]:
        return iter(self._index)

    def dump_metadata(self) -> ItemsView[str, dict[str, Any]]:
        return self._meta.items()

    def load_keys(self, runs: Iterable[list[Key]], metadata: dict[str, dict[str, Any]]) -> None:
        """See Board.load_keys."""
        start = 16 if self._first else 10
        members: dict[str, Key] = {}
        keys: list[Key] = []
        for run in runs:
            members.update(zip([key[start:-1].decode() for key in run], run, strict=True))
            keys += run
        if len(members) != len(keys):
            raise ValueError(f"period {self.period!r}: a member appears twice")
        if not metadata.keys() <= members.keys():
            raise ValueError(f"period {self.period!r}: metadata for a member not on the board")
        self._keys = members
        self._meta = metadata
        self._index = ranks.make_index(self._ranking, keys)
        self._top = None

    def _check(self, seq: int, key_of: Callable[[Score, int, str], Key]) -> None:
        index = self._index
        index._check()
        assert len(index) == len(self._keys), (len(index), len(self._keys))
        for member, key in self._keys.items():
            assert key_member(key, self._first) == member, (member, key)
            assert key in index, key
            score = key_score(key, self._desc)
            assert key == key_of(score, key_seq(key), member), key
            if self._first:
                assert 0 < key_seq(key) <= seq, (key, seq)
        assert set(self._meta) <= set(self._keys)
        if self._top is not None:
            assert self._top == self._page(0, len(self._top)), "stale top cache"
        assert all(abs(key_score(k, self._desc)) < SCORE_LIMIT for k in index)


class Selected(NamedTuple):
    """What a read names: the window, the period, and its table (None: nothing written)."""

    window: Window
    period: Period
    table: Table | None


_UNSET = Period("?", -1, -1)  # a window not rolled yet: its first roll announces nothing
_ALL = Period("all", None, None)


class Board:
    __slots__ = (
        "_bounded",
        "_caches",
        "_current",
        "_desc",
        "_first",
        "_limits",
        "_next",
        "_selected",
        "_single",
        "_tables",
        "_wix",
        "clock",
        "config",
        "emit",
        "name",
        "seq",
    )

    def __init__(
        self,
        name: str,
        config: BoardConfig,
        limits: Limits,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.seq = 0
        self.emit: Callable[[Event], None] = _ignore
        self.clock: Callable[[], float] = clock or _system_now
        self._limits = limits
        self.config = config
        self._setup(config)

    def _setup(self, config: BoardConfig) -> None:
        """Adopt ``config`` with fresh, empty tables (a new board, or new windows/order/ties)."""
        self.config = config
        self._desc = desc = config.order == "desc"
        self._first = first = config.ties == "first"
        self._bounded = config.min_score is not None or config.max_score is not None
        windows = config.windows
        self._wix = {w.name: i for i, w in enumerate(windows)}
        self._tables: list[dict[str, Table]] = [{} for _ in windows]
        self._caches = [PeriodCache(w) for w in windows]
        self._current: list[Period | None] = [_UNSET] * len(windows)
        for i, w in enumerate(windows):
            if w.kind == "all":
                self._tables[i]["all"] = Table(w.name, "all", desc, first, config.ranking)
                self._current[i] = _ALL
        timed = any(w.kind != "all" for w in windows)
        self._next = -INF if timed else INF  # the first call rolls a timed board
        # The fast path: a board of one "all" window has exactly one table, and never rolls.
        self._single = self._tables[0]["all"] if len(windows) == 1 and not timed else None
        self._selected = Selected(windows[0], _ALL, self._single)  # select()'s fast answer

    def __len__(self) -> int:
        """Entries held in every period of every window (what the board costs)."""
        if self._single is not None:
            return len(self._single)
        return sum(len(t) for tables in self._tables for t in tables.values())

    def __contains__(self, member: object) -> bool:
        """Whether ``member`` is in the first window's current period."""
        try:
            table = self.select().table
        except PeriodNotFound:  # a custom window before its start
            return False
        return table is not None and member in table

    def set_config(self, config: BoardConfig, now: float | None = None) -> None:
        """Change options. The caller guarantees that options fixed while the board holds
        entries (``BoardConfig.fixed_changes``) change only while it holds none. Closed periods
        are trimmed to the new ``keep`` at ``now`` (the journal records it, so replay agrees)."""
        if now is not None:
            self.roll(now)
        if config.fixed_changes(self.config):
            assert not len(self), self.name
            self._setup(config)
        else:
            self.config = config
            self._bounded = config.min_score is not None or config.max_score is not None
            if self._single is None:
                self._next = -INF
        if now is not None:
            self.roll(now)
        for tables in self._tables:
            for table in tables.values():
                table.set_ranking(config.ranking)
                table._top = None

    # -- periods ---------------------------------------------------------------------------

    def roll(self, now: float) -> None:
        """Bring every window to the period containing ``now``: O(1) unless a period ended."""
        if now >= self._next:
            self._roll(now)

    def _roll(self, now: float) -> None:
        earliest = INF
        keep = self.config.keep
        for i, w in enumerate(self.config.windows):
            if w.kind == "all":
                continue
            current = self._caches[i].period_of(now)
            old = self._current[i]
            self._current[i] = current
            tables = self._tables[i]
            if tables:
                kept = {p.id for p in recent_periods(w, now, keep + 1)}
                for pid in [pid for pid in tables if pid not in kept]:
                    del tables[pid]
            end = current.end if current is not None else w.start
            assert end is not None, w  # only "all" periods never end
            earliest = min(earliest, end)
            if old is not _UNSET and old != current:
                self.emit(
                    (
                        "broll",
                        self.name,
                        w.name,
                        old.id if old is not None else None,
                        current.id if current is not None else None,
                    )
                )
        self._next = earliest

    def _kept(self, i: int, period: Period, now: float) -> bool:
        if period == self._current[i]:
            return True
        keep = self.config.keep
        return any(p == period for p in recent_periods(self.config.windows[i], now, keep + 1))

    def select(self, window: str | None = None, period: str | None = None) -> Selected:
        """The table a read names: ``window`` (default: the first) and ``period`` (``current``,
        ``previous`` or an id; default current). InvalidArgument for a window the board does
        not have or a malformed id; PeriodNotFound for a period not kept or not begun."""
        single = self._single
        if single is not None and period in (None, "current", "all"):
            if window is not None:
                self.window_index(window)  # "all" or a 400
            return self._selected
        i = self.window_index(window)
        w = self.config.windows[i]
        now = self.clock()
        self.roll(now)
        p = named_period(
            self.name, w, self._current[i], period, self.config.keep,
            lambda p: self._kept(i, p, now),
        )  # fmt: skip
        return Selected(w, p, self._tables[i].get(p.id))

    def window_index(self, window: str | None) -> int:
        """The position of the named window (None: the first); InvalidArgument if absent."""
        if window is None:
            return 0
        found = self._wix.get(window)
        if found is None:
            raise InvalidArgument(
                f"window must be one of board {show(self.name)}'s windows "
                f"{list(self._wix)}, but got {show(window)}"
            )
        return found

    def periods(self, window: str | None = None) -> list[dict[str, Any]]:
        """The window's kept periods, newest first: {id, start, end, size, closed}."""
        i = self.window_index(window)
        w = self.config.windows[i]
        if self._single is None:
            self.roll(self.clock())
        tables = self._tables[i]
        if w.kind == "all":
            return [
                {
                    "id": "all",
                    "start": None,
                    "end": None,
                    "size": len(tables["all"]),
                    "closed": False,
                }
            ]
        current = self._current[i]
        if current is None:
            return []
        out = []
        for p in recent_periods(w, self.clock(), self.config.keep + 1):
            table = tables.get(p.id)
            size = len(table) if table is not None else 0
            out.append(
                {"id": p.id, "start": p.start, "end": p.end, "size": size, "closed": p != current}
            )
        return out

    def sizes(self) -> dict[str, int]:
        """Entries in each window's current period."""
        out: dict[str, int] = {}
        for w in self.config.windows:
            try:
                table = self.select(w.name).table
            except PeriodNotFound:
                table = None
            out[w.name] = len(table) if table is not None else 0
        return out

    # -- keys ------------------------------------------------------------------------------

    def _key(self, score: Score, seq: int, member: str) -> Key:
        num = encode_num(-score if self._desc else score)
        return make_key(num, seq if self._first else None, member, score)

    def _score(self, key: Key) -> Score:
        return key_score(key, self._desc)

    def _better(self, a: Score, b: Score) -> bool:
        return a > b if self._desc else a < b

    def _new_score(self, old_score: Score, score: Score) -> Score:
        update = self.config.update
        if update == "best":
            return score if self._better(score, old_score) else old_score
        if update == "latest":
            return score
        return _checked_sum(old_score, score)

    def _check_bounds(self, score: Score) -> None:
        lo, hi = self.config.min_score, self.config.max_score
        if lo is not None and score < lo:
            raise InvalidArgument(
                f"score {show(score)} is below board {show(self.name)}'s min_score {show(lo)}"
            )
        if hi is not None and score > hi:
            raise InvalidArgument(
                f"score {show(score)} is above board {show(self.name)}'s max_score {show(hi)}"
            )

    def _check_at(self, at: object, now: float) -> float | None:
        if at is None:
            return None
        if type(at) not in (int, float) or not math.isfinite(at):  # type: ignore[arg-type]
            raise InvalidArgument(f"at must be unix seconds (a number), but got {show(at)}")
        t: float = at  # type: ignore[assignment]
        if t > now:
            raise InvalidArgument(f"at {show(at)} is in the future (now is {now:.3f})")
        grace = self.config.grace
        if t < now - grace:
            raise InvalidArgument(
                f"at {show(at)} is more than board {show(self.name)}'s grace of {grace} s "
                f"before now ({now:.3f})"
            )
        return t

    # -- writes ----------------------------------------------------------------------------

    def write(
        self, member: object, score: object, metadata: object = None, at: object = None
    ) -> Entry:
        """Apply one score write to every window under the board's update rule.

        Result: {member, score, rank (1-based), previous: {score, rank} | None, changed} for
        the first window, plus ``windows: {name: {period, score, rank, previous, changed}}``
        when the board has several. Metadata replaces the entry's metadata only where the
        score changes (omitted: kept). ``at``: the instant the score was achieved (within
        ``grace``); it picks the periods. Runtime complexity: O(windows * log n).
        """
        member = check_member(member, self._limits)
        score = check_score(score)
        meta = check_metadata(metadata, self._limits) if metadata is not None else None
        if self._bounded:
            self._check_bounds(score)
        single = self._single
        if single is not None and at is None:
            return self._write1(single, member, score, meta)
        events: list[EntryChange] = []
        result = self._write_windows(member, score, meta, at, events)
        if len(events) == 1:
            self.emit(events[0])
        elif events:
            self.emit(("bbatch", self.name, events))
        return result

    def _write1(
        self, table: Table, member: str, score: Score, meta: dict[str, Any] | None
    ) -> Entry:
        """The one-window write: the service's hottest path, spelled out."""
        index = table._index
        old = table._keys.get(member)
        if old is None:
            previous = None
            prev_rank = None
            new_score = score
        else:
            old_score = self._score(old)
            update = self.config.update
            if update == "best":
                new_score = score if self._better(score, old_score) else old_score
            elif update == "latest":
                new_score = score
            else:
                new_score = _checked_sum(old_score, score)
            if new_score == old_score:
                rank = table.rank_at(index.index(old), old)
                return {
                    "member": member,
                    "score": old_score,
                    "rank": rank,
                    "previous": {"score": old_score, "rank": rank},
                    "changed": False,
                }
            # Shown before the old key leaves: competition/dense ranks count the others.
            shown_prev = 0 if table._ordinal else table.rank_at(index.index(old), old)
            prev_rank = index.index_remove(old) + 1  # one search (ordinal boards)
            previous = {"score": old_score, "rank": prev_rank if table._ordinal else shown_prev}
        self.seq = seq = self.seq + 1
        assert seq < SEQ_LIMIT, "board write counter exhausted"
        key = self._key(new_score, seq, member)
        # Events carry positions (ordinal ranks) whatever the ranking: the top cache and the
        # WebSocket hub reason about which positions a write crossed.
        rank = index.add(key) + 1
        table._keys[member] = key
        old_meta = table._meta.get(member)
        if meta is not None:
            table._meta[member] = meta
        else:
            meta = old_meta
        top = table._top
        if top is not None and min(rank, prev_rank or rank) <= len(top):
            table._top = None
        self.emit(
            (
                "bset",
                self.name,
                member,
                new_score,
                seq,
                meta,
                rank,
                prev_rank,
                old,
                old_meta,
                table.window,
                table.period,
            )
        )
        return {
            "member": member,
            "score": new_score,
            "rank": rank if table._ordinal else table.rank_at(rank - 1, key),
            "previous": previous,
            "changed": True,
        }

    def _targets(self, at: float | None, now: float) -> list[tuple[int, Period]]:
        """(window index, period) of every window a write at ``at`` (None: now) goes to."""
        t = now if at is None else at
        out: list[tuple[int, Period]] = []
        for i, cache in enumerate(self._caches):
            p = cache.period_of(t)
            if p is None:  # before a custom window's start: the write skips it
                continue
            if at is not None and not self._kept(i, p, now):  # a grace write to a dropped period
                continue
            out.append((i, p))
        return out

    def _write_windows(
        self,
        member: str,
        score: Score,
        meta: dict[str, Any] | None,
        at: object,
        events: list[EntryChange],
        totals: dict[tuple[int, str, str], Score] | None = None,
    ) -> Entry:
        now = self.clock()
        self.roll(now)
        targets = self._targets(self._check_at(at, now), now)
        windows = self.config.windows
        plans: list[tuple[int, Period, Table | None, Key | None, Score, Score, bool]] = []
        for i, p in targets:
            table = self._tables[i].get(p.id)
            old = table._keys.get(member) if table is not None else None
            if old is None:
                plans.append((i, p, table, None, score, score, True))
            else:
                was = self._score(old)
                new = self._new_score(was, score)  # raises on sum overflow, before any change
                plans.append((i, p, table, old, was, new, new != was))
        seq = self.seq
        if any(plan[6] for plan in plans):
            self.seq = seq = seq + 1
            assert seq < SEQ_LIMIT, "board write counter exhausted"
        results: dict[str, Entry] = {}
        shared: Key | None = None
        for i, p, table, old, was, new, changed in plans:
            name = windows[i].name
            if table is None:
                table = self._tables[i][p.id] = Table(
                    name, p.id, self._desc, self._first, self.config.ranking
                )
            if not changed:
                assert old is not None
                rank = table.rank_at(table._index.index(old), old)
                results[name] = {  # the stored score: 13 stays 13 when 13.0 is written
                    "period": p.id,
                    "score": was,
                    "rank": rank,
                    "previous": {"score": was, "rank": rank},
                    "changed": False,
                }
                continue
            # Windows that reach the written score share one key object: same bytes, and an
            # extra window then costs its dict and index slots, not another key.
            if new is score:
                if shared is None:
                    shared = self._key(score, seq, member)
                key = shared
            else:
                key = self._key(new, seq, member)
            shown_prev = None
            if old is not None and not table._ordinal:
                shown_prev = table.rank_at(table._index.index(old), old)
            event = self._set(table, member, key, new, seq, meta, old)
            events.append(event)
            shown = event[6] if table._ordinal else table.rank_at(event[6] - 1, key)
            if old is None:
                previous = None
            else:
                previous = {"score": was, "rank": event[7] if shown_prev is None else shown_prev}
            results[name] = {
                "period": p.id,
                "score": new,
                "rank": shown,
                "previous": previous,
                "changed": True,
            }
        first = results.get(windows[0].name)
        if first is None:
            out: Entry = {
                "member": member,
                "score": score,
                "rank": None,
                "previous": None,
                "changed": False,
            }
        else:
            out = {
                "member": member,
                "score": first["score"],
                "rank": first["rank"],
                "previous": first["previous"],
                "changed": first["changed"],
            }
        if len(windows) > 1:
            out["windows"] = results
        return out

    def _set(
        self,
        table: Table,
        member: str,
        key: Key,
        score: Score,
        seq: int,
        meta: dict[str, Any] | None,
        old: Key | None,
    ) -> EntrySet:
        """Put one entry (its sort key already made) into one table; the "bset" event that
        says so (not emitted)."""
        index = table._index
        prev_rank = None if old is None else index.index_remove(old) + 1  # positions, always
        rank = index.add(key) + 1
        table._keys[member] = key
        old_meta = table._meta.get(member)
        if meta is not None:
            table._meta[member] = meta
        else:
            meta = old_meta
        top = table._top
        if top is not None and min(rank, prev_rank or rank) <= len(top):
            table._top = None
        return (
            "bset",
            self.name,
            member,
            score,
            seq,
            meta,
            rank,
            prev_rank,
            old,
            old_meta,
            table.window,
            table.period,
        )

    def write_many(self, items: Sequence[tuple[object, ...]]) -> list[Entry]:
        """Apply writes in order, all or nothing: every item is validated before the first write.

        Items are (member, score, metadata) or (member, score, metadata, at). ``sum`` overflow
        is checked in the same pre-pass against running totals, so a batch never stops
        half-applied. Runtime complexity: O(k * windows * log n).
        """
        checked = self.check_batch(items)
        events: list[EntryChange] = []
        single = self._single
        try:
            if single is not None and all(item[3] is None for item in checked):
                # Collected, then announced as one event: the journal writes one record for the
                # whole batch, so a crash leaves all of it or none (store/disk/journal.py).
                # (_write1 emits only "bset": the list holds what a "bbatch" may)
                emit, self.emit = self.emit, cast("Callable[[Event], None]", events.append)
                try:
                    return [self._write1(single, m, s, meta) for m, s, meta, _ in checked]
                finally:
                    self.emit = emit
            return [self._write_windows(m, s, meta, at, events) for m, s, meta, at in checked]
        finally:
            if events:
                self.emit(("bbatch", self.name, events))

    def check_batch(self, items: Sequence[tuple[object, ...]]) -> list[Item]:
        """Validate a batch against this board without changing anything."""
        check_batch_size(len(items), self._limits)
        checked: list[Item] = []
        for item in items:
            member, score, metadata = item[0], item[1], item[2]
            at = item[3] if len(item) > 3 else None
            m = check_member(member, self._limits)
            s = check_score(score)
            meta = check_metadata(metadata, self._limits)
            if self._bounded:
                self._check_bounds(s)
            checked.append((m, s, meta, at))  # type: ignore[arg-type]
        if self._single is None or any(c[3] is not None for c in checked):
            now = self.clock()
            self.roll(now)
            targets = [self._targets(self._check_at(c[3], now), now) for c in checked]
        else:
            targets = [[(0, _ALL)]] * len(checked)
        if self.config.update == "sum":
            totals: dict[tuple[int, str, str], Score] = {}
            for (m, s, _, _), where in zip(checked, targets, strict=True):
                for i, p in where:
                    k = (i, p.id, m)
                    old = totals.get(k)
                    if old is None:
                        table = self._tables[i].get(p.id)
                        key = table._keys.get(m) if table is not None else None
                        if key is not None:
                            old = self._score(key)
                    totals[k] = s if old is None else _checked_sum(old, s)
        return checked

    def remove(self, member: str) -> None:
        """Delete an entry from every window's current period; MemberNotFound if in none.
        Runtime complexity: O(windows * log n)."""
        single = self._single
        if single is not None:
            key = single._keys.get(member)
            if key is None:
                raise MemberNotFound(f"member {show(member)} is not on board {show(self.name)}")
            self.seq += 1
            self.emit(self._delete(single, member, key))
            return
        self.roll(self.clock())
        found = []
        for i, current in enumerate(self._current):
            table = self._tables[i].get(current.id) if current is not None else None
            if table is not None and member in table:
                found.append(table)
        if not found:
            raise MemberNotFound(
                f"member {show(member)} is not in any current period of board {show(self.name)}"
            )
        self.seq += 1
        events: list[EntryChange] = [self._delete(t, member, t._keys[member]) for t in found]
        if len(events) == 1:
            self.emit(events[0])
        else:
            self.emit(("bbatch", self.name, events))

    def _delete(self, table: Table, member: str, key: Key) -> EntryDeleted:
        del table._keys[member]
        pos = table._index.index_remove(key)
        old_meta = table._meta.pop(member, None)
        if table._top is not None and pos < len(table._top):
            table._top = None
        return (
            "bdel",
            self.name,
            member,
            self.seq,
            pos + 1,  # a position, whatever the ranking
            key,
            old_meta,
            table.window,
            table.period,
        )

    # -- reads (first window, current period, unless named) --------------------------------

    def entry(self, member: str, window: str | None = None, period: str | None = None) -> Entry:
        """{rank, member, score, metadata?}; MemberNotFound if absent. O(log n)."""
        table = self.select(window, period).table
        if table is None:
            raise MemberNotFound(f"member {show(member)} is not on board {show(self.name)}")
        return table.entry(member, self.name)

    def member(self, member: str, window: str | None = None, period: str | None = None) -> Entry:
        """The member answer: {rank, member, score, percentile, metadata?}. O(log n)."""
        table = self.select(window, period).table
        if table is None:
            raise MemberNotFound(f"member {show(member)} is not on board {show(self.name)}")
        return table.member(member, self.name)

    def position(self, member: str, window: str | None = None) -> int | None:
        """The member's ordinal rank in the window's current period, whatever the ranking."""
        try:
            table = self.select(window).table
        except PeriodNotFound:
            return None
        return None if table is None else table.position(member)

    def lookup(
        self, members: object, window: str | None = None, period: str | None = None
    ) -> tuple[list[Entry], list[str]]:
        """(entries of the listed members in board order, with board-wide ranks; the listed
        members not on the board, in request order). A member listed twice counts once.
        InvalidArgument unless ``members`` is a list of at most LOOKUP_MEMBERS valid ids.
        Runtime complexity: O(k log n) for k members.
        """
        if type(members) is not list:
            raise InvalidArgument(
                f"members must be an array of member ids, but got {show(members)}"
            )
        if len(members) > ranks.LOOKUP_MEMBERS:
            raise InvalidArgument(
                f"a lookup names at most {ranks.LOOKUP_MEMBERS} members, but got {len(members)}"
            )
        checked = [check_member(m, self._limits) for m in members]
        table = self.select(window, period).table
        if table is None:
            return [], list(dict.fromkeys(checked))
        return table.lookup(checked)

    def score_range(
        self,
        low: object,
        high: object,
        offset: int,
        limit: int,
        window: str | None = None,
        period: str | None = None,
    ) -> tuple[int, list[Entry]]:
        """(how many entries have low <= score <= high, those ranked offset+1 .. offset+limit
        among them, in board order). InvalidArgument for a bad bound or low > high.
        Runtime complexity: O(log n + limit).
        """
        lo, hi = check_score(low), check_score(high)
        if lo > hi:
            raise InvalidArgument(f"min must not be above max, but got min={lo!r}, max={hi!r}")
        table = self.select(window, period).table
        if table is None:
            return 0, []
        return table.score_range(lo, hi, offset, limit)

    def set_metadata(self, member: str, metadata: object) -> Entry:
        """Replace (an object) or clear (None) an entry's metadata in every window's current
        period that holds it; its score, sort key and place stay. Emits a "bset" per period
        carrying the same key (a "bbatch" when several), so the journal, replay, undo and the
        WebSocket hub need nothing new: replaying it rebuilds the identical key. The board's
        write counter moves (WebSocket frames show a newer seq); on ties=first boards the
        record keeps the key's own seq. Answers the first window's entry; MemberNotFound if
        in none. Runtime complexity: O(windows * log n).
        """
        meta = check_metadata(metadata, self._limits) if metadata is not None else None
        self.roll(self.clock())
        found: list[Table] = []
        for i, current in enumerate(self._current):
            table = self._tables[i].get(current.id) if current is not None else None
            if table is not None and member in table:
                found.append(table)
        if not found:
            raise MemberNotFound(f"member {show(member)} is not on board {show(self.name)}")
        changed = [t for t in found if t._meta.get(member) != meta]
        if changed:
            self.seq += 1
            assert self.seq < SEQ_LIMIT, "board write counter exhausted"
        events: list[EntryChange] = []
        for table in changed:
            key = table._keys[member]
            old_meta = table._meta.get(member)
            pos = table._index.index(key)
            if meta is None:
                del table._meta[member]
            else:
                table._meta[member] = meta
            if table._top is not None and pos < len(table._top):
                table._top = None
            seq = key_seq(key) if self._first else self.seq
            events.append(
                ("bset", self.name, member, self._score(key), seq, meta, pos + 1, pos + 1, key,
                 old_meta, table.window, table.period)
            )  # fmt: skip
        if len(events) == 1:
            self.emit(events[0])
        elif events:
            self.emit(("bbatch", self.name, events))
        first = found[0]
        key = first._keys[member]
        return first._entry(first.rank_at(first._index.index(key), key), key)

    def top(
        self, offset: int = 0, limit: int = 10, window: str | None = None, period: str | None = None
    ) -> list[Entry]:
        """Entries ranked offset+1 .. offset+limit (read-only dicts). O(log n + limit)."""
        table = self.select(window, period).table
        return table.top(offset, limit) if table is not None else []

    def around(
        self, member: str, radius: int, window: str | None = None, period: str | None = None
    ) -> list[Entry]:
        table = self.select(window, period).table
        if table is None:
            raise MemberNotFound(f"member {show(member)} is not on board {show(self.name)}")
        return table.around(member, radius, self.name)

    def rank_for_score(
        self, score: object, window: str | None = None, period: str | None = None
    ) -> int:
        """The rank a newcomer posting ``score`` now would get (ties: Table.rank_for_score)."""
        s = check_score(score)
        table = self.select(window, period).table
        if table is None:
            return 1
        return table.rank_for_score(s, self.seq)

    # -- persistence -----------------------------------------------------------------------

    def _main(self) -> Table:
        table = self._single
        if table is None:
            table = self.select().table or Table("", "", self._desc, self._first)
        return table

    def dump(self) -> Iterator[tuple[str, Score, int, dict[str, Any] | None]]:
        """(member, score, seq, metadata) of the first window's current period, in rank order;
        seq is 0 on ties=member boards."""
        return self._main().dump()

    def dump_keys(self) -> Iterator[Key]:
        """The raw sort keys (store/sortkey.py layout) of a one-window board, in rank order."""
        return self._main().dump_keys()

    def dump_metadata(self) -> ItemsView[str, dict[str, Any]]:
        return self._main().dump_metadata()

    def tables(self) -> list[Table]:
        """Every table the board holds, window by window (a snapshot writes them all)."""
        return [t for tables in self._tables for t in tables.values()]

    def load_keys(
        self, runs: Iterable[list[Key]], metadata: dict[str, dict[str, Any]], seq: int
    ) -> None:
        """Replace the content of the "all" period of window "all" with raw sort keys (runs of
        what ``dump_keys`` yields, encoded for this board's order and ties), the entries'
        metadata and the write counter (see ``load_table``)."""
        self.load_table("all", "all", runs, metadata)
        self.seq = seq

    def load_table(
        self,
        window: str,
        period: str,
        runs: Iterable[list[Key]],
        metadata: dict[str, dict[str, Any]],
    ) -> None:
        """Replace one period's content with raw sort keys.

        Nothing is re-encoded: a member is a slice of its key, indexed run by run while the
        run is fresh in the CPU cache, and the SkipList is built from the concatenated keys
        in O(n) when they come in rank order (any order still builds a correct board, by an
        O(n log n) sort). Takes ownership of ``metadata``. Keys are trusted to be canonical
        (``_check`` asserts it); ValueError if a member is not UTF-8 or appears twice,
        ``metadata`` names a member without a key, or the window or period id is not this
        board's -- the board is then left unchanged. Runtime complexity: O(n).
        """
        self._table(window, period).load_keys(runs, metadata)

    def _table(self, window: str, period: str) -> Table:
        """The table of (window, period), created if absent; ValueError if not this board's."""
        i = self._wix.get(window)
        if i is None:
            raise ValueError(f"board {self.name!r} has no window {window!r}")
        tables = self._tables[i]
        table = tables.get(period)
        if table is None:
            try:
                parse_period(self.config.windows[i], period)
            except InvalidArgument as exc:
                raise ValueError(str(exc)) from None
            table = tables[period] = Table(
                window, period, self._desc, self._first, self.config.ranking
            )
        return table

    def apply_set(
        self,
        member: str,
        score: Score,
        seq: int,
        meta: dict[str, Any] | None,
        window: str = "all",
        period: str = "all",
    ) -> None:
        """Journal replay of a "bset": idempotent, emits nothing."""
        table = self._single if window == "all" and self._single is not None else None
        if table is None:
            table = self._table(window, period)
        table._top = None
        old = table._keys.get(member)
        if old is not None:
            table._index.remove(old)
        key = self._key(score, seq, member)
        table._index.add(key)
        table._keys[member] = key
        if meta is None:
            table._meta.pop(member, None)
        else:
            table._meta[member] = meta
        if seq > self.seq:
            self.seq = seq

    def apply_delete(self, member: str, seq: int, window: str = "all", period: str = "all") -> None:
        """Journal replay of a "bdel": idempotent, emits nothing."""
        if seq > self.seq:
            self.seq = seq
        table = self._table(window, period)
        table._top = None
        key = table._keys.pop(member, None)
        if key is not None:
            table._index.remove(key)
            table._meta.pop(member, None)

    # -- undo: a write whose journal record was lost ------------------------------------------

    def undo(self, event: EntryChange | BatchSet | PeriodRolled) -> None:
        """Revert one of this board's own "bset"/"bdel"/"bbatch" events, newest first.

        Called only for the board's latest changes, in reverse order, so the entry is exactly
        as that event left it. Emits the resulting state ("bset"/"bdel") for the observers --
        the WebSocket hub must not keep showing what was undone; the journal is not recording
        at that moment (service/backend/journal_flusher.py). Runtime complexity: O(log n) per write.
        """
        if event[0] == "bbatch":
            for sub in reversed(event[2]):
                self.undo(sub)
            return
        if event[0] == "broll":
            return
        self.seq += 1
        member = event[2]
        old_key: Key | None
        if event[0] == "bset":
            old_key, old_meta, window, period = event[8], event[9], event[10], event[11]
            table = self._table(window, period)
            now = table._keys[member]
            was = table.rank_at(table._index.index_remove(now), now)
            table._top = None
            if old_key is None:  # an insert: undone by deleting the entry it made
                del table._keys[member]
                table._meta.pop(member, None)
                self.emit(("bdel", self.name, member, self.seq, was, now, event[5], window, period))
                return
            prev_rank: int | None = was
        else:
            old_key, old_meta, window, period = event[5], event[6], event[7], event[8]
            table = self._table(window, period)
            assert member not in table._keys, member
            prev_rank = None
            table._top = None
        rank = table.rank_at(table._index.add(old_key), old_key)
        table._keys[member] = old_key
        if old_meta is None:
            table._meta.pop(member, None)
        else:
            table._meta[member] = old_meta
        score = self._score(old_key)
        seq = key_seq(old_key) if self._first else self.seq
        self.emit(
            (
                "bset",
                self.name,
                member,
                score,
                seq,
                old_meta,
                rank,
                prev_rank,
                None,
                None,
                window,
                period,
            )
        )

    def _check(self) -> None:
        windows = self.config.windows
        assert len(self._tables) == len(windows) == len(self._caches)
        for i, w in enumerate(windows):
            assert self._wix[w.name] == i
            for pid, table in self._tables[i].items():
                assert (table.window, table.period) == (w.name, pid), (w, pid)
                assert parse_period(w, pid).id == pid
                table._check(self.seq, self._key)
        if self._single is not None:
            assert self._tables[0]["all"] is self._single


def _checked_sum(a: Score, b: Score) -> Score:
    total = a + b
    if -SCORE_LIMIT < total < SCORE_LIMIT:
        return total
    raise InvalidArgument(f"sum {a!r} + {b!r} would reach magnitude 2**63")
