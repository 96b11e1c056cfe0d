"""Leaderboard routes: translate HTTP to the backend's ``Boards`` calls and back, nothing more.

Validation order is the same everywhere: the request's own shape first (body, query, member
id: 400), then the lookups (absent board or member: 404), then the write path (503 when
persistence refuses writes). Board names in paths are checked by the store on creation; any
other route simply does not find a badly named board.
"""

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.access import AUTH
from service.auth import READ, WRITE, Auth
from service.backend.api import Boards
from service.errors import bad_request
from service.http import (
    JSON,
    RouteSpec,
    int_param,
    json_object,
    json_response,
    no_content,
    parse_json,
    query,
    read_body,
    score_param,
)
from service.metrics import Metrics
from service.metrics import writer as writer_label
from service.players import writer_of
from service.schemas import SCORE_FIELDS
from service.settings import ServiceLimits
from store.show import show
from store.values import check_batch_size, check_member, check_score

PERIOD_PARAMS = frozenset({"window", "period"})
PAGE_PARAMS = frozenset({"offset", "limit"})
TOP_PARAMS = PAGE_PARAMS | PERIOD_PARAMS
AROUND_PARAMS = frozenset({"radius"}) | PERIOD_PARAMS
RANK_PARAMS = frozenset({"score"}) | PERIOD_PARAMS
WINDOW_PARAMS = frozenset({"window"})
MAX_PERIOD_PARAM = 64  # longer than any window name or period id
MAX_OFFSET = 2**31 - 1
BOARD_LIST_DEFAULT = 100


async def put_board(request: Request, limits: ServiceLimits, boards: Boards) -> Response:
    name = request.path_params["board"]
    options = parse_json(await read_body(request, limits.body_bytes), empty={})
    if type(options) is not dict:
        raise bad_request('board options must be a JSON object such as {"order": "asc"}')
    # Unknown options and values are refused by BoardConfig (400 naming the option).
    info, created = await boards.configure(name, options)
    if created:
        return json_response(info, 201, {"Location": f"/v1/boards/{info['board']}"})
    return json_response(info)


async def list_boards(request: Request, boards: Boards) -> Response:
    params = query(request, PAGE_PARAMS)
    offset = int_param(params, "offset", 0, 0, MAX_OFFSET)
    limit = int_param(params, "limit", BOARD_LIST_DEFAULT, 1, boards.limits.page_items)
    return json_response(await boards.list_boards(offset, limit))


async def get_board(request: Request, boards: Boards) -> Response:
    return json_response(await boards.describe(request.path_params["board"]))


async def delete_board(request: Request, boards: Boards) -> Response:
    await boards.drop(request.path_params["board"])
    return no_content()


def _score_item(item: Any, what: str) -> tuple[object, object, object, object]:
    body = json_object(item, SCORE_FIELDS, what)
    if "member" not in body:
        raise bad_request(f"{what} needs a 'member'")
    if "score" not in body:
        raise bad_request(f"{what} needs a 'score'")
    return body["member"], body["score"], body.get("metadata"), body.get("at")


def _period(params: dict[str, str]) -> tuple[str | None, str | None]:
    """(window, period) from ``?window=&period=``; the store checks the names."""
    window, period = params.get("window"), params.get("period")
    for name, value in (("window", window), ("period", period)):
        if value is not None and not 0 < len(value) <= MAX_PERIOD_PARAM:
            raise bad_request(
                f"{name} must be 1 to {MAX_PERIOD_PARAM} characters, but got {show(value)}"
            )
    return window, period


_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")


def _idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header: 1-128 visible ASCII characters (README "Scaling out")."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        # the key is not echoed: it may be as private as a request id
        raise bad_request(
            f"Idempotency-Key must be 1-128 visible ASCII characters, but got {len(key)} "
            "characters" + ("" if _IDEMPOTENCY_KEY.fullmatch(key[:128]) else ", not all visible")
        )
    return key


async def post_score(
    request: Request, limits: ServiceLimits, auth: Auth | None, boards: Boards, metrics: Metrics
) -> Response:
    raw = await read_body(request, limits.body_bytes)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = parse_json(raw)  # raises the precise 400
    # The hot path of the service: the common well-formed body is recognised with a few dict
    # operations; anything else takes _score_item for an exact error message.
    if (
        type(body) is dict
        and (len(body) == 2 or (len(body) == 3 and "metadata" in body))
        and "member" in body
        and "score" in body
    ):
        member, score, metadata = body["member"], body["score"], body.get("metadata")
        at = None
    else:
        member, score, metadata, at = _score_item(body, "the score")
    writer = writer_of(request.scope, auth is not None)
    result = await boards.write(
        request.path_params["board"],
        member,
        score,
        metadata,
        at,
        idempotency_key=_idempotency_key(request),
        writer=writer,
    )
    metrics.score_writes[writer_label(request.scope.get(AUTH))] += 1
    return Response(orjson.dumps(result), media_type=JSON)


async def post_batch(
    request: Request, limits: ServiceLimits, auth: Auth | None, boards: Boards, metrics: Metrics
) -> Response:
    body = parse_json(await read_body(request, limits.body_bytes))
    if type(body) is not list:
        raise bad_request("a batch must be a JSON array of {member, score, metadata?} objects")
    # The cap first (store.values.check_batch_size, 413), before any item is looked at.
    check_batch_size(len(body), boards.limits)
    items = [_score_item(item, f"item {i}") for i, item in enumerate(body)]
    writer = writer_of(request.scope, auth is not None)
    results = await boards.write_many(
        request.path_params["board"], items, _idempotency_key(request), writer
    )
    metrics.score_writes[writer_label(request.scope.get(AUTH))] += len(results)
    return json_response(results)


async def top(request: Request, boards: Boards) -> Response:
    params = query(request, TOP_PARAMS)
    offset = int_param(params, "offset", 0, 0, MAX_OFFSET)
    limit = int_param(params, "limit", 10, 1, boards.limits.page_items)
    # The hottest read: the common request names neither a window nor a period, and then
    # costs what it cost before seasons (issue #14; loadtest/RESULTS.md "GET top").
    if len(params) > ("offset" in params) + ("limit" in params):
        window, period = _period(params)
        page = await boards.top(request.path_params["board"], offset, limit, window, period)
    else:
        page = await boards.top(request.path_params["board"], offset, limit)
    return json_response(page)


def _member(request: Request, boards: Boards) -> str:
    return check_member(request.path_params["member"], boards.limits)


async def get_member(request: Request, boards: Boards) -> Response:
    window, period = _period(query(request, PERIOD_PARAMS))
    member = _member(request, boards)
    return json_response(await boards.entry(request.path_params["board"], member, window, period))


async def around(request: Request, boards: Boards) -> Response:
    params = query(request, AROUND_PARAMS)
    radius = int_param(params, "radius", 5, 0, boards.limits.radius)
    window, period = _period(params)
    member = _member(request, boards)
    return json_response(
        await boards.around(request.path_params["board"], member, radius, window, period)
    )


async def rank_for_score(request: Request, boards: Boards) -> Response:
    params = query(request, RANK_PARAMS)
    score = check_score(score_param(params, "score"))
    window, period = _period(params)
    return json_response(
        await boards.rank_for_score(request.path_params["board"], score, window, period)
    )


async def periods(request: Request, boards: Boards) -> Response:
    window, _ = _period(query(request, WINDOW_PARAMS))
    return json_response(await boards.periods(request.path_params["board"], window))


async def delete_member(request: Request, auth: Auth | None, boards: Boards) -> Response:
    member = _member(request, boards)
    writer = writer_of(request.scope, auth is not None)
    await boards.remove(request.path_params["board"], member, writer)
    return no_content()


_B = "/v1/boards/{board}"

# The router tries routes in this order, so the hottest come first: every route ahead of a
# request's own costs it one regex match.
ROUTES = [
    RouteSpec("POST", _B + "/scores", post_score, WRITE),
    RouteSpec("GET", _B + "/members/{member}", get_member, READ),
    RouteSpec("DELETE", _B + "/members/{member}", delete_member, WRITE),
    RouteSpec("GET", _B + "/top", top, READ),
    RouteSpec("GET", _B + "/members/{member}/around", around, READ),
    RouteSpec("GET", _B + "/rank", rank_for_score, READ),
    RouteSpec("GET", _B + "/periods", periods, READ),
    RouteSpec("POST", _B + "/scores:batch", post_batch, WRITE),
    RouteSpec("GET", "/v1/boards", list_boards, READ),
    RouteSpec("PUT", _B, put_board, WRITE),
    RouteSpec("GET", _B, get_board, READ),
    RouteSpec("DELETE", _B, delete_board, WRITE),
]
