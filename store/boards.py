"""Leaderboards: a dict member -> sort key, plus a SkipList of the same keys.

Two structures, one truth (the shape of Redis's zset): the dict answers "what is alice's entry"
in O(1); the SkipList answers "who is 5th" and "what rank is alice" in O(log n). The dict owns
nothing the SkipList lacks: its value *is* the key object stored in the SkipList, so an entry
costs one tuple, and removing it means finding that same tuple again.

The sort key (store/sortkey.py) is one ``bytes`` object that sorts best first (index 0 =
rank 1): the score (negated on ``desc`` boards), then on ``ties=first`` the board's write counter
``seq`` when the score was reached, then the member id. ``seq`` is data, not object identity, so
"who reached the score first" survives a snapshot and a journal replay. A write that changes
nothing (a non-improving ``best``, an equal ``latest``, a ``sum`` of 0) takes no sequence number
and keeps its place among equal scores.

Ranks in this module's public results are 1-based (rank 1 is the best); SkipList positions are
0-based, so ``rank = position + 1`` at every boundary.

Every mutation is reported to ``Board.emit`` (set by the Keyspace) as a tuple carrying the
resulting state, so a journal can replay it idempotently and a WebSocket hub can tell whether a
top-N view moved -- and, at the end, the state it replaced, so a write whose journal record was
lost can be undone (``undo``; service/backend/journal_flusher.py says when):

    ("bset", board, member, score, seq, metadata | None, rank, previous_rank | None,
             old_key | None, old_metadata | None)
    ("bdel", board, member, seq, previous_rank, old_key, old_metadata | None)
    ("bbatch", board, [bset, ...])        one scores:batch: one journal record, all or nothing

Undo restores the replaced key object itself (so a restored entry keeps its tie order) and
takes a new ``seq``: the board's write counter never goes back, so a WebSocket client that saw
the undone write at seq N gets the restored state at a seq above N, not a repeat of N.
"""

from collections.abc import Callable, ItemsView, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

from store.errors import InvalidArgument, MemberNotFound
from store.show import show
from store.skiplist import SkipList
from store.sortkey import SEQ_LIMIT, encode_num, key_member, key_score, key_seq, make_key
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

Key = bytes
Event = tuple[Any, ...]
Entry = dict[str, Any]

Order = Literal["desc", "asc"]
Update = Literal["best", "latest", "sum"]
Ties = Literal["first", "member"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "order": ("desc", "asc"),
    "update": ("best", "latest", "sum"),
    "ties": ("first", "member"),
}
# Player policy (service/players.py enforces it): not choices, so checked by _policy().
_POLICY = ("player_writes", "player_rate", "public_read")
PLAYER_RATE_MAX = 10_000  # writes per member per minute
DEFAULT_PLAYER_RATE = 60


def _ignore(event: Event) -> None:
    pass


def _policy(name: str, value: object) -> object:
    if name == "player_rate":
        if type(value) is not int or not 1 <= value <= PLAYER_RATE_MAX:
            raise InvalidArgument(
                f"board option 'player_rate' must be an integer from 1 to {PLAYER_RATE_MAX} "
                f"(writes per member per minute), but got {show(value)}"
            )
    elif type(value) is not bool:
        raise InvalidArgument(
            f"board option {show(name)} must be true or false, but got {show(value)}"
        )
    return value


@dataclass(frozen=True, slots=True)
class BoardConfig:
    order: Order = "desc"
    update: Update = "best"
    ties: Ties = "first"
    player_writes: bool = False
    player_rate: int = DEFAULT_PLAYER_RATE
    public_read: bool = False

    @classmethod
    def from_options(
        cls, options: dict[str, Any], base: "BoardConfig | None" = None
    ) -> "BoardConfig":
        """Build from client options; an unknown option or value is an InvalidArgument."""
        base = base or cls()
        values: dict[str, Any] = {"order": base.order, "update": base.update, "ties": base.ties}
        values.update((name, getattr(base, name)) for name in _POLICY)
        for name, value in options.items():
            if name in _POLICY:
                values[name] = _policy(name, value)
                continue
            choices = _CHOICES.get(name)
            if choices is None:
                raise InvalidArgument(
                    f"unknown board option {show(name)}; "
                    f"expected one of {sorted((*_CHOICES, *_POLICY))}"
                )
            if value not in choices:
                raise InvalidArgument(
                    f"board option {show(name)} must be one of {choices}, but got {show(value)}"
                )
            values[name] = value
        return cls(
            order=cast(Order, values["order"]),
            update=cast(Update, values["update"]),
            ties=cast(Ties, values["ties"]),
            player_writes=values["player_writes"],
            player_rate=values["player_rate"],
            public_read=values["public_read"],
        )

    def as_dict(self) -> dict[str, Any]:
        """The options as a journal record / snapshot row holds them: a player policy option
        only when it is not the default, so the files of boards that do not use them are
        byte for byte what they were before the options existed."""
        d: dict[str, Any] = {"order": self.order, "update": self.update, "ties": self.ties}
        if self.player_writes:
            d["player_writes"] = True
        if self.player_rate != DEFAULT_PLAYER_RATE:
            d["player_rate"] = self.player_rate
        if self.public_read:
            d["public_read"] = True
        return d


class Board:
    __slots__ = (
        "_desc",
        "_first",
        "_index",
        "_keys",
        "_limits",
        "_meta",
        "_top",
        "config",
        "emit",
        "name",
        "seq",
    )

    def __init__(self, name: str, config: BoardConfig, limits: Limits) -> None:
        self.name = name
        self.config = config
        self.seq = 0
        self.emit: Callable[[Event], None] = _ignore
        self._limits = limits
        self._desc = config.order == "desc"
        self._first = config.ties == "first"
        self._keys: dict[str, Key] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._index: SkipList[Key] = SkipList()
        # Decoded entries of ranks 1..len(_top), or None. Most writes land far below the
        # top, so the page every dashboard polls is decoded once per change, not per read.
        self._top: list[Entry] | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def set_config(self, config: BoardConfig) -> None:
        """Change options; the caller guarantees order/ties change only while empty."""
        assert not self._keys or (config.order, config.ties) == (
            self.config.order,
            self.config.ties,
        )
        self.config = config
        self._desc = config.order == "desc"
        self._first = config.ties == "first"
        self._top = None

    def __contains__(self, member: object) -> bool:
        return member in self._keys

    # -- keys ------------------------------------------------------------------------------

    def _key(self, score: Score, seq: int, member: str) -> Key:
        num = encode_num(-score if self._desc else score)
        return make_key(num, seq if self._first else None, member, score)

    def _score(self, key: Key) -> Score:
        return key_score(key, self._desc)

    def _member(self, key: Key) -> str:
        return key_member(key, self._first)

    def _better(self, a: Score, b: Score) -> bool:
        return a > b if self._desc else a < b

    def _entry(self, rank: int, key: Key) -> Entry:
        member = key_member(key, self._first)
        entry = {"rank": rank, "member": member, "score": key_score(key, self._desc)}
        meta = self._meta.get(member)
        if meta is not None:
            entry["metadata"] = meta
        return entry

    # -- writes ----------------------------------------------------------------------------

    def write(self, member: object, score: object, metadata: object = None) -> Entry:
        """Apply one score write under the board's update rule; return the write result.

        Result: {member, score, rank (1-based), previous: {score, rank} | None, changed}.
        Metadata replaces the entry's metadata only when the score changes (omitted: kept).
        Runtime complexity: O(log n).
        """
        member = check_member(member, self._limits)
        score = check_score(score)
        meta = check_metadata(metadata, self._limits) if metadata is not None else None
        return self._write(member, score, meta)

    def _write(self, member: str, score: Score, meta: dict[str, Any] | None) -> Entry:
        index = self._index
        old = self._keys.get(member)
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
                rank = index.index(old) + 1
                return {
                    "member": member,
                    "score": old_score,
                    "rank": rank,
                    "previous": {"score": old_score, "rank": rank},
                    "changed": False,
                }
            prev_rank = index.index_remove(old) + 1  # one search, not index() + del
            previous = {"score": old_score, "rank": prev_rank}
        self.seq = seq = self.seq + 1
        assert seq < SEQ_LIMIT, "board write counter exhausted"
        key = self._key(new_score, seq, member)
        rank = index.add(key) + 1
        self._keys[member] = key
        old_meta = self._meta.get(member)
        if meta is not None:
            self._meta[member] = meta
        else:
            meta = old_meta
        top = self._top
        if top is not None and min(rank, prev_rank or rank) <= len(top):
            self._top = None
        self.emit(("bset", self.name, member, new_score, seq, meta, rank, prev_rank, old, old_meta))
        return {
            "member": member,
            "score": new_score,
            "rank": rank,
            "previous": previous,
            "changed": True,
        }

    def write_many(self, items: list[tuple[object, object, object]]) -> list[Entry]:
        """Apply writes in order, all or nothing: every item is validated before the first write.

        ``sum`` overflow is checked in the same pre-pass against running totals, so a batch never
        stops half-applied. Runtime complexity: O(k log n).
        """
        checked = self.check_batch(items)
        emit = self.emit
        events: list[Event] = []
        # Collected, then announced as one event: the journal writes one record for the whole
        # batch, so a crash leaves all of it or none (store/disk/journal.py, "bbatch").
        self.emit = events.append
        try:
            return [self._write(m, s, meta) for m, s, meta in checked]
        finally:
            self.emit = emit
            if events:
                emit(("bbatch", self.name, events))

    def check_batch(
        self, items: list[tuple[object, object, object]]
    ) -> list[tuple[str, Score, dict[str, Any] | None]]:
        """Validate a batch against this board without changing anything."""
        check_batch_size(len(items), self._limits)
        checked: list[tuple[str, Score, dict[str, Any] | None]] = []
        totals: dict[str, Score] = {}
        for member, score, metadata in items:
            m = check_member(member, self._limits)
            s = check_score(score)
            meta = check_metadata(metadata, self._limits)
            if self.config.update == "sum":
                old = totals.get(m)
                if old is None and m in self._keys:
                    old = self._score(self._keys[m])
                totals[m] = s if old is None else _checked_sum(old, s)
            checked.append((m, s, meta))
        return checked

    def remove(self, member: str) -> None:
        """Delete an entry; MemberNotFound if absent. Runtime complexity: O(log n)."""
        key = self._keys.pop(member, None)
        if key is None:
            raise MemberNotFound(f"member {show(member)} is not on board {show(self.name)}")
        pos = self._index.index_remove(key)
        old_meta = self._meta.pop(member, None)
        if self._top is not None and pos < len(self._top):
            self._top = None
        self.seq += 1
        self.emit(("bdel", self.name, member, self.seq, pos + 1, key, old_meta))

    # -- reads -----------------------------------------------------------------------------

    def entry(self, member: str) -> Entry:
        """{rank, member, score, metadata?}; MemberNotFound if absent. O(log n)."""
        key = self._keys.get(member)
        if key is None:
            raise MemberNotFound(f"member {show(member)} is not on board {show(self.name)}")
        return self._entry(self._index.index(key) + 1, key)

    def top(self, offset: int = 0, limit: int = 10) -> list[Entry]:
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
        entry = self._entry
        return [entry(r, k) for r, k in enumerate(self._index[offset : offset + limit], offset + 1)]

    def around(self, member: str, radius: int) -> list[Entry]:
        """Up to ``radius`` entries on each side of member, member included. O(log n + radius)."""
        key = self._keys.get(member)
        if key is None:
            raise MemberNotFound(f"member {show(member)} is not on board {show(self.name)}")
        pos = self._index.index(key)
        lo = max(0, pos - radius)
        return self.top(lo, pos + radius + 1 - lo)

    def rank_for_score(self, score: object) -> int:
        """The rank a newcomer posting ``score`` now would get.

        ties=first: behind everyone already at that score (they reached it first).
        ties=member: the best rank among equal scores (the member id decides the rest).
        """
        s = check_score(score)
        probe = encode_num(-s if self._desc else s)
        if self._first:
            probe += (self.seq + 1).to_bytes(6, "big")
        rank: int = self._index.bisect_left(probe) + 1
        return rank

    # -- persistence -----------------------------------------------------------------------

    def dump(self) -> Iterator[tuple[str, Score, int, dict[str, Any] | None]]:
        """(member, score, seq, metadata) in rank order; seq is 0 on ties=member boards."""
        first, desc, meta = self._first, self._desc, self._meta
        for key in self._index:
            member = key_member(key, first)
            yield member, key_score(key, desc), key_seq(key) if first else 0, meta.get(member)

    def dump_keys(self) -> Iterator[Key]:
        """The raw sort keys (store/sortkey.py layout) in rank order, for a snapshot.

        Runtime complexity: O(1) to start, O(n) to exhaust. Not safe across mutations.
        """
        return iter(self._index)

    def dump_metadata(self) -> ItemsView[str, dict[str, Any]]:
        """(member, metadata) of every entry that has metadata, any order. A live view."""
        return self._meta.items()

    def load_keys(
        self, runs: Iterable[list[Key]], metadata: dict[str, dict[str, Any]], seq: int
    ) -> None:
        """Replace the content with raw sort keys (runs of what ``dump_keys`` yields, encoded
        for this board's order and ties), the entries' metadata and the write counter.

        Nothing is re-encoded: a member is a slice of its key, indexed run by run while the
        run is fresh in the CPU cache, and the SkipList is built from the concatenated keys
        in O(n) when they come in rank order (any order still builds a correct board, by an
        O(n log n) sort). Takes ownership of ``metadata``. Keys are trusted to be canonical
        (``_check`` asserts it); ValueError if a member is not UTF-8 or appears twice, or
        ``metadata`` names a member without a key -- the board is then left unchanged.
        Runtime complexity: O(n).
        """
        start = 16 if self._first else 10
        members: dict[str, Key] = {}
        keys: list[Key] = []
        for run in runs:
            members.update(zip([key[start:-1].decode() for key in run], run, strict=True))
            keys += run
        if len(members) != len(keys):
            raise ValueError(f"board {self.name!r}: a member appears twice")
        if not metadata.keys() <= members.keys():
            raise ValueError(f"board {self.name!r}: metadata for a member not on the board")
        self._keys = members
        self._meta = metadata
        self._index = SkipList(keys)
        self.seq = seq
        self._top = None

    def apply_set(self, member: str, score: Score, seq: int, meta: dict[str, Any] | None) -> None:
        """Journal replay of a "bset": idempotent, emits nothing."""
        self._top = None
        old = self._keys.get(member)
        if old is not None:
            self._index.remove(old)
        key = self._key(score, seq, member)
        self._index.add(key)
        self._keys[member] = key
        if meta is None:
            self._meta.pop(member, None)
        else:
            self._meta[member] = meta
        if seq > self.seq:
            self.seq = seq

    def apply_delete(self, member: str, seq: int) -> None:
        """Journal replay of a "bdel": idempotent, emits nothing."""
        self._top = None
        if seq > self.seq:
            self.seq = seq
        key = self._keys.pop(member, None)
        if key is not None:
            self._index.remove(key)
            self._meta.pop(member, None)

    # -- undo: a write whose journal record was lost ------------------------------------------

    def undo(self, event: Event) -> None:
        """Revert one of this board's own "bset"/"bdel"/"bbatch" events, newest first.

        Called only for the board's latest changes, in reverse order, so the entry is exactly
        as that event left it. Emits the resulting state ("bset"/"bdel") for the observers --
        the WebSocket hub must not keep showing what was undone; the journal is not recording
        at that moment (service/backend/journal_flusher.py). Runtime complexity: O(log n) per write.
        """
        op = event[0]
        if op == "bbatch":
            for sub in reversed(event[2]):
                self.undo(sub)
            return
        self._top = None
        self.seq += 1
        member = event[2]
        if op == "bset":
            old_key, old_meta = event[8], event[9]
            now = self._keys[member]
            prev_rank: int | None = self._index.index_remove(now) + 1
        else:
            assert op == "bdel", op
            old_key, old_meta = event[5], event[6]
            assert member not in self._keys, member
            prev_rank = None
        if old_key is None:
            del self._keys[member]
            self._meta.pop(member, None)
            assert prev_rank is not None
            self.emit(("bdel", self.name, member, self.seq, prev_rank, now, event[5]))
            return
        rank = self._index.add(old_key) + 1
        self._keys[member] = old_key
        if old_meta is None:
            self._meta.pop(member, None)
        else:
            self._meta[member] = old_meta
        score = self._score(old_key)
        seq = key_seq(old_key) if self._first else self.seq
        self.emit(("bset", self.name, member, score, seq, old_meta, rank, prev_rank, None, None))

    def _check(self) -> None:
        index = self._index
        index._check()
        assert len(index) == len(self._keys), (len(index), len(self._keys))
        for member, key in self._keys.items():
            assert self._member(key) == member, (member, key)
            assert key in index, key
            assert key == self._key(self._score(key), key_seq(key), member), key
            if self._first:
                assert 0 < key_seq(key) <= self.seq, (key, self.seq)
        assert set(self._meta) <= set(self._keys)
        if self._top is not None:
            assert self._top == self._page(0, len(self._top)), "stale top cache"
        assert all(abs(self._score(k)) < SCORE_LIMIT for k in index)


def _checked_sum(a: Score, b: Score) -> Score:
    total = a + b
    if -SCORE_LIMIT < total < SCORE_LIMIT:
        return total
    raise InvalidArgument(f"sum {a!r} + {b!r} would reach magnitude 2**63")
