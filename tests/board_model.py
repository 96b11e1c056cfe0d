"""What a leaderboard means, written the slow obvious way: the oracle for board tests.

A board is a dict ``member -> (score, seq, metadata)`` and ``sorted()``; ``seq`` is the
model's own write counter, bumped exactly when a write changes a score, which is what
"ties=first" means. Shared by the store tests (tests/store/test_boards.py) and the HTTP
differential test (tests/service/test_http_differential.py), so both check one definition.
"""

from typing import Any


class ModelBoard:
    def __init__(self, order: str, update: str, ties: str) -> None:
        self.order, self.update, self.ties = order, update, ties
        self.entries: dict[str, tuple[int | float, int, dict | None]] = {}
        self.seq = 0

    def _key(self, member: str) -> tuple:
        score, seq, _ = self.entries[member]
        s = -score if self.order == "desc" else score
        return (s, seq, member) if self.ties == "first" else (s, member)

    def ranking(self) -> list[str]:
        return sorted(self.entries, key=self._key)

    def rank(self, member: str) -> int:
        return self.ranking().index(member) + 1

    def better(self, a: float, b: float) -> bool:
        return a > b if self.order == "desc" else a < b

    def write(self, member: str, score: int | float, meta: dict | None) -> dict[str, Any]:
        old = self.entries.get(member)
        if old is None:
            previous = None
            new = score
        else:
            previous = {"score": old[0], "rank": self.rank(member)}
            if self.update == "best":
                new = score if self.better(score, old[0]) else old[0]
            elif self.update == "latest":
                new = score
            else:
                new = old[0] + score
            if new == old[0]:
                return {
                    "member": member,
                    "score": old[0],
                    "rank": previous["rank"],
                    "previous": previous,
                    "changed": False,
                }
        self.seq += 1
        kept_meta = meta if meta is not None else (old[2] if old else None)
        self.entries[member] = (new, self.seq, kept_meta)
        return {
            "member": member,
            "score": new,
            "rank": self.rank(member),
            "previous": previous,
            "changed": True,
        }

    def delete(self, member: str) -> None:
        del self.entries[member]
        self.seq += 1

    def entry(self, member: str, rank: int) -> dict[str, Any]:
        score, _, meta = self.entries[member]
        e: dict[str, Any] = {"rank": rank, "member": member, "score": score}
        if meta is not None:
            e["metadata"] = meta
        return e

    def page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        ranking = self.ranking()
        return [
            self.entry(m, offset + i + 1) for i, m in enumerate(ranking[offset : offset + limit])
        ]

    def around(self, member: str, radius: int) -> list[dict[str, Any]]:
        pos = self.ranking().index(member)
        lo = max(0, pos - radius)
        return self.page(lo, pos + radius + 1 - lo)

    def rank_for_score(self, score: int | float) -> int:
        if self.ties == "first":
            ahead = [s for s, _, _ in self.entries.values() if not self.better(score, s)]
        else:
            ahead = [s for s, _, _ in self.entries.values() if self.better(s, score)]
        return len(ahead) + 1


class RankedModel(ModelBoard):
    """ModelBoard plus DESIGN "Ranks": ranking kinds, percentile, lookup, score ranges and
    metadata patches, each computed from its definition by brute force (O(n) or worse per call:
    fine for an oracle, and nothing shared with store/ranks.py)."""

    def __init__(self, order: str, update: str, ties: str, ranking: str = "ordinal") -> None:
        super().__init__(order, update, ties)
        self.kind = ranking

    def shown(self, member: str) -> int:
        if self.kind == "ordinal":
            return self.rank(member)
        score = self.entries[member][0]
        better = [s for s, _, _ in self.entries.values() if self.better(s, score)]
        return len(better if self.kind == "competition" else set(better)) + 1

    def write(self, member: str, score: int | float, meta: dict | None) -> dict[str, Any]:
        before = self.shown(member) if member in self.entries else None
        result = super().write(member, score, meta)
        result["rank"] = self.shown(member)
        if result["previous"] is not None:
            result["previous"] = {"score": result["previous"]["score"], "rank": before}
        return result

    def page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        return [self.entry(m, self.shown(m)) for m in self.ranking()[offset : offset + limit]]

    def rank_for_score(self, score: int | float) -> int:
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
