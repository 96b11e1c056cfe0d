"""Players and public boards: the two credentials that are not API keys.

A game's backend authenticates a player its own way, creates a rankd session for them
(``POST /v1/sessions {"user": "<member id>"}`` with a ``sessions`` key) and hands the id to the
game client. The client sends ``Authorization: Session <id>`` (on ``/v1/ws`` also ``?session=``)
and is a *player* whose identity is the session's ``user``:

    route                                         a player may
    every read of a board (GET, members:lookup)   yes, on every board
    POST /v1/boards/{board}/scores, WS score      its own entry only (``member`` absent or its
                                                  user, else 403), on boards with
                                                  ``player_writes`` (else 403), at most
                                                  ``player_rate`` writes a minute (else 429)
    GET, DELETE /v1/sessions/{id},                its own session only (else 403): a game
    POST .../touch, POST .../rotate               client can keep, renew and end its login
    anything else                                 403: batches, deletes, board config, other
                                                  sessions, users, metrics, admin

A board with ``public_read`` serves its reads (every READ route naming ``{board}``) and WebSocket
subscriptions to requests with no credential at all. Any other route without a credential, or a
private or absent board, is the usual 401 (an absent board answers like a private one, so an
anonymous caller cannot probe which boards exist). ``GET /v1/boards`` stays keyed: public
boards are read by name, and listing only the public ones would make every anonymous page a
scan of all boards.

Using a session as a credential never refreshes it (``touch=False``): a spectator's reads or a
flood of writes must not keep a session alive past the idle deadline its backend chose, and a
refresh per request would be a journal record per read. A client keeps its session alive with
``GET /v1/sessions/{id}`` or ``POST /v1/sessions/{id}/touch``, which it may call.

Rate: one GCRA cell (Generic Cell Rate Algorithm, the token bucket stored as one number) per
(board, member): the "theoretical arrival time" ``tat``. With ``r`` writes a minute, each
write pushes ``tat`` by ``60 / r`` seconds, and a write is refused while ``tat`` would end
more than 60 s ahead of now -- so a member may burst ``r`` writes, then one every ``60 / r`` s.
A cell whose ``tat`` has passed equals an absent one, so cells are dropped as soon as they
expire (checked at the least recently written end on each write), and at most
``MAX_CELLS`` are kept: past that the least recently written cell is forgotten (that member's
next write is judged as its first). Every write that passes the ownership and board checks
counts, even if the store then refuses it (a bad score): probing costs the same as writing.
The limiter is per process: with the redis backend each rankd instance counts on its own.

Who wrote: a player's write carries ``Writer.player(user)`` (store/writers.py) down to the
backend -- the gate puts it in the request's scope under ``WRITER``, the WebSocket passes it
-- and the embedded journal records it with the write: the user id, never the session id.
A key holder's write is ``KEY`` (keys have no names, and a key is never recorded), a write
to a server without keys ``OPEN``.

A session id is a credential: it is never logged, never in an error detail, and the one
comparison made here (a path's id against the player's own) is between SHA-256 digests with
``hmac.compare_digest``, as service/auth.py compares keys.
"""

import hashlib
import hmac
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from service.backend.api import Backend
from service.errors import Problem
from store.errors import BoardNotFound, StoreError
from store.show import show
from store.writers import KEY, OPEN, Writer

MAX_CELLS = 65_536  # ~300 bytes a cell with 15-char names (tracemalloc): ~20 MiB at most
SESSION_SCHEME = "session "
_SESSION_REALM = 'Session realm="rankd"'
_BEARER_REALM = 'Bearer realm="rankd"'
# rankd's own ids are 43 URL-safe characters; caller-chosen ones 32-128 of [A-Za-z0-9_-].
_SESSION_ID = re.compile(r"[A-Za-z0-9_.\-]{1,256}")  # "." : the redis backend's T.R ids
MISSING = object()  # a write without 'member': a player's own
WRITER = "rankd.writer"  # ASGI scope key: the Writer of a player's request (service/gate.py)


class Player(NamedTuple):
    sid: str
    user: str
    expires_at: float = 0.0  # when the session ends unless used (a WebSocket watches it)


def writer_of(scope: Mapping[str, Any], keyed: bool) -> Writer:
    """Who makes a request's write: the player the gate found, else a key holder, or with no
    keys configured (``keyed`` false) a caller without a credential."""
    writer: Writer | None = scope.get(WRITER)
    if writer is not None:
        return writer
    return KEY if keyed else OPEN


def is_session(header: str) -> bool:
    """An ``Authorization`` value in the ``Session`` scheme (case-insensitive, as RFC 9110)."""
    return header[:8].lower() == SESSION_SCHEME


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def same_session(a: str, b: str) -> bool:
    return hmac.compare_digest(_digest(a), _digest(b))


def unauthorized_session() -> Problem:
    # Never the id: it is a credential, and this body ends up in bug reports.
    return Problem(
        401,
        "unauthorized",
        "the player session is not valid: it never existed, expired, was ended, "
        "or has no user; ask the game backend for a new one",
        {"WWW-Authenticate": f'{_SESSION_REALM}, error="invalid_token"'},
    )


def forbidden(detail: str) -> Problem:
    return Problem(
        403,
        "forbidden",
        detail,
        {"WWW-Authenticate": f'{_SESSION_REALM}, error="insufficient_scope"'},
    )


def anonymous() -> Problem:
    """The 401 of a request with no credential on a board that is not public (or absent)."""
    return Problem(
        401,
        "unauthorized",
        "this board is not public: send 'Authorization: Bearer <key>' or "
        "'Authorization: Session <id>'",
        {"WWW-Authenticate": _BEARER_REALM},
    )


class RateLimiter:
    """Per-key GCRA with bounded memory; ``take`` answers 0.0 (allowed) or seconds to wait."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_cells: int = MAX_CELLS
    ) -> None:
        self._clock = clock
        self._max = max_cells
        self._tat: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tat)

    def take(self, key: tuple[str, str], per_minute: int) -> float:
        """Runtime complexity: O(1) amortised (each cell is dropped once)."""
        now = self._clock()
        cells = self._tat
        tat = max(cells.get(key, now), now) + 60.0 / per_minute
        if tat - now > 60.0:
            return tat - now - 60.0
        cells[key] = tat
        cells.move_to_end(key)
        # Expired cells sit at the least recently written end: drop them there, a few per
        # write, so an idle limiter shrinks without a background task.
        for _ in range(2):
            oldest = next(iter(cells))
            if cells[oldest] > now:
                break
            del cells[oldest]
        if len(cells) > self._max:
            cells.popitem(last=False)
        return 0.0

    def _check(self) -> None:
        assert len(self._tat) <= self._max
        assert all(v > 0 for v in self._tat.values())


class Players:
    """Session credentials and board policies; shared by HTTP routes and ``/v1/ws``."""

    def __init__(self, backend: Backend, limiter: RateLimiter | None = None) -> None:
        self._backend = backend
        self.limiter = limiter or RateLimiter()

    async def authenticate(self, sid: str) -> Player:
        """The player a session id stands for, or a 401 Problem. Never refreshes it."""
        if not _SESSION_ID.fullmatch(sid):
            raise unauthorized_session()
        try:
            session = await self._backend.sessions.get(sid, touch=False)
        except StoreError:
            raise unauthorized_session() from None
        user = session["user"]
        if user is None:
            raise unauthorized_session()
        return Player(sid, user, float(session["expires_at"]))

    async def from_header(self, header: str) -> Player:
        return await self.authenticate(header[len(SESSION_SCHEME) :].strip())

    async def is_public(self, board: str) -> bool:
        try:
            info = await self._backend.boards.describe(board)
        except StoreError:
            return False  # absent (or a bad name): answered like a private board
        return info["public_read"]

    async def authorize_write(self, player: Player, board: str, member: object) -> str:
        """The member a player's write goes to, after ownership, board policy and rate."""
        if member is not MISSING and member != player.user:
            raise forbidden(
                f"a player may write only its own entry: 'member' must be absent or "
                f"{show(player.user)}, but got {show(member)}"
            )
        try:
            info = await self._backend.boards.describe(board)
        except BoardNotFound:
            info = None  # the write would create it with defaults: player_writes false
        if info is None or not info["player_writes"]:
            raise forbidden(
                f"board {show(board)} does not take player writes; a key with the 'write' "
                'scope can turn them on: PUT the board with {"player_writes": true}'
            )
        wait = self.limiter.take((board, player.user), info["player_rate"])
        if wait:
            seconds = max(1, math.ceil(wait))
            raise Problem(
                429,
                "too-many-requests",
                f"at most {info['player_rate']} player writes per minute on board "
                f"{show(board)}; retry in {seconds} s",
                {"Retry-After": str(seconds)},
            )
        return player.user
