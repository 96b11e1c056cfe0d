"""Member routes beyond one score: friends-list lookups, score ranges and metadata patches.

They translate HTTP to the backend's ``Boards`` calls and back, in the order routes_boards.py
keeps: the request's own shape first (400), then the lookups (absent board or member: 404), then
the write path (503 when persistence refuses writes).

    POST  /v1/boards/{board}/members:lookup   {members: [...<=1000]} -> entries in board order
    GET   /v1/boards/{board}/scores?min&max&offset&limit             -> entries in the range
    PATCH /v1/boards/{board}/members/{member} {metadata: {...}|null} -> the entry
"""

from starlette.requests import Request
from starlette.responses import Response

from service.auth import READ, WRITE, Auth
from service.backend.api import Boards
from service.errors import bad_request
from service.http import (
    RouteSpec,
    int_param,
    json_object,
    json_response,
    parse_json,
    query,
    read_body,
    score_param,
)
from service.players import writer_of
from service.schemas import LOOKUP_FIELDS, METADATA_PATCH_FIELDS
from service.settings import ServiceLimits
from store.ranks import LOOKUP_MEMBERS
from store.values import SCORE_LIMIT, check_member, check_metadata, check_score

RANGE_PARAMS = frozenset({"min", "max", "offset", "limit"})
MAX_OFFSET = 2**31 - 1
# An absent bound is the widest a score can be (magnitude below 2**63).
LOWEST, HIGHEST = -(SCORE_LIMIT - 1), SCORE_LIMIT - 1


async def lookup(request: Request, limits: ServiceLimits, boards: Boards) -> Response:
    body = json_object(
        parse_json(await read_body(request, limits.body_bytes)),
        LOOKUP_FIELDS,
        "the lookup",
    )
    members = body.get("members")
    if type(members) is not list:
        raise bad_request('a lookup needs "members": an array of member ids')
    if len(members) > LOOKUP_MEMBERS:
        raise bad_request(
            f"a lookup names at most {LOOKUP_MEMBERS} members, but got {len(members)}"
        )
    checked = [check_member(m, boards.limits) for m in members]
    return json_response(await boards.lookup(request.path_params["board"], checked))


async def score_range(request: Request, boards: Boards) -> Response:
    params = query(request, RANGE_PARAMS)
    low = check_score(score_param(params, "min")) if "min" in params else LOWEST
    high = check_score(score_param(params, "max")) if "max" in params else HIGHEST
    if low > high:
        raise bad_request(f"min must not be above max, but got min={low!r}, max={high!r}")
    offset = int_param(params, "offset", 0, 0, MAX_OFFSET)
    limit = int_param(params, "limit", 10, 1, boards.limits.page_items)
    page = await boards.score_range(request.path_params["board"], low, high, offset, limit)
    return json_response(page)


async def patch_member(
    request: Request, limits: ServiceLimits, auth: Auth | None, boards: Boards
) -> Response:
    member = check_member(request.path_params["member"], boards.limits)
    body = json_object(
        parse_json(await read_body(request, limits.body_bytes)),
        METADATA_PATCH_FIELDS,
        "the patch",
    )
    if "metadata" not in body:
        raise bad_request('a member patch needs "metadata": an object, or null to clear it')
    metadata = body["metadata"]
    if metadata is not None:
        check_metadata(metadata, boards.limits)  # the body's own shape before any 404
    writer = writer_of(request.scope, auth is not None)
    entry = await boards.patch_metadata(request.path_params["board"], member, metadata, writer)
    return json_response(entry)


_B = "/v1/boards/{board}"

ROUTES = [
    RouteSpec("POST", _B + "/members:lookup", lookup, READ),
    RouteSpec("GET", _B + "/scores", score_range, READ),
    RouteSpec("PATCH", _B + "/members/{member}", patch_member, WRITE),
]
