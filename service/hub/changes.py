"""Which writes can matter to whom: the spans a write crossed, and the views they reach.

Change detection costs O(1) per write, never O(subscribers). The hub listens to the backend's
change feed (service/backend/api.py) and reads views through it, never a store object.
``mark`` runs once per event of a watched board; the flush asks ``due`` which views to read:

* A write to a board nobody watches is one dict miss.
* ``("bset", .., rank, prev_rank)`` can move a top-N view only if ``min(rank, prev_rank) <= N``
  (everything above both positions keeps its place), so one comparison against the largest N
  subscribed on the board (``max_top``) decides whether the board's top views are dirty.
  ``"bdel"`` uses its previous rank; ``"bdrop"``/``"bcfg"`` dirty everything; a ``"bbatch"``
  is its ``"bset"`` events one by one.
* A write changes what sits at a position only inside the span it crossed: ``[min, max]`` of
  its two ranks, ``[rank, inf)`` for an insert or a delete. The watch keeps the union of those
  spans since the last flush (two comparisons per write). A rank group whose last known rank
  lies outside it cannot have moved, and an around group whose last window
  ``[pos - r, pos + r]`` does not meet it shows the same entries at the same positions (by
  induction over the events: what an event changes stays inside that event's span), so the
  flush skips both without a lookup. The written member's own groups are flagged directly.
  Around views go one step further, so that a write dirties only the views whose window its
  own span meets (not every view between two far-apart writes of the tick): the watch also
  keeps each span, and ``AroundIndex`` (groups.py) files the groups by position in buckets
  of ``BUCKET`` ranks, so a flush visits only the buckets some span can reach and tests each
  group there against all the spans with one bisection. After a drop or reconfigure (or
  ``MAX_SPANS`` spans in one tick) the flush scans every group against the union instead.

Positions, not ranks: events carry positions (ordinal ranks) on every board, and the spans are
positions, so a group keeps its member's last position beside the rank it shows. Shared ranks
(ranking competition or dense) move further: a member's shown rank changes only when an entry
before it changes, so there a write's span is ``[min, inf)`` -- still exact, as a change can
only come from above.

Windows and periods: a subscription may name a board's ``window`` (default: its first). Its

A write undone after a journal failure (service/backend/journal_flusher.py) needs nothing
special: the store announces the restored state as ordinary events, at a higher ``seq``, so a
subscriber that was shown the undone write gets the restored state on the next flush.
"""

from service.backend.api import Views
from service.hub.groups import INF, MAX_SPANS, AroundGroup, RankGroup, Watch
from store.events import BoardEvent


def mark(watch: Watch, event: BoardEvent) -> None:
    """Note on the watch what ``event`` may have changed: O(1), except for board-wide events."""
    if event[0] == "bbatch":
        for write in event[2]:
            mark(watch, write)
        return
    low: float
    high: float
    member: str | None
    if event[0] == "bset":
        rank, prev = event[6], event[7]
        if prev is None:
            low, high = rank, INF
        else:
            low, high = (rank, prev) if rank < prev else (prev, rank)
        member = event[2]
    elif event[0] == "bdel":  # ("bdel", board, member, seq, previous_rank)
        low, high, member = event[4], INF, event[2]
    else:  # "bdrop", "bcfg", "broll": the whole board may have changed
        low, high, member = 1, INF, None
        # Even members last seen absent (rank None, outside any span): a board that comes
        # back (an undone drop, store/keyspace.py) brings its entries with it. Rare events,
        # so O(groups) here is fine.
        for every in watch.members.values():
            every.dirty = True
        for radii in watch.arounds.values():
            for near in radii.values():
                near.dirty = True
        watch.wide = True
    if low <= watch.max_top:
        watch.top_dirty = True
    if watch.arounds and not watch.wide:
        if len(watch.spans) < MAX_SPANS:
            watch.spans.append((low, high))
        else:
            watch.wide = True
    if watch.members or watch.arounds:
        if low < watch.lo:
            watch.lo = low
        if high > watch.hi:
            watch.hi = high
        if member is not None:
            group = watch.members.get(member)
            if group is not None:
                group.dirty = True
            arounds = watch.arounds.get(member)
            if arounds is not None:
                for near in arounds.values():
                    near.dirty = True
                    watch.woken.append(near)


def due(views: Views, watch: Watch) -> tuple[bool, list[RankGroup], list[AroundGroup]]:
    """What may have moved since the last flush: (top views?, rank groups, around groups).
    Resets the watch's flags and spans."""
    top = watch.top_dirty
    watch.top_dirty = False
    lo, hi = watch.lo, watch.hi
    watch.lo, watch.hi = INF, 0
    if lo != INF and views.ranking(watch.board) != "ordinal":
        # shared ranks: any change above a member may move its rank (store/ranks.py), so
        # every span reaches the end and the around index (finite spans) is bypassed
        hi = INF
        watch.wide = True
    ranks = rank_groups_due(watch, lo, hi) if watch.members else []
    arounds = around_groups_due(watch, lo, hi) if watch.arounds else []
    if not watch.arounds:
        watch.spans, watch.wide, watch.woken = [], False, []
    return top, ranks, arounds


def everything(watch: Watch) -> tuple[bool, list[RankGroup], list[AroundGroup]]:
    """Every view of the board, for a forced resend (flags reset)."""
    for group in watch.members.values():
        group.dirty = False
    arounds = [g for radii in watch.arounds.values() for g in radii.values()]
    for near in arounds:
        near.dirty = False
    return bool(watch.tops), list(watch.members.values()), arounds


def rank_groups_due(watch: Watch, lo: float, hi: float) -> list[RankGroup]:
    """Rank groups that may have moved since the last flush (flags reset)."""
    found = []
    for group in watch.members.values():
        if not group.dirty:
            pos = group.pos
            if pos is None or not lo <= pos <= hi:
                continue
        group.dirty = False
        found.append(group)
    return found


def around_groups_due(watch: Watch, lo: float, hi: float) -> list[AroundGroup]:
    """Around groups whose window a span crossed, or flagged directly (flags reset)."""
    spans, wide, woken = watch.spans, watch.wide, watch.woken
    watch.spans, watch.wide, watch.woken = [], False, []
    if wide:
        # Many spans this tick (or the whole board changed): one pass over every group
        # against the union is cheaper than one index probe per span.
        found = []
        for radii in watch.arounds.values():
            for group in radii.values():
                if not group.dirty:
                    pos = group.pos
                    if pos is None or not (lo <= pos + group.radius and pos - group.radius <= hi):
                        continue
                group.dirty = False
                found.append(group)
        return found
    todo: set[AroundGroup] = set()
    if spans:
        watch.index.crossed(spans, todo)
    for group in woken:
        # Still subscribed? (It may have been dropped and a new group made since.)
        if watch.arounds.get(group.member, {}).get(group.radius) is group:
            todo.add(group)
    for group in todo:
        group.dirty = False
    return list(todo)
