"""The wrapper's auth step for keyed routes: API keys, player sessions, public boards.

service/players.py holds the rules (who a session is, what a player may write, which boards
are public); this module applies them to one HTTP route, built once per route at start-up.
"""

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from service.access import AUTH
from service.auth import READ, Auth
from service.http import RouteSpec, parse_json, read_body
from service.players import (
    MISSING,
    WRITER,
    Player,
    Players,
    anonymous,
    forbidden,
    is_session,
    same_session,
)
from store.writers import Writer

# What a player may do on a route besides reading (every READ route is open to players).
_SCORE = ("POST", "/v1/boards/{board}/scores")
_OWN_SESSION = frozenset(
    {
        ("GET", "/v1/sessions/{id}"),
        ("POST", "/v1/sessions/{id}/touch"),
        ("POST", "/v1/sessions/{id}/rotate"),
        ("DELETE", "/v1/sessions/{id}"),
    }
)


class Gate:
    """Who may call one keyed route: key holders (service/auth.py), players, and on a public
    board's reads anyone. Built once per route; ``check`` runs before the readiness gate (a
    key needs no data), ``serve`` after it (a session or a board policy does)."""

    __slots__ = (
        "auth",
        "body_bytes",
        "call",
        "kind",
        "players",
        "public",
        "scope",
        "where",
    )

    def __init__(self, auth: Auth, players: Players, spec: RouteSpec, body_bytes: int) -> None:
        assert spec.scope is not None
        self.auth = auth
        self.players = players
        self.body_bytes = body_bytes
        self.scope = spec.scope
        # The route's handler with its dependencies, bound by service/app.py (_bound).
        self.call: Callable[[Request], Awaitable[Response]] = spec.handler
        self.where = f"{spec.method} {spec.path}"
        route = (spec.method, spec.path)
        self.public = spec.scope == READ and "{board}" in spec.path
        if spec.scope == READ:
            self.kind = "read"
        elif route == _SCORE:
            self.kind = "score"
        elif route in _OWN_SESSION:
            self.kind = "own-session"
        else:
            self.kind = ""

    def check(self, request: Request) -> str | None:
        """None when a key with the scope was sent; else what ``serve`` must judge: the
        ``Authorization`` value of a player, or "" (no credential on a public-capable read).
        A bad or insufficient key raises its 401/403 here."""
        header = request.headers.get("authorization")
        if header is not None and is_session(header):
            return header
        if header is None and self.public:
            return ""
        # Who it was, for the access log and the writer metric (never the key: its scopes).
        request.scope[AUTH] = self.auth.label(self.auth.check_header(header, self.scope))
        return None

    async def serve(self, pending: str, request: Request) -> Response:
        if not pending:
            if not await self.players.is_public(request.path_params["board"]):
                raise anonymous()
            request.scope[AUTH] = "anonymous"
            return await self.call(request)
        player = await self.players.from_header(pending)
        request.scope[AUTH] = "player"  # never the session id
        kind = self.kind
        if kind == "read":
            return await self.call(request)
        if kind == "score":
            return await self._score(request, player)
        if kind == "own-session":
            if same_session(request.path_params["id"], player.sid):
                return await self.call(request)
            raise forbidden("a player session may read, touch, rotate or delete only itself")
        raise forbidden(
            f"a player session may not call {self.where}: players read boards, write their "
            "own score and read, touch, rotate or delete their own session; the rest needs an "
            "API key"
        )

    async def _score(self, request: Request, player: Player) -> Response:
        """POST /v1/boards/{board}/scores by a player: policy first, then the normal route.

        The body is read here (bounded as the route reads it), checked, and given to the
        route's own handler as if it had just arrived -- with ``member`` filled in when absent
        -- so a player's write takes exactly the key holder's path from there on.
        """
        raw = await read_body(request, self.body_bytes)
        body = parse_json(raw)
        if type(body) is dict:
            member = body.get("member", MISSING)
            await self.players.authorize_write(player, request.path_params["board"], member)
            if member is MISSING:
                body["member"] = player.user
                raw = orjson.dumps(body)
        request.scope[WRITER] = Writer.player(player.user)  # the journal's "who wrote"
        # Anything else is malformed: the handler answers its precise 400.
        return await self.call(Request(request.scope, _replay(raw)))


def _replay(body: bytes) -> Callable[[], Awaitable[Message]]:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
