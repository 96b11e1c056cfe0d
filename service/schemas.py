"""Wire shapes: every HTTP body and WebSocket frame rankd sends or accepts, in one place.

Two views of each shape live side by side, so they cannot drift apart:

* ``SCHEMAS``: JSON Schema, for ``openapi.py`` (the published document) -- and the source of
  the field sets the routes accept (``SCORE_FIELDS``, ``SESSION_CREATE_FIELDS``, ...).
* TypedDicts: what the backend protocols return (service/backend/api.py) and what the hub
  and the WebSocket endpoint build, so mypy checks each literal against its shape.

Scores are JSON numbers of magnitude below 2**63; timestamps are Unix epoch seconds (numbers).
"""

from typing import Any, Literal, TypedDict

SCORE_BOUND = 2**63

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], closed: bool = True, **props: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": props, "required": required}
    if closed:
        schema["additionalProperties"] = False
    return schema


SCORE: Schema = {
    "type": "number",
    "exclusiveMinimum": -SCORE_BOUND,
    "exclusiveMaximum": SCORE_BOUND,
    "description": "A finite JSON number; integers stay exact. Magnitude below 2**63.",
}
MEMBER: Schema = {"type": "string", "minLength": 1, "maxLength": 128}
METADATA: Schema = {
    "type": ["object", "null"],
    "description": "Small JSON object (at most 1 KiB); null or absent keeps the current one.",
}
EPOCH: Schema = {"type": "number", "description": "Unix epoch seconds."}
PLAYER_WRITES: Schema = {
    "type": "boolean",
    "description": "Players (Authorization: Session) may write their own entry.",
}
PLAYER_RATE: Schema = {
    "type": "integer",
    "minimum": 1,
    "maximum": 10_000,
    "description": "Player writes per member per minute; past it 429 + Retry-After.",
}
PUBLIC_READ: Schema = {
    "type": "boolean",
    "description": "Reads and WebSocket subscriptions need no credential.",
}

SCHEMAS: dict[str, Schema] = {
    "Problem": obj(
        ["type", "title", "status", "detail"],
        closed=False,
        type={"type": "string", "description": "urn:rankd:problem:<kind>"},
        title={"type": "string"},
        status={"type": "integer", "minimum": 400, "maximum": 599},
        detail={"type": "string"},
    ),
    "BoardOptions": obj(
        [],
        order={"enum": ["desc", "asc"]},
        update={"enum": ["best", "latest", "sum"]},
        ties={"enum": ["first", "member"]},
        player_writes=PLAYER_WRITES,
        player_rate=PLAYER_RATE,
        public_read=PUBLIC_READ,
    ),
    "Board": obj(
        ["board", "order", "update", "ties", "player_writes", "player_rate", "public_read", "size"],
        board={"type": "string"},
        order={"enum": ["desc", "asc"]},
        update={"enum": ["best", "latest", "sum"]},
        ties={"enum": ["first", "member"]},
        player_writes=PLAYER_WRITES,
        player_rate=PLAYER_RATE,
        public_read=PUBLIC_READ,
        size={"type": "integer", "minimum": 0},
    ),
    "BoardList": obj(
        ["total", "offset", "boards"],
        total={"type": "integer", "minimum": 0},
        offset={"type": "integer", "minimum": 0},
        boards={"type": "array", "items": ref("Board")},
    ),
    "ScoreWrite": obj(["member", "score"], member=MEMBER, score=SCORE, metadata=METADATA),
    "WriteResult": obj(
        ["member", "score", "rank", "previous", "changed"],
        member={"type": "string"},
        score={"type": "number"},
        rank={"type": "integer", "minimum": 1},
        previous={
            "oneOf": [
                {"type": "null"},
                obj(["score", "rank"], score={"type": "number"}, rank={"type": "integer"}),
            ]
        },
        changed={"type": "boolean"},
    ),
    "Entry": obj(
        ["rank", "member", "score"],
        rank={"type": "integer", "minimum": 1},
        member={"type": "string"},
        score={"type": "number"},
        metadata={"type": "object"},
    ),
    "Page": obj(
        ["board", "total", "entries"],
        board={"type": "string"},
        total={"type": "integer", "minimum": 0},
        entries={"type": "array", "items": ref("Entry")},
    ),
    "RankAnswer": obj(
        ["board", "score", "rank"],
        board={"type": "string"},
        score={"type": "number"},
        rank={"type": "integer", "minimum": 1},
    ),
    "SessionCreate": obj(
        [],
        user={"type": ["string", "null"], "minLength": 1, "maxLength": 256},
        data={"type": ["object", "null"]},
        ttl={"type": ["integer", "null"], "minimum": 1, "description": "idle timeout, s"},
        max_lifetime={"type": ["integer", "null"], "minimum": 1, "description": "absolute, s"},
    ),
    # Not "SessionData": generators name Session's inline ``data`` object that, and the two
    # models would collide (openapi-python-client dropped every session answer over it).
    "SessionDataWrite": obj(["data"], data={"type": "object"}),
    "Session": obj(
        ["id", "user", "data", "created_at", "expires_at", "ttl", "max_expires_at", "version"],
        id={"type": "string"},
        user={"type": ["string", "null"]},
        data={"type": "object"},
        created_at=EPOCH,
        expires_at=EPOCH,
        ttl={"type": "integer", "minimum": 1},
        max_expires_at=EPOCH,
        version={"type": "integer", "minimum": 1},
    ),
    "UserSessions": obj(
        ["user", "sessions"],
        user={"type": "string"},
        sessions={"type": "array", "items": ref("Session")},
    ),
    "Revoked": obj(
        ["user", "revoked"], user={"type": "string"}, revoked={"type": "integer", "minimum": 0}
    ),
    "Status": obj(["status"], closed=False, status={"type": "string"}),
    "SnapshotReport": {"type": "object"},
}


def _fields(name: str) -> frozenset[str]:
    return frozenset(SCHEMAS[name]["properties"])


# What a request body may hold (anything else is a 400 naming the field).
SCORE_FIELDS = _fields("ScoreWrite")
SESSION_CREATE_FIELDS = _fields("SessionCreate")
SESSION_DATA_FIELDS = _fields("SessionDataWrite")

Entry = dict[str, Any]  # {rank, member, score, metadata?}; a member answer adds percentile
WriteResult = dict[str, Any]  # {member, score, rank, previous: {score, rank} | None, changed}


class BoardInfo(TypedDict):
    board: str
    order: str
    update: str
    ties: str
    player_writes: bool
    player_rate: int
    public_read: bool
    size: int


class BoardList(TypedDict):
    total: int
    offset: int
    boards: list[BoardInfo]


class Page(TypedDict):
    board: str
    total: int
    entries: list[Entry]


class RankForScore(TypedDict):
    board: str
    score: int | float
    rank: int


class SessionInfo(TypedDict):
    id: str
    user: str | None
    data: dict[str, Any]
    created_at: float
    expires_at: float
    ttl: int
    max_expires_at: float
    version: int


class UserSessions(TypedDict):
    user: str
    sessions: list[SessionInfo]


class Revoked(TypedDict):
    user: str
    revoked: int


# Component -> the TypedDict the backend answers with: a test holds the two in lockstep
# (the same fields, the same required ones, compatible JSON types).
TYPED: dict[str, type] = {
    "Board": BoardInfo,
    "BoardList": BoardList,
    "Page": Page,
    "RankAnswer": RankForScore,
    "Session": SessionInfo,
    "UserSessions": UserSessions,
    "Revoked": Revoked,
}


# -- WebSocket frames (server -> client) --------------------------------------------------------
# State frames are '{"type":..,"id":..' (per subscription) + one shared tail, encoded once.


class TopTail(TypedDict):
    board: str
    total: int
    entries: list[Entry]
    seq: int
    epoch: str


class AroundTail(TypedDict):
    board: str
    member: str
    total: int
    entries: list[Entry]
    seq: int
    epoch: str


class RankTail(TypedDict):
    board: str
    member: str
    rank: int | None
    score: Any
    seq: int
    epoch: str


class ErrorFrame(TypedDict):
    type: Literal["error"]
    id: object
    status: int
    detail: str
