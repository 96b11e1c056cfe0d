"""What a leaderboard means, written the slow obvious way: the oracle for board tests.

A board is, per window, a dict ``period id -> {member -> (score, seq, metadata)}`` and
``sorted()``; ``seq`` is the model's own write counter, bumped once per write that changes a
score in any window, which is what "ties=first" means. Periods come from store/periods.py
(tested on its own against ``datetime``); everything else -- which period a write goes to,
``keep``, ``grace``, what is closed -- is spelled out here again, by brute force: every call
first drops the periods older than the current one and the ``keep`` before it, at ``now()``.
Shared by the store tests (tests/store/test_boards.py, test_windows.py) and the HTTP
differential tests (tests/contract/), so both check one definition.
"""

from collections.abc import Callable
from typing import Any

from store.periods import Period, Window, parse_period, parse_windows, period_of, recent_periods

Row = tuple[int | float, int, dict | None]


class ModelBoard:
    def __init__(
        self,
        order: str,
        update: str,
        ties: str,
        windows: list[Any] | None = None,
        *,
        reset_offset: int = 0,
        keep: int = 4,
        grace: int = 0,
        now: Callable[[], float] = lambda: 1_700_000_000.0,
    ) -> None:
        self.order, self.update, self.ties = order, update, ties
        self.windows: tuple[Window, ...] = parse_windows(windows or ["all"], reset_offset)
        self.keep, self.grace, self.now = keep, grace, now
        self.tables: dict[str, dict[str, dict[str, Row]]] = {w.name: {} for w in self.windows}
        self.seq = 0

    # -- periods ---------------------------------------------------------------------------

    def _window(self, window: str | None) -> Window:
        if window is None:
            return self.windows[0]
        return next(w for w in self.windows if w.name == window)

    def kept(self, w: Window, now: float) -> list[Period]:
        """The current period and the ``keep`` before it, newest first."""
        return recent_periods(w, now, self.keep + 1)

    def _prune(self) -> None:
        now = self.now()
        for w in self.windows:
            ids = {p.id for p in self.kept(w, now)}
            tables = self.tables[w.name]
            for pid in list(tables):
                if pid not in ids:
                    del tables[pid]

    def set_keep(self, keep: int) -> None:
        self._prune()
        self.keep = keep
        self._prune()

    def period(self, window: str | None = None, period: str | None = None) -> Period | None:
        """The period a read names, or None when the board does not keep it."""
        self._prune()
        w = self._window(window)
        kept = self.kept(w, self.now())
        current = period_of(w, self.now())
        if period in (None, "current"):
            return current
        if period == "previous":
            return kept[1] if len(kept) > 1 and current is not None else None
        p = parse_period(w, period)
        return p if p in kept else None

    def table(self, window: str | None = None, period: str | None = None) -> dict[str, Row]:
        p = self.period(window, period)
        assert p is not None, (window, period)
        return self.tables[self._window(window).name].get(p.id, {})

    @property
    def entries(self) -> dict[str, Row]:
        """The first window's current period (the board's entries on a one-window board)."""
        try:
            return self.table()
        except AssertionError:
            return {}

    # -- ranking ---------------------------------------------------------------------------

    def _key(self, table: dict[str, Row], member: str) -> tuple:
        score, seq, _ = table[member]
        s = -score if self.order == "desc" else score
        return (s, seq, member) if self.ties == "first" else (s, member)

    def ranking(self, window: str | None = None, period: str | None = None) -> list[str]:
        table = self.table(window, period)
        return sorted(table, key=lambda m: self._key(table, m))

    def rank(self, member: str, window: str | None = None, period: str | None = None) -> int:
        return self.ranking(window, period).index(member) + 1

    def better(self, a: float, b: float) -> bool:
        return a > b if self.order == "desc" else a < b

    # -- writes ----------------------------------------------------------------------------

    def write(
        self, member: str, score: int | float, meta: dict | None, at: float | None = None
    ) -> dict[str, Any]:
        self._prune()
        now = self.now()
        plans: list[tuple[Window, Period, dict[str, Row], Row | None, int | float, bool]] = []
        for w in self.windows:
            p = period_of(w, now if at is None else at)
            if p is None or p not in self.kept(w, now):
                continue
            table = self.tables[w.name].setdefault(p.id, {})
            old = table.get(member)
            if old is None:
                plans.append((w, p, table, None, score, True))
                continue
            if self.update == "best":
                new = score if self.better(score, old[0]) else old[0]
            elif self.update == "latest":
                new = score
            else:
                new = old[0] + score
            plans.append((w, p, table, old, new, new != old[0]))
        if any(plan[5] for plan in plans):
            self.seq += 1
        results: dict[str, dict[str, Any]] = {}
        for w, p, table, old, new, changed in plans:
            previous = None
            if old is not None:
                previous = {"score": old[0], "rank": self._rank_in(table, member)}
            if changed:
                kept_meta = meta if meta is not None else (old[2] if old else None)
                table[member] = (new, self.seq, kept_meta)
            results[w.name] = {
                "period": p.id,
                "score": new if changed or old is None else old[0],  # unchanged: as stored
                "rank": self._rank_in(table, member),
                "previous": previous,
                "changed": changed,
            }
        first = results.get(self.windows[0].name)
        if first is None:
            out: dict[str, Any] = {
                "member": member, "score": score, "rank": None, "previous": None, "changed": False
            }  # fmt: skip
        else:
            out = {"member": member, **{k: v for k, v in first.items() if k != "period"}}
        if len(self.windows) > 1:
            out["windows"] = results
        return out

    def _rank_in(self, table: dict[str, Row], member: str) -> int:
        return sorted(table, key=lambda m: self._key(table, m)).index(member) + 1

    def delete(self, member: str) -> bool:
        """Remove from every window's current period; False if it was in none."""
        self._prune()
        found = False
        for w in self.windows:
            p = period_of(w, self.now())
            table = self.tables[w.name].get(p.id) if p is not None else None
            if table is not None and member in table:
                del table[member]
                found = True
        if found:
            self.seq += 1
        return found

    # -- reads -----------------------------------------------------------------------------

    def entry(
        self,
        member: str,
        rank: int | None = None,
        window: str | None = None,
        period: str | None = None,
    ) -> dict[str, Any]:
        table = self.table(window, period)
        score, _, meta = table[member]
        if rank is None:
            rank = self._rank_in(table, member)
        e: dict[str, Any] = {"rank": rank, "member": member, "score": score}
        if meta is not None:
            e["metadata"] = meta
        return e

    def page(
        self, offset: int, limit: int, window: str | None = None, period: str | None = None
    ) -> list[dict[str, Any]]:
        ranking = self.ranking(window, period)
        return [
            self.entry(m, offset + i + 1, window, period)
            for i, m in enumerate(ranking[offset : offset + limit])
        ]

    def around(
        self, member: str, radius: int, window: str | None = None, period: str | None = None
    ) -> list[dict[str, Any]]:
        pos = self.ranking(window, period).index(member)
        lo = max(0, pos - radius)
        return self.page(lo, pos + radius + 1 - lo, window, period)

    def rank_for_score(
        self, score: int | float, window: str | None = None, period: str | None = None
    ) -> int:
        scores = [s for s, _, _ in self.table(window, period).values()]
        if self.ties == "first":
            ahead = [s for s in scores if not self.better(score, s)]
        else:
            ahead = [s for s in scores if self.better(s, score)]
        return len(ahead) + 1

    def periods(self, window: str | None = None) -> list[dict[str, Any]]:
        self._prune()
        w = self._window(window)
        now = self.now()
        current = period_of(w, now)
        if current is None:
            return []
        return [
            {
                "id": p.id,
                "start": p.start,
                "end": p.end,
                "size": len(self.tables[w.name].get(p.id, {})),
                "closed": p != current,
            }
            for p in self.kept(w, now)
        ]


class RankedModel(ModelBoard):
    """ModelBoard plus DESIGN "Ranks": ranking kinds, percentile, lookup, score ranges and
    metadata patches, each computed from its definition by brute force (O(n) or worse per call:
    fine for an oracle, and nothing shared with store/ranks.py)."""

    def __init__(self, order: str, update: str, ties: str, ranking: str = "ordinal") -> None:
        super().__init__(order, update, ties)
        self.kind = ranking

    @property
    def entries(self) -> dict[str, Row]:
        """The one "all" window's table (the ranked model does not combine with windows)."""
        return self.tables[self.windows[0].name].setdefault("all", {})

    def shown(self, member: str) -> int:
        if self.kind == "ordinal":
            return self.rank(member)
        score = self.entries[member][0]
        better = [s for s, _, _ in self.entries.values() if self.better(s, score)]
        return len(better if self.kind == "competition" else set(better)) + 1

    def write(
        self, member: str, score: int | float, meta: dict | None, at: float | None = None
    ) -> dict[str, Any]:
        before = self.shown(member) if member in self.entries else None
        result = super().write(member, score, meta, at)
        result["rank"] = self.shown(member)
        if result["previous"] is not None:
            result["previous"] = {"score": result["previous"]["score"], "rank": before}
        return result

    def page(
        self, offset: int, limit: int, window: str | None = None, period: str | None = None
    ) -> list[dict[str, Any]]:
        return [self.entry(m, self.shown(m)) for m in self.ranking()[offset : offset + limit]]

    def rank_for_score(
        self, score: int | float, window: str | None = None, period: str | None = None
    ) -> int:
        if self.kind == "ordinal":
            return super().rank_for_score(score)
        better = [s for s, _, _ in self.entries.values() if self.better(s, score)]
        return len(better if self.kind == "competition" else set(better)) + 1

    def member(self, member: str) -> dict[str, Any]:
        """The member answer: the entry plus its percentile."""
        mine = self.shown(member)
        others = [m for m in self.entries if m != member]
        below = sum(1 for m in others if self.shown(m) > mine)
        e = self.entry(member, mine)
        e["percentile"] = 100.0 * below / len(others) if others else 100.0
        return e

    def lookup(self, members: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        present = {m for m in members if m in self.entries}
        entries = [self.entry(m, self.shown(m)) for m in self.ranking() if m in present]
        missing: list[str] = []
        for m in members:
            if m not in self.entries and m not in missing:
                missing.append(m)
        return entries, missing

    def score_range(
        self, low: int | float, high: int | float, offset: int, limit: int
    ) -> tuple[int, list[dict[str, Any]]]:
        inside = [m for m in self.ranking() if low <= self.entries[m][0] <= high]
        return len(inside), [self.entry(m, self.shown(m)) for m in inside[offset : offset + limit]]

    def set_metadata(self, member: str, meta: dict | None) -> dict[str, Any]:
        score, seq, _ = self.entries[member]
        self.entries[member] = (score, seq, meta)
        return self.entry(member, self.shown(member))
