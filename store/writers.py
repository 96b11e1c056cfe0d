"""Who wrote a board change: the caller kind the journal records with every board write.

    kind       code  who                                              identity recorded
    unknown    0     a record written before journal v4 (or by rankd   none
                     itself, e.g. an undo)
    key        1     a holder of an API key (keys have no names: the   none (never the key)
                     key itself is a secret and is never recorded)
    player     2     a player session (service/players.py)            the session's user id
                                                                      (never the session id)
    open       3     a caller with no credential on a server with no  none
                     keys (protected mode: loopback only)

The writer is metadata: replay ignores it, so a record means the same state whoever wrote it.
"""

from typing import Literal, NamedTuple

WriterKind = Literal["unknown", "key", "player", "open"]

KINDS: tuple[WriterKind, ...] = ("unknown", "key", "player", "open")
CODE: dict[WriterKind, int] = {kind: code for code, kind in enumerate(KINDS)}
PLAYER_CODE = CODE["player"]


class Writer(NamedTuple):
    """A board write's author: ``kind`` and, for a player only, its user id."""

    kind: WriterKind
    user: str | None = None

    @staticmethod
    def player(user: str) -> "Writer":
        return Writer("player", user)

    def row(self) -> tuple[int] | tuple[int, str]:
        """The journal's encoding: (code,) or, for a player, (code, user)."""
        if self.user is not None:
            return (CODE[self.kind], self.user)
        return (CODE[self.kind],)

    @staticmethod
    def from_row(row: list[object]) -> "Writer":
        """Decode ``row()``; ValueError for anything else."""
        if not row or type(row[0]) is not int or not 0 <= row[0] < len(KINDS):
            raise ValueError(f"malformed writer {row!r:.80}")
        kind = KINDS[row[0]]
        if kind == "player":
            if len(row) != 2 or type(row[1]) is not str:
                raise ValueError(f"a player writer needs its user id, got {row!r:.80}")
            return Writer("player", row[1])
        if len(row) != 1:
            raise ValueError(f"writer {kind!r} carries no identity, got {row!r:.80}")
        return Writer(kind)


UNKNOWN = Writer("unknown")
KEY = Writer("key")
OPEN = Writer("open")
