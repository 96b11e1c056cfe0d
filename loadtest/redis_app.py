"""The reference stack: Starlette + redis-py asyncio + redis-server sorted sets.

This is what a team writes when it does not have rankd: the same three routes the
benchmark drives, on Redis sorted sets, written the way a competent Redis user would:

* one connection pool, created at startup and shared by every request;
* every route is **one round trip**: the commands go in a non-transactional pipeline
  (Redis runs them in order; MULTI/EXEC would add two commands and buy nothing the
  benchmark can observe);
* ``best`` semantics come from ``ZADD ... GT`` (only a higher score replaces the old
  one, a new member is always added), so no read-modify-write race and no Lua.

Routes (ranks are 1-based, like rankd's; Redis's are 0-based, hence the ``+ 1``):

    POST /v1/boards/{b}/scores          ZADD GT + ZREVRANK + ZSCORE -> {member, score, rank}
    GET  /v1/boards/{b}/members/{m}     ZREVRANK + ZSCORE           -> {rank, member, score}
    GET  /v1/boards/{b}/top             ZREVRANGE 0 9 WITHSCORES + ZCARD
                                        -> {board, total, entries: [{rank, member, score}]}

Ties differ from rankd (Redis orders equal scores by member bytes, rankd by who got
there first); that changes no cost. The Redis address comes from ``REDIS_URL``.

    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn loadtest.redis_app:app --loop uvloop ...
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_JSON = "application/json"
_MAX_BODY = 64 * 1024
_MAX_MEMBER = 256
_TOP_N = 10
KEY_PREFIX = "board:"


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=_JSON)


def _problem(status: int, detail: str) -> Response:
    return _json({"status": status, "detail": detail}, status)


def _score_out(value: float) -> int | float:
    # Redis stores doubles; give integers back as integers, as rankd does.
    return int(value) if value.is_integer() else value


async def post_score(request: Request) -> Response:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        return _problem(413, f"body larger than {_MAX_BODY} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _problem(400, f"malformed JSON: {exc}")
    if not isinstance(body, dict):
        return _problem(400, f"expected a JSON object but got {type(body).__name__}")
    member, score = body.get("member"), body.get("score")
    if not isinstance(member, str) or not 0 < len(member) <= _MAX_MEMBER:
        return _problem(400, f"member must be a string of 1..{_MAX_MEMBER} chars, got {member!r}")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return _problem(400, f"score must be a finite number, got {score!r}")
    key = KEY_PREFIX + request.path_params["board"]
    async with request.app.state.redis.pipeline(transaction=False) as pipe:
        pipe.zadd(key, {member: score}, gt=True)
        pipe.zrevrank(key, member)
        pipe.zscore(key, member)
        _, rank, stored = await pipe.execute()
    return _json({"member": member, "score": _score_out(stored), "rank": rank + 1})


async def get_member(request: Request) -> Response:
    key = KEY_PREFIX + request.path_params["board"]
    member = request.path_params["member"]
    async with request.app.state.redis.pipeline(transaction=False) as pipe:
        pipe.zrevrank(key, member)
        pipe.zscore(key, member)
        rank, score = await pipe.execute()
    if rank is None:
        return _problem(404, f"member {member!r} is not on the board")
    return _json({"rank": rank + 1, "member": member, "score": _score_out(score)})


async def get_top(request: Request) -> Response:
    board = request.path_params["board"]
    key = KEY_PREFIX + board
    async with request.app.state.redis.pipeline(transaction=False) as pipe:
        pipe.zrevrange(key, 0, _TOP_N - 1, withscores=True)
        pipe.zcard(key)
        rows, total = await pipe.execute()
    entries = [{"rank": i, "member": m, "score": _score_out(s)} for i, (m, s) in enumerate(rows, 1)]
    return _json({"board": board, "total": total, "entries": entries})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    # Uncapped: one connection per in-flight request at most, i.e. <= wrk's connections.
    pool = redis.ConnectionPool.from_url(url, decode_responses=True)
    app.state.redis = redis.Redis(connection_pool=pool)
    await app.state.redis.ping()  # fail at startup, not on the first request
    try:
        yield
    finally:
        await app.state.redis.aclose()
        await pool.aclose()


app = Starlette(
    routes=[
        Route("/v1/boards/{board}/scores", post_score, methods=["POST"]),
        Route("/v1/boards/{board}/top", get_top, methods=["GET"]),
        Route("/v1/boards/{board}/members/{member}", get_member, methods=["GET"]),
    ],
    lifespan=lifespan,
)
