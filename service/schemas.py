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
RANKING: Schema = {
    "enum": ["ordinal", "competition", "dense"],
    "description": "What rank means in every answer: ordinal 1,2,3,4 (ties broken by the "
    "board's ties rule), competition 1,2,2,4, dense 1,2,2,3. May change at any time.",
}
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
WINDOW: Schema = {
    "oneOf": [
        {"enum": ["all", "hour", "day", "week", "month"]},
        obj(
            ["name", "every", "start"],
            name={"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"},
            every={"type": "integer", "minimum": 60, "maximum": 3660 * 86400},
            start={"type": "integer", "minimum": 0, "description": "unix seconds"},
        ),
    ]
}
# The board options (store/options.py is the one list; DESIGN.md "Boards" the contract).
OPTION_PROPS: dict[str, Schema] = {
    "order": {"enum": ["desc", "asc"]},
    "update": {"enum": ["best", "latest", "sum"]},
    "ties": {"enum": ["first", "member"]},
    "ranking": RANKING,
    "windows": {"type": "array", "items": WINDOW, "minItems": 1, "maxItems": 8},
    "reset_offset": {"type": "integer", "exclusiveMinimum": -86400, "exclusiveMaximum": 86400},
    "keep": {"type": "integer", "minimum": 0, "maximum": 100},
    "grace": {"type": "integer", "minimum": 0, "maximum": 7 * 86400},
    "min_score": {"type": ["number", "null"]},
    "max_score": {"type": ["number", "null"]},
    "player_writes": PLAYER_WRITES,
    "player_rate": PLAYER_RATE,
    "public_read": PUBLIC_READ,
}
PERIOD_ID: Schema = {
    "type": "string",
    "description": "all | 2026-12-02T13 (hour) | 2026-12-02 (day) | 2026-W49 (week) | "
    "2026-12 (month) | <name>-<n> (custom)",
}
WINDOW_RESULT: Schema = obj(
    ["period", "score", "rank", "previous", "changed"],
    period=PERIOD_ID,
    score={"type": "number"},
    rank={"type": "integer", "minimum": 1},
    previous={"type": ["object", "null"]},
    changed={"type": "boolean"},
)

SCHEMAS: dict[str, Schema] = {
    "Problem": obj(
        ["type", "title", "status", "detail"],
        closed=False,
        type={"type": "string", "description": "urn:rankd:problem:<kind>"},
        title={"type": "string"},
        status={"type": "integer", "minimum": 400, "maximum": 599},
        detail={"type": "string"},
    ),
    "BoardOptions": {
        "type": "object",
        "properties": OPTION_PROPS,
        "required": [],
        "additionalProperties": False,
    },
    "Board": {
        "type": "object",
        "properties": {
            "board": {"type": "string"},
            **OPTION_PROPS,
            "size": {
                "type": "integer",
                "minimum": 0,
                "description": "entries in the first window's current period",
            },
            "sizes": {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
                "description": "entries in each window's current period",
            },
        },
        "required": ["board", *OPTION_PROPS, "size", "sizes"],
        "additionalProperties": False,
    },
    "Period": {
        "type": "object",
        "properties": {
            "id": PERIOD_ID,
            "start": {"type": ["integer", "null"], "description": "unix seconds, inclusive"},
            "end": {"type": ["integer", "null"], "description": "unix seconds, exclusive"},
            "size": {"type": "integer", "minimum": 0},
            "closed": {"type": "boolean"},
        },
        "required": ["id", "start", "end", "size", "closed"],
        "additionalProperties": False,
    },
    "PeriodList": obj(
        ["board", "window", "periods"],
        board={"type": "string"},
        window={"type": "string"},
        periods={"type": "array", "items": ref("Period"), "description": "newest first"},
    ),
    "BoardList": obj(
        ["total", "offset", "boards"],
        total={"type": "integer", "minimum": 0},
        offset={"type": "integer", "minimum": 0},
        boards={"type": "array", "items": ref("Board")},
    ),
    "ScoreWrite": obj(
        ["member", "score"],
        member=MEMBER,
        score=SCORE,
        metadata=METADATA,
        at={
            "type": ["number", "null"],
            "description": "unix seconds when the score was achieved: within the board's "
            "grace before now; it picks the period of every window (null or absent: now)",
        },
    ),
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
        windows={
            "type": "object",
            "additionalProperties": WINDOW_RESULT,
            "description": "per window, on boards with more than one",
        },
    ),
    "Entry": obj(
        ["rank", "member", "score"],
        rank={"type": "integer", "minimum": 1},
        member={"type": "string"},
        score={"type": "number"},
        metadata={"type": "object"},
    ),
    "MemberEntry": obj(
        ["rank", "member", "score", "percentile"],
        rank={"type": "integer", "minimum": 1},
        member={"type": "string"},
        score={"type": "number"},
        percentile={
            "type": "number",
            "minimum": 0,
            "maximum": 100,
            "description": "Share of the other entries ranked strictly below (100 when alone).",
        },
        metadata={"type": "object"},
    ),
    "Page": obj(
        ["board", "window", "period", "total", "entries"],
        board={"type": "string"},
        window={"type": "string"},
        period=PERIOD_ID,
        total={"type": "integer", "minimum": 0},
        entries={"type": "array", "items": ref("Entry")},
    ),
    "Lookup": obj(
        ["members"],
        members={"type": "array", "maxItems": 1000, "items": MEMBER},
    ),
    "LookupResult": obj(
        ["board", "total", "entries", "missing"],
        board={"type": "string"},
        total={"type": "integer", "minimum": 0},
        entries={
            "type": "array",
            "items": ref("Entry"),
            "description": "The members found, in board order, with their board-wide ranks.",
        },
        missing={
            "type": "array",
            "items": {"type": "string"},
            "description": "The members asked for that are not on the board, in request order.",
        },
    ),
    "ScoreRange": obj(
        ["board", "total", "count", "entries"],
        board={"type": "string"},
        total={"type": "integer", "minimum": 0},
        count={"type": "integer", "minimum": 0, "description": "Entries with min <= score <= max."},
        entries={"type": "array", "items": ref("Entry")},
    ),
    "MetadataPatch": obj(
        ["metadata"],
        metadata={
            "type": ["object", "null"],
            "description": "The entry's new metadata (at most 1 KiB); null clears it.",
        },
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
LOOKUP_FIELDS = _fields("Lookup")
METADATA_PATCH_FIELDS = _fields("MetadataPatch")

Entry = dict[str, Any]  # {rank, member, score, metadata?}; a member answer adds percentile
WriteResult = dict[str, Any]  # {member, score, rank, previous: {score, rank} | None, changed}


class BoardInfo(TypedDict):
    board: str
    order: str
    update: str
    ties: str
    ranking: str
    windows: list[Any]
    reset_offset: int
    keep: int
    grace: int
    min_score: int | float | None
    max_score: int | float | None
    player_writes: bool
    player_rate: int
    public_read: bool
    size: int
    sizes: dict[str, int]


class BoardList(TypedDict):
    total: int
    offset: int
    boards: list[BoardInfo]


class Page(TypedDict):
    board: str
    window: str
    period: str
    total: int
    entries: list[Entry]


class PeriodInfo(TypedDict):
    id: str
    start: int | None
    end: int | None
    size: int
    closed: bool


class PeriodList(TypedDict):
    board: str
    window: str
    periods: list[PeriodInfo]


class LookupPage(TypedDict):
    board: str
    total: int
    entries: list[Entry]
    missing: list[str]


class RangePage(TypedDict):
    board: str
    total: int
    count: int
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
    window: str | None  # None while the board does not exist
    period: str | None
    total: int
    entries: list[Entry]
    seq: int
    epoch: str


class AroundTail(TypedDict):
    board: str
    window: str | None
    period: str | None
    member: str
    total: int
    entries: list[Entry]
    seq: int
    epoch: str


class RankTail(TypedDict):
    board: str
    window: str | None
    period: str | None
    member: str
    rank: int | None
    score: Any
    seq: int
    epoch: str


class PeriodFrame(TypedDict):
    """A watched window rolled over; the new (often empty) state follows."""

    board: str
    window: str | None
    closed: str
    current: str | None


class ErrorFrame(TypedDict):
    type: Literal["error"]
    id: object
    status: int
    detail: str
