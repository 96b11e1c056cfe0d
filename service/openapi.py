"""The OpenAPI 3.1 document for every HTTP route: bodies from ``service.schemas``, the
per-route parts (summary, parameters, answers) written here as data.

Hand-written rather than generated from handlers because the handlers parse bodies themselves
(for speed and strictness) and carry no schema annotations. What can be derived is derived, in
``_name_operations``, so a new route gets it without a line here:

* ``operationId`` = the handler's name (``routes_boards.top`` -> ``top``): unique because a
  clash refuses to build the document (and so fails every test that serves it);
* ``tags`` = the route module without ``routes_`` (``boards``, ``sessions``, ``admin``), each
  described by the first line of its module docstring.

Generators build their names from these: openapi-python-client emits
``api/boards/top.py``. Tests check that every route in ``service.app.SPECS`` appears here with
its method, that the document validates against the OpenAPI 3.1 schema, that each TypedDict in
``schemas.TYPED`` agrees with its component, that schemathesis finds every live answer
described, and that openapi-python-client generates a client from the served document with no
warning and no route or model left out (tests/service/test_openapi_generate.py).

Scores are JSON numbers of magnitude below 2**63; timestamps are Unix epoch seconds (numbers).
"""

import copy
import sys
from collections.abc import Callable, Iterable
from functools import cache
from importlib.metadata import version
from typing import Any

import orjson

from service.http import RouteSpec
from service.live import live_page
from service.schemas import MEMBER as _MEMBER
from service.schemas import SCHEMAS, Schema
from service.schemas import SCORE as _SCORE
from service.schemas import ref as _ref

_PROBLEM = "application/problem+json"
_JSON = "application/json"


_ERRORS = {
    "400": "Invalid input: malformed JSON, wrong type, out-of-range value, unknown field.",
    "401": "Missing or invalid API key or player session (only when keys are configured); "
    "no credential on a board that is not public_read.",
    "403": "The API key lacks the scope this route needs, a player session may not do this "
    "(another member, a board without player_writes, another session), or the browser rules "
    "refuse the request: a foreign Origin on a write, a non-loopback Host without keys.",
    "404": "No such board, member, session or route.",
    "405": "Method not allowed on this path.",
    "409": "Conflicts with current state (order change on a non-empty board).",
    "410": "That caller-chosen session id ended (deleted, expired, rotated, revoked or evicted) "
    "within --session-max-ttl: it is never used again. Choose a new id.",
    "412": "If-Match or If-None-Match is false for the session's current version "
    "(with If-None-Match: *, a session has that id).",
    "413": "Request body or batch over its limit.",
    "415": "A request body sent with a Content-Type other than application/json (or +json).",
    "429": "A player wrote more than the board's player_rate this minute (see Retry-After), "
    "or the user already holds --sessions-per-user sessions and --sessions-over-limit is "
    "refuse (with evict-oldest, the default, their oldest session ends instead).",
    "503": "Not ready yet (recovering), persistence refuses writes, or out of memory.",
    "507": "The data may not grow: over --max-memory, --max-boards or "
    "--max-anonymous-sessions. Reads and deletes still work.",
}


def _problem(code: str) -> Schema:
    return {"description": _ERRORS[code], "content": {_PROBLEM: {"schema": _ref("Problem")}}}


def _json(schema_name: str, description: str, headers: dict[str, Schema] | None = None) -> Schema:
    out: Schema = {"description": description, "content": {_JSON: {"schema": _ref(schema_name)}}}
    if headers:
        out["headers"] = headers
    return out


def _header(description: str) -> Schema:
    return {"description": description, "schema": {"type": "string"}}


_ETAG = {"ETag": _header('The session version, quoted: "3".')}
_LOCATION = {"Location": _header("Path of the created resource.")}


def _param(name: str, where: str, schema: Schema, required: bool = False, doc: str = "") -> Schema:
    p: Schema = {"name": name, "in": where, "required": required or where == "path"}
    p["schema"] = schema
    if doc:
        p["description"] = doc
    return p


_BOARD = _param("board", "path", {"type": "string", "pattern": "^[A-Za-z0-9_.\\-]{1,64}$"})
_MEMBER_P = _param("member", "path", _MEMBER)
_SID = _param("id", "path", {"type": "string", "minLength": 1, "maxLength": 256})
_USER = _param("user", "path", {"type": "string", "minLength": 1, "maxLength": 256})
_OFFSET = _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1})


def _limit(default: int) -> Schema:
    return _param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": 1000},
        doc=f"{default} if absent",
    )


_ETAG_LIST = '^(\\*|(W/)?"?[0-9]{1,18}"?( *, *(W/)?"?[0-9]{1,18}"?)*)$'
_IF_MATCH = _param(
    "If-Match",
    "header",
    {"type": "string", "pattern": _ETAG_LIST},
    doc='ETags of the version to change: "3" (or bare 3), a list, or *; W/ never matches.',
)
_IF_NONE_MATCH = _param(
    "If-None-Match",
    "header",
    {"type": "string", "pattern": _ETAG_LIST},
    doc="* or ETags the session must not be at (412 if it is).",
)


def _op(
    summary: str,
    ok: dict[str, Schema],
    scope: str | None,
    params: list[Schema] | None = None,
    body: str | None = None,
    body_required: bool = True,
    errors: tuple[str, ...] = ("400", "404"),
    player: str = "",
    public: bool = False,
) -> Schema:
    """``player``: what a player session may do here (a sentence), "" for nothing;
    ``public``: served with no credential on a ``public_read`` board."""
    op: Schema = {"summary": summary, "responses": dict(ok)}
    if scope is not None:
        security: list[Schema] = [{"bearer": []}]
        description = f"Needs an API key with the `{scope}` scope (or `admin`)"
        if player:
            security.append({"session": []})
            description += f", or a player session: {player}"
        if public:
            security.append({})
            description += "; on a `public_read` board no credential at all"
        op["security"] = security
        op["description"] = description + "."
        errors = (*errors, "401", "403")
    if body is not None:
        errors = (*errors, "415")
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {
            "required": body_required,
            "content": {_JSON: {"schema": _ref(body)}},
        }
    for code in sorted(set(errors)):
        op["responses"][code] = _problem(code)
    return op


_V1 = ("400", "404", "503")  # every gated /v1 route may answer these
_W = (*_V1, "413", "507")  # writes that add data


def _body(schema: Schema) -> dict[str, Schema]:
    return {_JSON: {"schema": schema}}


def _content(media: str, description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {media: {"schema": schema}}}


_NO_CONTENT = {"204": {"description": "Done."}}
_READS = "every board"
_OWN_ENTRY = (
    "its own entry only (`member` absent or the session's user), on boards with "
    "`player_writes`, at most `player_rate` writes a minute (429 + Retry-After past it)"
)
_OWN_SESSION = "its own session only"
_SESSION = {"200": _json("Session", "The session.", _ETAG)}
_RADIUS = _param("radius", "query", {"type": "integer", "minimum": 0, "maximum": 100}, doc="5")
_TOUCH = _param("touch", "query", {"type": "boolean"}, doc="false: read without refreshing")
_EXCEPT = _param("except", "query", {"type": "string"}, doc="a session id to keep")
_SCORE_Q = _param("score", "query", _SCORE, required=True)
_WINDOW = _param("window", "query", {"type": "string"}, doc="the board's first window")
_PERIOD = _param("period", "query", {"type": "string"}, doc="current (or previous, or a period id)")
_PERIOD_Q = [_WINDOW, _PERIOD]
_MIN = _param("min", "query", _SCORE, doc="lowest score included (absent: no bound)")
_MAX = _param("max", "query", _SCORE, doc="highest score included (absent: no bound)")
_BATCH = {"type": "array", "maxItems": 1000, "items": _ref("ScoreWrite")}
_RESULTS = {"type": "array", "items": _ref("WriteResult")}


def _paths() -> dict[str, Schema]:
    b = "/v1/boards/{board}"
    m = b + "/members/{member}"
    s = "/v1/sessions/{id}"
    u = "/v1/users/{user}/sessions"
    conflict = (*_W, "409")
    conditional = (*_W, "412")
    batch = _op("Write scores in order, all or nothing", {}, "write", errors=(*_W, "415"))
    batch["requestBody"] = {"required": True, "content": _body(_BATCH)}
    batch["responses"]["200"] = _content(_JSON, "Write results, in request order.", _RESULTS)
    created = {**_ETAG, **_LOCATION}
    put = _op(
        "Replace data; with If-None-Match: * create under this id", _SESSION, "sessions",
        [_IF_MATCH, _IF_NONE_MATCH], body="SessionDataWrite", errors=(*conditional, "410", "429"),
    )  # fmt: skip
    put["description"] += (
        " With `If-None-Match: *` (and no If-Match) the request creates a session with the"
        " caller-chosen id (32-128 characters of A-Z a-z 0-9 _ -) and a SessionCreate body:"
        " 201; 412 if it exists; 410 if that id ended recently. Otherwise it replaces `data`"
        " (SessionDataWrite body) under the If-Match rule."
    )
    put["requestBody"]["content"][_JSON]["schema"] = {
        "anyOf": [_ref("SessionDataWrite"), _ref("SessionCreate")]
    }
    put["responses"]["201"] = _json("Session", "Created under the caller's id.", created)
    # fmt: off
    ops: list[tuple[str, str, list[Schema], Schema]] = [
        ("/v1/boards", "get", [], _op(
            "List boards by name", {"200": _json("BoardList", "A page.")}, "read",
            [_OFFSET, _limit(100)], errors=_V1, player=_READS)),
        (b, "put", [_BOARD], _op(
            "Create or reconfigure a board",
            {"200": _json("Board", "Reconfigured."), "201": _json("Board", "Created.", _LOCATION)},
            "write", body="BoardOptions", body_required=False, errors=conflict)),
        (b, "get", [_BOARD], _op(
            "Describe a board", {"200": _json("Board", "The board.")}, "read", errors=_V1,
            player=_READS, public=True)),
        (b, "delete", [_BOARD], _op("Drop a board", _NO_CONTENT, "write", errors=_V1)),
        (b + "/scores", "post", [_BOARD], _op(
            "Write a score", {"200": _json("WriteResult", "The write result.")}, "write",
            body="ScoreWrite", errors=(*_W, "429"), player=_OWN_ENTRY)),
        (b + "/scores:batch", "post", [_BOARD], batch),
        (b + "/top", "get", [_BOARD], _op(
            "A page of the ranking", {"200": _json("Page", "Entries by rank.")}, "read",
            [_OFFSET, _limit(10), *_PERIOD_Q], errors=_V1, player=_READS, public=True)),
        (b + "/rank", "get", [_BOARD], _op(
            "The rank a new score would get now", {"200": _json("RankAnswer", "The rank.")},
            "read", [_SCORE_Q, *_PERIOD_Q], errors=_V1, player=_READS, public=True)),
        (b + "/periods", "get", [_BOARD], _op(
            "A window's kept periods, newest first",
            {"200": _json("PeriodList", "The current period and the closed ones kept.")},
            "read", [_WINDOW], errors=_V1, player=_READS, public=True)),
        (m, "get", [_BOARD, _MEMBER_P], _op(
            "One member's entry", {"200": _json("MemberEntry", "The entry and its percentile.")},
            "read", _PERIOD_Q, errors=_V1, player=_READS, public=True)),
        (m, "patch", [_BOARD, _MEMBER_P], _op(
            "Replace or clear a member's metadata (the score stays)",
            {"200": _json("Entry", "The entry.")}, "write", body="MetadataPatch", errors=_W)),
        (b + "/members:lookup", "post", [_BOARD], _op(
            "Entries of up to 1000 members (a friends list), with board-wide ranks",
            {"200": _json("LookupResult", "Found entries in board order, and the missing.")},
            "read", body="Lookup", errors=_V1, player=_READS, public=True)),
        (b + "/scores", "get", [_BOARD], _op(
            "Entries whose score lies in [min, max], in board order",
            {"200": _json("ScoreRange", "A page of the range and its size.")}, "read",
            [_MIN, _MAX, _OFFSET, _limit(10)], errors=_V1, player=_READS, public=True)),
        (m, "delete", [_BOARD, _MEMBER_P], _op(
            "Remove a member", _NO_CONTENT, "write", errors=_V1)),
        (m + "/around", "get", [_BOARD, _MEMBER_P], _op(
            "Entries around a member", {"200": _json("Page", "Up to radius each side.")},
            "read", [_RADIUS, *_PERIOD_Q], errors=_V1, player=_READS, public=True)),
        ("/v1/sessions", "post", [], _op(
            "Create a session", {"201": _json("Session", "Created.", created)}, "sessions",
            body="SessionCreate", body_required=False, errors=(*_W, "429"))),
        (s, "get", [_SID], _op(
            "Read a session (refreshes it unless touch=false)", _SESSION, "sessions",
            [_TOUCH], errors=_V1, player=_OWN_SESSION)),
        (s, "patch", [_SID], _op(
            "Merge into data (null deletes a key)", _SESSION, "sessions",
            [_IF_MATCH, _IF_NONE_MATCH], body="SessionDataWrite", errors=conditional)),
        (s, "put", [_SID], put),
        (s, "delete", [_SID], _op(
            "Delete a session", _NO_CONTENT, "sessions", errors=_V1, player=_OWN_SESSION)),
        (s + "/touch", "post", [_SID], _op(
            "Refresh the idle deadline", _SESSION, "sessions", errors=_V1,
            player=_OWN_SESSION)),
        (s + "/rotate", "post", [_SID], _op(
            "Move to a new id; the old one dies",
            {"200": _json("Session", "Under its new id.", created)}, "sessions", errors=_V1,
            player=_OWN_SESSION)),
        (u, "get", [_USER], _op(
            "A user's live sessions", {"200": _json("UserSessions", "Oldest first.")},
            "sessions", errors=_V1)),
        (u, "delete", [_USER], _op(
            "Revoke a user's sessions", {"200": _json("Revoked", "How many.")}, "sessions",
            [_EXCEPT], errors=_V1)),
        ("/v1/admin/snapshot", "post", [], _op(
            "Take a snapshot now", {"200": _json("SnapshotReport", "What was written.")},
            "admin", errors=("503",))),
        ("/healthz", "get", [], _op(
            "Liveness", {"200": _json("Status", "The process runs.")}, None, errors=("403",))),
        ("/readyz", "get", [], _op(
            "Readiness", {"200": _json("Status", "Recovery done.")}, None,
            errors=("403", "503"))),
        ("/metrics", "get", [], _op(
            "Prometheus metrics",
            {"200": _content("text/plain", "Text exposition format.", {"type": "string"})},
            "metrics", errors=())),
        ("/openapi.json", "get", [], _op(
            "This document", {"200": _content(_JSON, "OpenAPI 3.1.", {"type": "object"})},
            None, errors=("403",))),
        ("/asyncapi.json", "get", [], _op(
            "The WebSocket protocol (/v1/ws): every frame as JSON Schema",
            {"200": _content(_JSON, "AsyncAPI 3.0.", {"type": "object"})}, None,
            errors=("403",))),
        ("/", "get", [], _op(
            "Live leaderboard page; its data comes over the /v1/ws WebSocket",
            {"200": _content("text/html", "HTML.", {"type": "string"})}, None, errors=())),
    ]
    # fmt: on
    paths: dict[str, Schema] = {}
    for path, method, params, op in ops:
        item = paths.setdefault(path, {})
        if params:
            item["parameters"] = params
        item[method] = op
    return paths


def _handlers(specs: Iterable[RouteSpec]) -> dict[tuple[str, str], Callable[..., Any]]:
    """(path, lower-case method) -> the function that answers it."""
    found: dict[tuple[str, str], Callable[..., Any]] = {("/", "get"): live_page}
    for spec in specs:
        found[(spec.path, spec.method.lower())] = spec.handler
    return found


def _tag(handler: Callable[..., Any]) -> tuple[str, str]:
    """The tag of a handler's module (``service.routes_boards`` -> ``boards``) and its
    description, the module docstring's first sentence."""
    module = handler.__module__
    name = module.rpartition(".")[2].removeprefix("routes_")
    doc = (sys.modules[module].__doc__ or name).strip()
    return name, doc.split("\n\n", 1)[0].split(". ", 1)[0].replace("\n", " ").rstrip(".")


def _name_operations(paths: dict[str, Schema], specs: Iterable[RouteSpec]) -> list[Schema]:
    """Give every operation its ``operationId`` and ``tags``; answer the top-level tag list."""
    handlers = _handlers(specs)
    seen: dict[str, tuple[str, str]] = {}
    tags: dict[str, str] = {}
    for path, item in paths.items():
        for method, op in item.items():
            if method == "parameters":
                continue
            handler = handlers.get((path, method))
            if handler is None:
                raise ValueError(f"{method.upper()} {path} is documented but not routed")
            op_id = handler.__name__
            if op_id in seen and seen[op_id] != (path, method):
                other = seen[op_id]
                raise ValueError(
                    f"operationId {op_id!r} would name both {method.upper()} {path} and "
                    f"{other[1].upper()} {other[0]}: rename one handler"
                )
            seen[op_id] = (path, method)
            tag, description = _tag(handler)
            tags[tag] = description
            op["operationId"] = op_id
            op["tags"] = [tag]
    return [{"name": name, "description": tags[name]} for name in sorted(tags)]


def document(specs: Iterable[RouteSpec]) -> Schema:
    """The document of the app that serves ``specs`` (``service.app.SPECS``)."""
    paths = _paths()
    tags = _name_operations(paths, specs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rankd",
            "version": version("rankd"),
            "description": "Real-time leaderboards and sessions. Errors are "
            "application/problem+json (RFC 9457); timestamps are Unix epoch seconds. "
            "The WebSocket protocol (/v1/ws) is described by the AsyncAPI document at "
            "/asyncapi.json.",
        },
        "servers": [
            {"url": "/", "description": "The rankd that served this document."},
            {
                "url": "{scheme}://{host}:{port}",
                "description": "Any rankd: `rankd` listens on 127.0.0.1:8000 by default.",
                "variables": {
                    "scheme": {"enum": ["http", "https"], "default": "http"},
                    "host": {"default": "127.0.0.1"},
                    "port": {"default": "8000"},
                },
            },
        ],
        "tags": tags,
        "paths": paths,
        "components": {
            # A copy: a caller editing the document must not edit the routes' field sets.
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."},
                "session": {
                    "type": "http",
                    "scheme": "Session",
                    "description": "A player: `Authorization: Session <id>` with the id of a "
                    'session a game backend created with `{"user": "<member id>"}`.',
                },
            },
        },
    }


@cache
def document_bytes(specs: tuple[RouteSpec, ...]) -> bytes:
    return orjson.dumps(document(specs))
