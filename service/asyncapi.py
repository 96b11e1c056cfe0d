"""The AsyncAPI 3.0 document of ``/v1/ws``: every frame either side may send, as JSON Schema.

Served at ``GET /asyncapi.json``. Each frame is one entry in ``CLIENT_FRAMES`` (what rankd
receives) or ``SERVER_FRAMES`` (what it sends), built with ``request``/``frame`` from the
field schemas of ``service.schemas``, so a new frame is one entry and a changed body shape
(``Entry``, ``WriteResult``) changes the frames that carry it::

    SERVER_FRAMES["around"] = frame("around", "Entries around a member", [...], board=..)

    -> components.messages.around     {name, title, payload: {$ref: schemas/AroundFrame}}
    -> components.schemas.AroundFrame  {type: object, closed, "type": {const: "around"}, ...}
    -> channels.ws.messages.around, operations.sendFrames.messages[]

Every frame object is closed (``additionalProperties: false``), as rankd refuses unknown
fields: a test validates each frame a real server sends against this document, so a field
added to the hub without a line here fails it. ``window`` and ``period`` are in every top,
rank and around frame the hub sends; both are null while the board (or the window) does not
exist.

Close codes are not frames; they are listed in the channel's description (ws.py has the
reasons). WebSocket ping/pong are protocol control frames answered by the server's WebSocket
library; rankd has no JSON ping.
"""

import copy
from functools import cache
from importlib.metadata import version
from typing import Any

import orjson

from service.hub import MAX_RADIUS
from service.schemas import MEMBER, SCHEMAS, SCORE, Schema, obj, ref

# A request id: the client's, echoed in every frame of that request or subscription.
REQUEST_ID: Schema = {
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": 128},
        {"type": "integer"},
    ],
    "description": "Chosen by the client; echoed in every answer to that request.",
}
BOARD: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_.\\-]{1,64}$"}
WINDOW: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "description": "A window of the board (default: its first).",
}
PERIOD: Schema = {"type": "string", "minLength": 1, "description": "A period id: 2026-W49."}
# In server frames: null while the board does not exist.
SHOWN_WINDOW: Schema = {"type": ["string", "null"], "description": "The window shown."}
SHOWN_PERIOD: Schema = {"type": ["string", "null"], "description": "Its period shown."}
SEQ: Schema = {"type": "integer", "minimum": 0, "description": "Grows per board."}
BACKEND_EPOCH: Schema = {
    "type": "string",
    "description": "Changes exactly when history may have forked: re-read, do not diff.",
}
TOTAL: Schema = {"type": "integer", "minimum": 0}
ENTRIES: Schema = {"type": "array", "items": ref("Entry")}
RANK_OR_NULL: Schema = {"type": ["integer", "null"], "minimum": 1}


class Frame:
    """One message: its name, title and closed payload schema."""

    def __init__(self, key: str, title: str, payload: Schema) -> None:
        self.key = key
        self.title = title
        self.payload = payload

    @property
    def schema_name(self) -> str:
        return self.key[0].upper() + self.key[1:] + "Frame"


def request(
    key: str, op: str, title: str, required: list[str], **props: Schema
) -> tuple[str, Frame]:
    """A client -> server frame: ``{"op": op, "id": ..., **props}``."""
    payload = obj(["op", "id", *required], op={"const": op}, id=REQUEST_ID)
    payload["properties"].update(props)
    return key, Frame(key, title, payload)


def frame(
    key: str, title: str, required: list[str], optional: tuple[str, ...] = (), **props: Schema
) -> tuple[str, Frame]:
    """A server -> client frame: ``{"type": key, "id": ..., **props}``."""
    assert set(required) | set(optional) == set(props), key
    payload = obj(["type", "id", *required], type={"const": key}, id=REQUEST_ID)
    payload["properties"].update(props)
    return key, Frame(key, title, payload)


WRITER: Schema = {
    "enum": ["player", "key", "anonymous"],
    "description": "Who wrote: a player session, an API key, or no credential (protected "
    "mode, where no keys exist). Never which session or key.",
}


def _score_ack() -> Schema:
    """The ack of a score: who wrote it and the write result's fields beside type and id
    (in lockstep)."""
    result = SCHEMAS["WriteResult"]
    ack = obj(
        ["type", "id", "by", *result["required"]], type={"const": "ack"}, id=REQUEST_ID, by=WRITER
    )
    ack["properties"].update(result["properties"])
    return ack


CLIENT_FRAMES: dict[str, Frame] = dict(
    [
        request(
            "subscribeTop",
            "subscribe",
            "Watch the top N: a top frame now, then one per change",
            ["board", "top"],
            board=BOARD,
            top={"type": "integer", "minimum": 1, "maximum": 100},
            window=WINDOW,
        ),
        request(
            "subscribeMember",
            "subscribe",
            "Watch one member's rank and score: a rank frame now, then one per change",
            ["board", "member"],
            board=BOARD,
            member=MEMBER,
            window=WINDOW,
        ),
        request(
            "subscribeAround",
            "subscribe",
            "Watch the entries around a member: an around frame now, then one per change",
            ["board", "member", "radius"],
            board=BOARD,
            member=MEMBER,
            radius={"type": "integer", "minimum": 0, "maximum": MAX_RADIUS},
            window=WINDOW,
        ),
        request("unsubscribe", "unsubscribe", "Stop a subscription; answered by an ack", []),
        request(
            "score",
            "score",
            "Write a score (write scope); answered by an ack with the write result",
            ["board", "member", "score"],
            board=BOARD,
            member=MEMBER,
            score=SCORE,
            metadata=SCHEMAS["ScoreWrite"]["properties"]["metadata"],
        ),
    ]
)

SERVER_FRAMES: dict[str, Frame] = dict(
    [
        frame(
            "top",
            "The top N of a board",
            ["board", "window", "period", "total", "entries", "seq", "epoch"],
            board=BOARD,
            window=SHOWN_WINDOW,
            period=SHOWN_PERIOD,
            total=TOTAL,
            entries=ENTRIES,
            seq=SEQ,
            epoch=BACKEND_EPOCH,
        ),
        frame(
            "rank",
            "One member's rank and score (both null when absent)",
            ["board", "window", "period", "member", "rank", "score", "seq", "epoch"],
            board=BOARD,
            window=SHOWN_WINDOW,
            period=SHOWN_PERIOD,
            member=MEMBER,
            rank=RANK_OR_NULL,
            score={"type": ["number", "null"]},
            seq=SEQ,
            epoch=BACKEND_EPOCH,
        ),
        frame(
            "around",
            "The entries around a member (empty when absent)",
            ["board", "window", "period", "member", "total", "entries", "seq", "epoch"],
            board=BOARD,
            window=SHOWN_WINDOW,
            period=SHOWN_PERIOD,
            member=MEMBER,
            total=TOTAL,
            entries=ENTRIES,
            seq=SEQ,
            epoch=BACKEND_EPOCH,
        ),
        frame(
            "period",
            "A watched window rolled over; the new (empty) state follows",
            ["board", "window", "closed", "current"],
            board=BOARD,
            window=SHOWN_WINDOW,
            closed=PERIOD,
            current=SHOWN_PERIOD,
        ),
        (
            "ack",
            Frame(
                "ack",
                "A request succeeded (a score's ack carries the write result)",
                {
                    "oneOf": [
                        obj(["type", "id"], type={"const": "ack"}, id=REQUEST_ID),
                        _score_ack(),
                    ]
                },
            ),
        ),
        (
            "error",
            Frame(
                "error",
                "A request failed; the connection lives on (id null: no request id was read)",
                obj(
                    ["type", "id", "status", "detail"],
                    type={"const": "error"},
                    id={"oneOf": [REQUEST_ID, {"type": "null"}]},
                    status={"type": "integer", "minimum": 400, "maximum": 599},
                    detail={"type": "string"},
                ),
            ),
        ),
    ]
)

_CLOSE_CODES = """Close codes (the reason says which):

* 1008 policy: unauthorized, session not found or ended (`session <reason>`), the `sessions`
  scope is needed to bind `?session=`, client not reading, binary frames are not supported
* 1013 try again later: not ready (recovery running), too many connections
* 1001 going away: server shutting down

A client that stops reading is closed (1008) and never slows writers or other subscribers.
State frames are coalesced: at most one per subscription per tick, the latest state wins."""


def _closure(names: set[str]) -> dict[str, Schema]:
    """The components named and every component they refer to, from ``service.schemas``."""
    out: dict[str, Schema] = {}
    todo = sorted(names)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out[name] = copy.deepcopy(SCHEMAS[name])
        todo += [r.rpartition("/")[2] for r in _refs(out[name])]
    return out


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for value in node.values():
            found += _refs(value)
        return found
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def document() -> Schema:
    frames = [*CLIENT_FRAMES.values(), *SERVER_FRAMES.values()]
    schemas: dict[str, Schema] = {}
    for f in frames:
        for r in _refs(f.payload):
            schemas.update(_closure({r.rpartition("/")[2]}))
    schemas.update({f.schema_name: copy.deepcopy(f.payload) for f in frames})
    messages = {
        f.key: {
            "name": f.key,
            "title": f.title,
            "contentType": "application/json",
            "payload": ref(f.schema_name),
        }
        for f in frames
    }

    def channel_refs(table: dict[str, Frame]) -> list[Schema]:
        return [{"$ref": f"#/channels/ws/messages/{key}"} for key in table]

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "rankd WebSocket",
            "version": version("rankd"),
            "description": "Live ranks and score writes over one JSON-text WebSocket. Every "
            "request carries an id; every answer and state frame echoes it. Bad input gets an "
            "error frame, never a dropped connection. The HTTP API is /openapi.json.",
        },
        "servers": {
            "rankd": {
                "host": "127.0.0.1:8000",
                "protocol": "ws",
                "description": "rankd's default address; wss behind a TLS proxy.",
                "security": [
                    {"$ref": "#/components/securitySchemes/bearer"},
                    {"$ref": "#/components/securitySchemes/token"},
                ],
            }
        },
        "channels": {
            "ws": {
                "address": "/v1/ws",
                "title": "The one WebSocket of rankd",
                "description": _CLOSE_CODES,
                "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": obj(
                            [],
                            token={
                                "type": "string",
                                "description": "An API key, for browsers (they cannot set "
                                "Authorization); read scope subscribes, write scope scores.",
                            },
                            session={
                                "type": "string",
                                "description": "Binds the connection to a live session: it is "
                                "closed when the session ends. A player's session id is its "
                                "credential.",
                            },
                        ),
                        "headers": obj(
                            [],
                            closed=False,
                            Authorization={
                                "type": "string",
                                "description": "Bearer <key> or Session <id>.",
                            },
                        ),
                    }
                },
            }
        },
        "operations": {
            "receiveRequests": {
                "action": "receive",
                "title": "Requests a client sends",
                "channel": {"$ref": "#/channels/ws"},
                "messages": channel_refs(CLIENT_FRAMES),
            },
            "sendFrames": {
                "action": "send",
                "title": "Frames rankd sends: state, acks, errors, rollovers",
                "channel": {"$ref": "#/channels/ws"},
                "messages": channel_refs(SERVER_FRAMES),
            },
        },
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "token": {"type": "httpApiKey", "name": "token", "in": "query"},
            },
        },
    }


@cache
def document_bytes() -> bytes:
    return orjson.dumps(document())
