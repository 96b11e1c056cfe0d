"""Session routes: ``SessionStore`` over HTTP.

A session is answered as ``Session.to_dict()``: timestamps (``created_at``, ``expires_at``,
``max_expires_at``) are Unix epoch seconds as JSON numbers (floats), the same clock the store
and the journal use, so no conversion can drift. Every answer that carries a session also
carries ``ETag: "<version>"``; PATCH and PUT accept ``If-Match`` with that ETag (or the bare
version number) and answer 409 when the session has moved on.

A session id is a bearer credential: it is never logged and never echoed in an error detail.
"""

from starlette.requests import Request
from starlette.responses import Response

from service import writes
from service.auth import SESSIONS
from service.errors import bad_request
from service.http import RouteSpec, json_object, json_response, no_content, parse_json, query
from service.http import read_body as _read_body
from service.runtime import Runtime
from store.sessions import Session
from store.show import show

CREATE_FIELDS = frozenset({"user", "data", "ttl", "max_lifetime"})
DATA_FIELDS = frozenset({"data"})
GET_PARAMS = frozenset({"touch"})
REVOKE_PARAMS = frozenset({"except"})

_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _answer(session: Session, status: int = 200, location: bool = False) -> Response:
    headers = {"ETag": f'"{session.version}"'}
    if location:
        headers["Location"] = f"/v1/sessions/{session.id}"
    return json_response(session.to_dict(), status, headers)


def if_match(request: Request) -> int | None:
    """The version an ``If-Match`` header demands: ``3`` or ``"3"``; ``*`` (or none) = any."""
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    tag = raw.strip()
    if tag == "*":
        return None
    if len(tag) >= 2 and tag[0] == tag[-1] == '"':
        tag = tag[1:-1]
    if not (tag.isascii() and tag.isdigit() and len(tag) <= 18):
        raise bad_request(f'If-Match must be a session version such as "3", but got {show(raw)}')
    return int(tag)


async def _body(
    rt: Runtime, request: Request, fields: frozenset[str], what: str
) -> dict[str, object]:
    cap = rt.settings.limits.body_bytes
    return json_object(parse_json(await _read_body(request, cap), empty={}), fields, what)


async def create(rt: Runtime, request: Request) -> Response:
    body = await _body(rt, request, CREATE_FIELDS, "the session")
    writes.grow(rt)
    session = await writes.mutate(
        rt,
        rt.sessions.create,
        user=body.get("user"),
        data=body.get("data"),
        ttl=body.get("ttl"),
        max_lifetime=body.get("max_lifetime"),
    )
    return _answer(session, 201, location=True)


async def get(rt: Runtime, request: Request) -> Response:
    raw = query(request, GET_PARAMS).get("touch", "true")
    touch = _BOOLS.get(raw)
    if touch is None:
        raise bad_request(f"touch must be true or false, but got {show(raw)}")
    if request.method == "HEAD":
        # HEAD is a safe method (RFC 9110): a monitor checking that a session exists must not
        # keep it alive forever, whatever ?touch says.
        touch = False
    # A touch only pushes an idle deadline: it is no reason to refuse a read while the disk is
    # unhealthy, so it skips the write path (a lost touch costs at most an early expiry).
    return _answer(rt.sessions.get(request.path_params["id"], touch=touch))


async def _data(rt: Runtime, request: Request) -> object:
    body = await _body(rt, request, DATA_FIELDS, "the request")
    if "data" not in body:
        raise bad_request("the request needs a 'data' object")
    return body["data"]


async def patch(rt: Runtime, request: Request) -> Response:
    version = if_match(request)
    data = await _data(rt, request)
    writes.grow(rt)
    sid = request.path_params["id"]
    return _answer(await writes.mutate(rt, rt.sessions.patch, sid, data, if_version=version))


async def replace(rt: Runtime, request: Request) -> Response:
    version = if_match(request)
    data = await _data(rt, request)
    writes.grow(rt)
    sid = request.path_params["id"]
    return _answer(await writes.mutate(rt, rt.sessions.replace, sid, data, if_version=version))


async def touch(rt: Runtime, request: Request) -> Response:
    return _answer(await writes.mutate(rt, rt.sessions.touch, request.path_params["id"]))


async def rotate(rt: Runtime, request: Request) -> Response:
    session = await writes.mutate(rt, rt.sessions.rotate, request.path_params["id"])
    return _answer(session, location=True)


async def delete(rt: Runtime, request: Request) -> Response:
    await writes.mutate(rt, rt.sessions.delete, request.path_params["id"])
    return no_content()


async def list_user(rt: Runtime, request: Request) -> Response:
    query(request, frozenset())
    user = request.path_params["user"]
    sessions = rt.sessions.list_user(user)
    return json_response({"user": user, "sessions": [s.to_dict() for s in sessions]})


async def revoke_user(rt: Runtime, request: Request) -> Response:
    keep = query(request, REVOKE_PARAMS).get("except")
    user = request.path_params["user"]
    revoked = await writes.mutate(rt, rt.sessions.revoke_user, user, except_id=keep)
    return json_response({"user": user, "revoked": revoked})


_S = "/v1/sessions/{id}"
_U = "/v1/users/{user}/sessions"

ROUTES = [
    RouteSpec("POST", "/v1/sessions", create, SESSIONS),
    RouteSpec("GET", _S, get, SESSIONS),
    RouteSpec("PATCH", _S, patch, SESSIONS),
    RouteSpec("PUT", _S, replace, SESSIONS),
    RouteSpec("DELETE", _S, delete, SESSIONS),
    RouteSpec("POST", _S + "/touch", touch, SESSIONS),
    RouteSpec("POST", _S + "/rotate", rotate, SESSIONS),
    RouteSpec("GET", _U, list_user, SESSIONS),
    RouteSpec("DELETE", _U, revoke_user, SESSIONS),
]
