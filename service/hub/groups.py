"""Who watches what: the hub's subscriptions, grouped by the view they share, per watched board.

    Hub._watches   dict key -> Watch             boards (or a window of one: key "board\x00window")
                                                 somebody subscribed to (nothing else)
    Hub._windowed  dict board -> {key}           the watches of a board that name a window
    Watch.tops     dict N -> TopGroup            subscriptions to the board's top N, grouped by N
    Watch.members  dict member -> RankGroup      subscriptions to one member's (rank, score)
    Watch.arounds  dict member -> {r -> AroundGroup}   the entries within r ranks of member
    Watch.index    AroundIndex                   the around groups filed by position

A group holds the view as of the last flush and its subscriptions (an insertion-ordered set);
each subscription holds what it was last shown (``seen``), which the delivery compares by
identity first. A watch also holds what the change detection (changes.py) gathered since the
last flush: ``top_dirty``, the union of the spans crossed (``lo``, ``hi``), each span
(``spans``), and the groups flagged directly (``woken``).

Windows: a subscription may name a board's ``window`` (default: its first). Its watch is keyed
``board`` or ``board\x00window`` (``watch_key``) and sees every event of the board (an event of
another window only costs a needless look: its spans are a superset).
"""

import math
from bisect import bisect_right
from typing import Any

from service.backend.api import Entry
from service.hub.wire import Peer, intern_head

INF = math.inf
MAX_TOP = 100
MAX_RADIUS = 50
# Around groups are indexed by position in buckets of this many ranks. A watch keeps up to
# MAX_SPANS spans per flush (past that -- 100,000 writes in one tick -- a flush scans every
# group against their union).
BUCKET = 64
MAX_SPANS = 100_000


class _Sub:
    __slots__ = ("board", "group", "head", "peer", "seen")

    def __init__(self, peer: Peer, head: str, board: str) -> None:
        self.peer = peer
        # '{"type":"top","id":<id>' -- the per-subscription prefix, interned: equal heads are
        # one object, which the fan-out loop compares by identity.
        self.head = intern_head(head)
        self.board = board


class TopSub(_Sub):
    __slots__ = ()

    def __init__(self, peer: Peer, head: str, board: str, group: "TopGroup") -> None:
        super().__init__(peer, head, board)
        self.group = group
        self.seen: list[Entry] = []


class RankSub(_Sub):
    __slots__ = ()

    def __init__(self, peer: Peer, head: str, board: str, group: "RankGroup") -> None:
        super().__init__(peer, head, board)
        self.group = group
        self.seen: tuple[Any, Any] = (None, None)


class AroundSub(_Sub):
    __slots__ = ()

    def __init__(self, peer: Peer, head: str, board: str, group: "AroundGroup") -> None:
        super().__init__(peer, head, board)
        self.group = group
        self.seen: list[Entry] = []


Subscription = TopSub | RankSub | AroundSub


class TopGroup:
    __slots__ = ("n", "stale", "subs", "view")

    def __init__(self, n: int) -> None:
        self.n = n
        self.subs: dict[TopSub, None] = {}  # an insertion-ordered set
        self.view: list[Entry] | None = None  # the slice as of the last flush
        # A subscriber joined with a view newer than ``view``: compare everyone next flush,
        # even if the slice then equals ``view`` again.
        self.stale = False


class RankGroup:
    __slots__ = ("dirty", "member", "pos", "state", "subs")

    def __init__(self, member: str) -> None:
        self.member = member
        self.subs: dict[RankSub, None] = {}
        self.state: tuple[Any, Any] | None = None  # (rank, score) as of the last look
        self.pos: int | None = None  # its position (ordinal rank) then: spans are positions
        self.dirty = False


class AroundGroup:
    __slots__ = ("dirty", "member", "pos", "radius", "subs", "view")

    def __init__(self, member: str, radius: int) -> None:
        self.member = member
        self.radius = radius
        self.subs: dict[AroundSub, None] = {}
        self.view: list[Entry] | None = None  # as of the last look
        self.pos: int | None = None  # the member's position as of the last look; None: absent
        self.dirty = False


class AroundIndex:
    """Around groups bucketed by their last known position, so a flush finds the windows a
    span crossed without visiting the others. A group's position is exact until a span
    crosses its window (the induction in changes.py), and then it is looked up and
    re-filed, so the index never goes stale. Absent members (pos None) are not filed: only
    their own write or a board-wide event wakes them."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: dict[int, set[AroundGroup]] = {}

    def add(self, group: "AroundGroup") -> None:
        if group.pos is not None:
            self.buckets.setdefault(group.pos // BUCKET, set()).add(group)

    def remove(self, group: "AroundGroup", pos: int | None) -> None:
        if pos is not None:
            bucket = self.buckets.get(pos // BUCKET)
            if bucket is not None:
                bucket.discard(group)
                if not bucket:
                    del self.buckets[pos // BUCKET]

    def crossed(self, spans: list[tuple[float, float]], into: "set[AroundGroup]") -> None:
        """Add every filed group whose window [pos - r, pos + r] meets one of ``spans``.

        Visits each bucket some span can reach once, and tests a group against all the spans
        at once: spans sorted by start, with the running maximum of their ends, so "some span
        starts at or before the window's end and ends at or after its start" is one bisection.
        """
        spans.sort()
        starts = [lo for lo, _ in spans]
        reach: list[float] = []
        far = -INF
        for _, hi in spans:
            far = max(far, hi)
            reach.append(far)
        buckets = self.buckets
        keys: set[int] = set()
        for lo, hi in spans:
            first = max(0, int(lo) - MAX_RADIUS) // BUCKET
            if hi == INF:
                keys.update(k for k in buckets if k >= first)
                continue
            last = (int(hi) + MAX_RADIUS) // BUCKET
            if last - first < len(buckets):
                keys.update(k for k in range(first, last + 1) if k in buckets)
            else:
                keys.update(k for k in buckets if first <= k <= last)
        for key in keys:
            for group in buckets[key]:
                pos = group.pos
                assert pos is not None
                k = bisect_right(starts, pos + group.radius)
                if k and reach[k - 1] >= pos - group.radius:
                    into.add(group)

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets.values())


def watch_key(board: str, window: str | None) -> str:
    """A watch's key in Hub._watches: the board, or the board and the window it names."""
    return board if window is None else f"{board}\x00{window}"


class Watch:
    __slots__ = (
        "arounds",
        "board",
        "epoch",
        "hi",
        "index",
        "lo",
        "max_top",
        "members",
        "name",
        "period",
        "queued",
        "spans",
        "top_dirty",
        "tops",
        "wide",
        "window",
        "wname",
        "woken",
    )

    def __init__(self, name: str, board: str, window: str | None, views: Any) -> None:
        self.name = name  # the key in Hub._watches
        self.board = board
        self.window = window  # as subscribed; None: the board's first
        self.epoch: str | None = None
        # (window name, current period id) as last shown; None while the board is absent
        self.wname, self.period = views.period_view(board, window)
        self.tops: dict[int, TopGroup] = {}
        self.max_top = 0
        self.members: dict[str, RankGroup] = {}
        self.arounds: dict[str, dict[int, AroundGroup]] = {}  # member -> radius -> group
        self.top_dirty = False
        self.lo: float = INF  # union of rank spans crossed since the last flush
        self.hi: float = 0
        self.index = AroundIndex()
        self.spans: list[tuple[float, float]] = []  # each span crossed, for the around index
        self.wide = False  # too many spans, or a board-wide event: scan every around group
        self.woken: list[AroundGroup] = []  # around groups flagged directly (their member)
        self.queued = False

    def __bool__(self) -> bool:
        return bool(self.tops or self.members or self.arounds)
