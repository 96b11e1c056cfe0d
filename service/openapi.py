"""The OpenAPI 3.1 document for every HTTP route, written by hand as data.

Hand-written rather than generated from handlers because the handlers parse bodies themselves
(for speed and strictness) and carry no schema annotations. A test checks that every route in
``service.app.SPECS`` appears here with its method, that the document validates against the
OpenAPI 3.1 schema, and schemathesis checks live answers against it.

Scores are JSON numbers of magnitude below 2**63; timestamps are Unix epoch seconds (numbers).
"""

from functools import cache

import orjson

from service.schemas import MEMBER as _MEMBER
from service.schemas import SCHEMAS, Schema
from service.schemas import SCORE as _SCORE
from service.schemas import ref as _ref

_PROBLEM = "application/problem+json"
_JSON = "application/json"


_ERRORS = {
    "400": "Invalid input: malformed JSON, wrong type, out-of-range value, unknown field.",
    "401": "Missing or invalid API key (only when keys are configured).",
    "403": "The API key lacks the scope this route needs, or the browser rules refuse the "
    "request: a foreign Origin on a write, a non-loopback Host without keys.",
    "404": "No such board, member, session or route.",
    "405": "Method not allowed on this path.",
    "409": "Conflicts with current state (order change on a non-empty board).",
    "412": "If-Match or If-None-Match is false for the session's current version.",
    "413": "Request body or batch over its limit.",
    "415": "A request body sent with a Content-Type other than application/json (or +json).",
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
) -> Schema:
    op: Schema = {"summary": summary, "responses": dict(ok)}
    if scope is not None:
        op["security"] = [{"bearer": []}]
        op["description"] = f"Needs an API key with the `{scope}` scope (or `admin`)."
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
_SESSION = {"200": _json("Session", "The session.", _ETAG)}
_RADIUS = _param("radius", "query", {"type": "integer", "minimum": 0, "maximum": 100}, doc="5")
_TOUCH = _param("touch", "query", {"type": "boolean"}, doc="false: read without refreshing")
_EXCEPT = _param("except", "query", {"type": "string"}, doc="a session id to keep")
_SCORE_Q = _param("score", "query", _SCORE, required=True)
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
    # fmt: off
    ops: list[tuple[str, str, list[Schema], Schema]] = [
        ("/v1/boards", "get", [], _op(
            "List boards by name", {"200": _json("BoardList", "A page.")}, "read",
            [_OFFSET, _limit(100)], errors=_V1)),
        (b, "put", [_BOARD], _op(
            "Create or reconfigure a board",
            {"200": _json("Board", "Reconfigured."), "201": _json("Board", "Created.", _LOCATION)},
            "write", body="BoardOptions", body_required=False, errors=conflict)),
        (b, "get", [_BOARD], _op(
            "Describe a board", {"200": _json("Board", "The board.")}, "read", errors=_V1)),
        (b, "delete", [_BOARD], _op("Drop a board", _NO_CONTENT, "write", errors=_V1)),
        (b + "/scores", "post", [_BOARD], _op(
            "Write a score", {"200": _json("WriteResult", "The write result.")}, "write",
            body="ScoreWrite", errors=_W)),
        (b + "/scores:batch", "post", [_BOARD], batch),
        (b + "/top", "get", [_BOARD], _op(
            "A page of the ranking", {"200": _json("Page", "Entries by rank.")}, "read",
            [_OFFSET, _limit(10)], errors=_V1)),
        (b + "/rank", "get", [_BOARD], _op(
            "The rank a new score would get now", {"200": _json("RankAnswer", "The rank.")},
            "read", [_SCORE_Q], errors=_V1)),
        (m, "get", [_BOARD, _MEMBER_P], _op(
            "One member's entry", {"200": _json("MemberEntry", "The entry and its percentile.")},
            "read", errors=_V1)),
        (m, "patch", [_BOARD, _MEMBER_P], _op(
            "Replace or clear a member's metadata (the score stays)",
            {"200": _json("Entry", "The entry.")}, "write", body="MetadataPatch", errors=_W)),
        (b + "/members:lookup", "post", [_BOARD], _op(
            "Entries of up to 1000 members (a friends list), with board-wide ranks",
            {"200": _json("LookupResult", "Found entries in board order, and the missing.")},
            "read", body="Lookup", errors=_V1)),
        (b + "/scores", "get", [_BOARD], _op(
            "Entries whose score lies in [min, max], in board order",
            {"200": _json("ScoreRange", "A page of the range and its size.")}, "read",
            [_MIN, _MAX, _OFFSET, _limit(10)], errors=_V1)),
        (m, "delete", [_BOARD, _MEMBER_P], _op(
            "Remove a member", _NO_CONTENT, "write", errors=_V1)),
        (m + "/around", "get", [_BOARD, _MEMBER_P], _op(
            "Entries around a member", {"200": _json("Page", "Up to radius each side.")},
            "read", [_RADIUS], errors=_V1)),
        ("/v1/sessions", "post", [], _op(
            "Create a session", {"201": _json("Session", "Created.", created)}, "sessions",
            body="SessionCreate", body_required=False, errors=_W)),
        (s, "get", [_SID], _op(
            "Read a session (refreshes it unless touch=false)", _SESSION, "sessions",
            [_TOUCH], errors=_V1)),
        (s, "patch", [_SID], _op(
            "Merge into data (null deletes a key)", _SESSION, "sessions",
            [_IF_MATCH, _IF_NONE_MATCH], body="SessionData", errors=conditional)),
        (s, "put", [_SID], _op(
            "Replace data", _SESSION, "sessions", [_IF_MATCH, _IF_NONE_MATCH],
            body="SessionData", errors=conditional)),
        (s, "delete", [_SID], _op("Delete a session", _NO_CONTENT, "sessions", errors=_V1)),
        (s + "/touch", "post", [_SID], _op(
            "Refresh the idle deadline", _SESSION, "sessions", errors=_V1)),
        (s + "/rotate", "post", [_SID], _op(
            "Move to a new id; the old one dies",
            {"200": _json("Session", "Under its new id.", created)}, "sessions", errors=_V1)),
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


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rankd",
            "version": "1.0.0",
            "description": "Real-time leaderboards and sessions. Errors are "
            "application/problem+json (RFC 9457); timestamps are Unix epoch seconds.",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@cache
def document_bytes() -> bytes:
    return orjson.dumps(document())
