"""The floor: Starlette + uvicorn + orjson with no store behind the routes.

`bench_http.py` runs this next to rankd with the same uvicorn settings, so
``rankd req/s ÷ bare req/s`` says how much of the framework's budget the store,
the journal and the validation spend. Each route does the unavoidable work of its
rankd twin and nothing more: the score route parses the JSON body (a real server
cannot skip that) and every route serialises a small orjson body of about the same
shape and size as rankd's answer.

    uvicorn loadtest.bare_app:app --loop uvloop --http httptools --no-access-log

The WebSocket route (``/v1/ws``) is rankd's ``score`` op minus the store, for
`bench_write_floor.py`.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

_JSON = "application/json"

# Answers shaped like rankd's, built once: the GET routes measure routing + response
# cost, not the formatting of data that a store would have produced.
_TOP = orjson.dumps(
    {
        "board": "bench",
        "total": 100_000,
        "entries": [
            {"rank": r, "member": f"player:{r:07d}", "score": 1_000_000 - r} for r in range(1, 11)
        ],
    }
)
_MEMBER = orjson.dumps({"rank": 42, "member": "player:0000042", "score": 999_958})


async def post_score(request: Request) -> Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return Response(b'{"detail":"expected a JSON object"}', status_code=400, media_type=_JSON)
    result = {
        "member": body.get("member"),
        "score": body.get("score"),
        "rank": 1,
        "previous": None,
        "changed": True,
    }
    return Response(orjson.dumps(result), media_type=_JSON)


async def get_top(request: Request) -> Response:
    return Response(_TOP, media_type=_JSON)


async def get_member(request: Request) -> Response:
    return Response(_MEMBER, media_type=_JSON)


async def ws(websocket: WebSocket) -> None:
    """rankd's WebSocket write minus the store: parse each op, answer an ack with its id."""
    await websocket.accept()
    try:
        while True:
            op = orjson.loads(await websocket.receive_text())
            result = {"member": op.get("member"), "score": op.get("score"), "rank": 1,
                      "previous": None, "changed": True}  # fmt: skip
            ack = {"type": "ack", "id": op.get("id"), "result": result}
            await websocket.send_text(orjson.dumps(ack).decode())
    except WebSocketDisconnect:
        pass


app = Starlette(
    routes=[
        WebSocketRoute("/v1/ws", ws),
        Route("/v1/boards/{board}/scores", post_score, methods=["POST"]),
        Route("/v1/boards/{board}/top", get_top, methods=["GET"]),
        Route("/v1/boards/{board}/members/{member}", get_member, methods=["GET"]),
    ]
)
