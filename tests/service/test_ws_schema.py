"""The published WebSocket protocol (/asyncapi.json) is true of a real server, frame by frame.

A real rankd with keys; one admin connection and one read-only connection drive every kind
of answer: top and member subscriptions (empty board, writes over HTTP and WebSocket, a batch,
a delete, a board drop), acks of unsubscribe and score, and error frames for every way a
request can be refused (malformed JSON, not an object, unknown op or field, missing field,
bad top, a duplicate or unknown subscription id, a score out of range, a binary frame, a frame
over the size limit, a missing scope). Every frame received validates against the message of
its type in the served document; every request the server accepted validates as a client
message, and every request it refused for its shape does not. Every frame schema is closed,
so a field added to a frame without its line in service/asyncapi.py fails here.
"""

import asyncio
import contextlib
import json
import warnings
from typing import Any

import httpx
import jsonschema
import pydantic
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from websockets.asyncio.client import ClientConnection, connect

from service.asyncapi import CLIENT_FRAMES, SERVER_FRAMES, document

ADMIN = "ws-schema-admin-key-0123456789"
READER = "ws-schema-read-key-0123456789"
URI = "urn:rankd:asyncapi"


class Protocol:
    """Validators for each message of an AsyncAPI document, refs resolved inside it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        registry: Registry[Any] = Registry().with_resource(URI, resource)
        self.messages = {
            key: Draft202012Validator(
                {"$ref": f"{URI}#/components/messages/{key}/payload"}, registry=registry
            )
            for key in doc["components"]["messages"]
        }
        ops = doc["operations"]
        self.server = [m["$ref"].rpartition("/")[2] for m in ops["sendFrames"]["messages"]]
        self.client = [m["$ref"].rpartition("/")[2] for m in ops["receiveRequests"]["messages"]]

    def check_server(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        assert kind in self.server, f"a frame of an undocumented type: {frame}"
        self.messages[kind].validate(frame)

    def client_matches(self, request: dict[str, Any]) -> list[str]:
        return [k for k in self.client if self.messages[k].is_valid(request)]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    from tests.servers import RankdServer

    srv = RankdServer(
        tmp_path_factory.mktemp("ws-schema"),
        {"api_key": [f"{ADMIN}:admin", f"{READER}:read"], "ws_frame_bytes": 1024},
    )
    srv.start()
    yield srv
    srv.stop()


def _served(srv: Any) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/asyncapi.json", trust_env=False)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc: dict[str, Any] = r.json()
    return doc


def _asyncapi3_model() -> Any:
    with warnings.catch_warnings():
        # Its models name a field "schema", which pydantic warns about at import.
        warnings.simplefilter("ignore", UserWarning)
        from asyncapi3.models.asyncapi import AsyncAPI3  # type: ignore[import-untyped]
    return AsyncAPI3


def test_served_document_is_the_built_one_and_well_formed(keyed) -> None:
    doc = _served(keyed)
    assert doc == document()
    assert doc["asyncapi"] == "3.0.0"
    # The AsyncAPI 3.0 object model (unknown fields forbidden) reads it whole...
    model = _asyncapi3_model()
    model.model_validate(doc)
    # ...and is strict enough to refuse a misspelt or a 2.x-style document.
    for path, value in [(("channels", "ws", "adress"), "/v1/ws"), (("asyncapi",), "2.6.0")]:
        bad = document()
        parent: Any = bad
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = value
        with pytest.raises(pydantic.ValidationError):
            model.model_validate(bad)
    sends = doc["operations"]["sendFrames"]
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({**doc, "operations": {"x": {**sends, "action": "publish"}}})
    channel = doc["channels"]["ws"]
    assert channel["address"] == "/v1/ws"
    assert set(channel["messages"]) == set(doc["components"]["messages"])
    assert set(CLIENT_FRAMES) | set(SERVER_FRAMES) == set(doc["components"]["messages"])
    # Every frame is a closed object (or a choice of closed objects) with valid JSON Schema.
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        for variant in schema.get("oneOf", [schema]):
            assert variant["additionalProperties"] is False, name
    # Every reference resolves.
    text = json.dumps(doc)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        node: Any = doc
        for step in ref.removeprefix("#/").split("/"):
            node = node[step]
    for key in {*CLIENT_FRAMES, *SERVER_FRAMES}:
        payload = doc["components"]["messages"][key]["payload"]["$ref"]
        assert payload.startswith("#/components/schemas/")


class Conn:
    def __init__(self, conn: ClientConnection, protocol: Protocol) -> None:
        self.conn = conn
        self.protocol = protocol
        self.frames: list[dict[str, Any]] = []

    async def send(self, request: Any) -> None:
        await self.conn.send(request if isinstance(request, str | bytes) else json.dumps(request))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            raw = await self.conn.recv()
        assert isinstance(raw, str), "rankd sends JSON text frames only"
        frame: dict[str, Any] = json.loads(raw)
        self.protocol.check_server(frame)
        self.frames.append(frame)
        return frame

    async def until(self, kind: str, rid: object, **fields: Any) -> dict[str, Any]:
        """Frames until one of this type and id whose fields match; all are validated."""
        while True:
            frame = await self.recv()
            match = frame["type"] == kind and frame["id"] == rid
            if match and all(frame.get(k) == v for k, v in fields.items()):
                return frame


@contextlib.asynccontextmanager
async def _ws(srv: Any, key: str, protocol: Protocol):
    url = srv.url.replace("http://", "ws://") + "/v1/ws"
    headers = {"Authorization": f"Bearer {key}"}
    async with connect(url, additional_headers=headers, proxy=None) as conn:
        yield Conn(conn, protocol)


def test_every_frame_a_real_server_sends_validates(keyed, name) -> None:
    protocol = Protocol(_served(keyed))
    accepted: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []

    async def main() -> None:
        http = httpx.AsyncClient(
            base_url=keyed.url, trust_env=False, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        async with http, _ws(keyed, ADMIN, protocol) as ws, _ws(keyed, READER, protocol) as ro:

            async def ok(conn: Conn, request: dict[str, Any], kind: str) -> dict[str, Any]:
                accepted.append(request)
                await conn.send(request)
                return await conn.until(kind, request["id"])

            async def bad(conn: Conn, request: Any, status: int) -> dict[str, Any]:
                rid = request.get("id") if isinstance(request, dict) else None
                if isinstance(request, dict):
                    refused.append(request)
                await conn.send(request)
                frame = await conn.until("error", rid if type(rid) in (str, int) else None)
                assert frame["status"] == status, frame
                return frame

            board = name
            top = await ok(ws, {"op": "subscribe", "id": "t", "board": board, "top": 3}, "top")
            assert top["total"] == 0 and top["entries"] == []
            rank = await ok(
                ws, {"op": "subscribe", "id": 7, "board": board, "member": "ann"}, "rank"
            )
            assert rank["rank"] is None and rank["score"] is None
            around = await ok(
                ws,
                {"op": "subscribe", "id": "a", "board": board, "member": "ann", "radius": 2},
                "around",
            )
            assert around["entries"] == []  # ann is not on the board yet
            ack = await ok(
                ws,
                {"op": "score", "id": "w1", "board": board, "member": "ann", "score": 10},
                "ack",
            )
            assert ack["rank"] == 1 and ack["previous"] is None
            await ws.until("rank", 7, rank=1, score=10)
            meta = {"member": "bob", "score": 12.5, "metadata": {"c": "fr"}}
            assert (await http.post(f"/v1/boards/{board}/scores", json=meta)).status_code == 200
            await ws.until("top", "t", total=2)
            await ws.until("rank", 7, rank=2)
            await ws.until("around", "a", total=2)
            batch = [{"member": f"m{i}", "score": i} for i in range(5)]
            r = await http.post(f"/v1/boards/{board}/scores:batch", json=batch)
            assert r.status_code == 200
            await ws.until("top", "t", total=7)
            r = await http.delete(f"/v1/boards/{board}/members/ann")
            assert r.status_code == 204
            await ws.until("rank", 7, rank=None, score=None)
            await ok(ws, {"op": "unsubscribe", "id": 7}, "ack")
            r = await http.delete(f"/v1/boards/{board}")
            assert r.status_code == 204
            await ws.until("top", "t", total=0)

            # Every refusal is an error frame on a connection that lives on.
            await bad(ws, "{not json", 400)
            await bad(ws, "[1, 2]", 400)
            await bad(ws, {"op": "dance", "id": "e1"}, 400)
            await bad(ws, {"op": "subscribe", "id": "e2", "board": board, "tpo": 3}, 400)
            await bad(ws, {"op": "subscribe", "id": "e3", "top": 3}, 400)
            await bad(ws, {"op": "subscribe", "id": "e4", "board": board, "top": 0}, 400)
            await bad(ws, {"op": "subscribe", "id": "e5", "board": board, "top": 3.5}, 400)
            await bad(ws, {"op": "subscribe", "id": "e6", "board": board}, 400)
            await bad(ws, {"op": "score", "id": "e7", "board": board, "member": "x"}, 400)
            await bad(
                ws, {"op": "score", "id": "e8", "board": board, "member": "x", "score": 2**63}, 400
            )
            await bad(ws, {"op": "subscribe", "id": "t", "board": board, "top": 1}, 409)
            await bad(ws, {"op": "unsubscribe", "id": "nope"}, 404)
            await bad(ws, "x" * 2048, 413)
            await ws.send(b"\x00binary")
            frame = await ws.until("error", None)
            assert frame["status"] == 400
            await bad(
                ro, {"op": "score", "id": "e9", "board": board, "member": "x", "score": 1}, 403
            )
            accepted.append({"op": "subscribe", "id": "r", "board": board, "member": "bob"})
            await ro.send(accepted[-1])
            await ro.until("rank", "r")
            # Still alive after all that.
            await ok(ws, {"op": "unsubscribe", "id": "t"}, "ack")
            kinds = {(f["type"], f.get("status")) for f in ws.frames + ro.frames}
            assert {("top", None), ("rank", None), ("around", None), ("ack", None)} <= kinds
            assert {("error", s) for s in (400, 403, 404, 409, 413)} <= kinds

    asyncio.run(main())
    # What the server accepted, the published schema accepts: exactly one client message each.
    for request in accepted:
        assert len(protocol.client_matches(request)) == 1, request
    # A request refused for its shape matches no client message (the 409 and 404 refusals
    # are about the connection's state, and the out-of-range score about the store's range).
    shape_refusals = [r for r in refused if r["id"] not in ("t", "nope", "e9")]
    for request in shape_refusals:
        assert protocol.client_matches(request) == [], request


def test_an_undocumented_field_fails_validation(keyed, name) -> None:
    """The check above can fail: a real frame with one field more is refused."""
    protocol = Protocol(_served(keyed))

    async def main() -> dict[str, Any]:
        async with _ws(keyed, ADMIN, protocol) as ws:
            await ws.send({"op": "subscribe", "id": 1, "board": name, "top": 1})
            return await ws.until("top", 1)

    frame = asyncio.run(main())
    frame["extra"] = True
    with pytest.raises(jsonschema.ValidationError):
        protocol.check_server(frame)
    with pytest.raises(AssertionError):
        protocol.check_server({**frame, "type": "gossip"})


def test_the_hub_typed_frames_and_the_published_ones_agree() -> None:
    """schemas' TypedDicts for frames (what the hub and ws.py build) name the same fields as
    the published frames, exactly."""
    from service import schemas

    pairs = {"top": "TopTail", "rank": "RankTail", "error": "ErrorFrame", "period": "PeriodFrame"}
    held = 0
    for kind, typed_name in pairs.items():
        typed = getattr(schemas, typed_name, None)
        if typed is None:
            continue  # the hub does not send this frame yet
        held += 1
        payload = SERVER_FRAMES[kind].payload
        fields = set(typed.__annotations__) | {"type", "id"}
        assert set(payload["required"]) <= fields, kind
        assert set(payload["properties"]) == fields, kind
        if kind in ("top", "rank", "period"):
            assert set(payload["required"]) == fields, kind
    assert held == len(pairs)


def test_window_subscriptions_and_the_period_frame_validate(tmp_path_factory, name) -> None:
    """A subscription naming a window, and the ``period`` frame of its rollover (the server's
    clock moved past midnight by a test clock, service/testclock.py), are published frames."""
    from tests.servers import RankdServer

    root = tmp_path_factory.mktemp("ws-schema-windows")
    now = root / "now"
    t0 = 1_796_162_400.0  # 2026-12-01T22:00Z
    now.write_text(repr(t0))
    srv = RankdServer(root, {}, env={"RANKD_TEST_CLOCK_FILE": str(now)})
    srv.start()
    try:
        protocol = Protocol(_served(srv))

        async def main() -> None:
            http = httpx.AsyncClient(base_url=srv.url, trust_env=False)
            async with http, _ws(srv, ADMIN, protocol) as ws:
                path = f"/v1/boards/{name}"
                r = await http.put(path, json={"windows": ["all", "day"]})
                assert r.status_code == 201
                await http.post(f"{path}/scores", json={"member": "ann", "score": 5})
                requests = [
                    {"op": "subscribe", "id": "d", "board": name, "top": 3, "window": "day"},
                    {"op": "subscribe", "id": "m", "board": name, "member": "ann", "window": "day"},
                ]
                for request in requests:
                    assert len(protocol.client_matches(request)) == 1, request
                    await ws.send(request)
                top = await ws.until("top", "d")
                assert (top["window"], top["period"]) == ("day", "2026-12-01")
                rank = await ws.until("rank", "m")
                assert (rank["window"], rank["period"], rank["rank"]) == ("day", "2026-12-01", 1)
                now.write_text(repr(t0 + 3 * 3600))  # past midnight: the idle board rolls
                period = await ws.until("period", "d")
                assert period == {"type": "period", "id": "d", "board": name, "window": "day",
                                  "closed": "2026-12-01", "current": "2026-12-02"}  # fmt: skip
                await ws.until("top", "d", period="2026-12-02", entries=[])
                await ws.until("rank", "m", period="2026-12-02", rank=None)

        asyncio.run(main())
    finally:
        srv.stop()
