"""Session routes: the backend's ``Sessions`` over HTTP.

A session is answered as ``Session.to_dict()``: timestamps (``created_at``, ``expires_at``,
``max_expires_at``) are Unix epoch seconds as JSON numbers (floats), the same clock the store
and the journal use, so no conversion can drift. Every answer that carries a session also
carries ``ETag: "<version>"``. PATCH and PUT are conditional as RFC 9110 section 13 says:
``If-Match`` (``*`` or a list of ETags; the bare version ``3`` is accepted too) must name the
current version under strong comparison, so a weak ``W/"3"`` never matches; ``If-None-Match``
(``*`` or ETags, weak comparison) must not match the session. A failed condition is a 412; an
absent session stays a 404, since preconditions only apply to a request that could succeed.

Caller-chosen ids: ``PUT`` with ``If-None-Match: *`` (and no ``If-Match``) creates the session
under the path's id -- what web framework session stores need, since they pick their ids. The
body is ``POST /v1/sessions``'s (``user``, ``data``, ``ttl``, ``max_lifetime``). 201 when created;
412 when a session has that id; 410 when that id ended within ``--session-max-ttl`` (deleted,
expired, rotated, revoked or evicted: store/ended.py), so a save racing a logout can never
bring the session back; 400 when the id is not 32-128 characters of ``[A-Za-z0-9_-]``. Any
other PUT replaces ``data`` under the If-Match rule above.

A session id is a bearer credential: it is never logged, never echoed in an error detail, and
every answer of these routes says ``Cache-Control: no-store``.
"""

from starlette.requests import Request
from starlette.responses import Response

from service.auth import SESSIONS
from service.backend.api import Sessions
from service.errors import Problem, bad_request
from service.http import RouteSpec, json_object, json_response, no_content, parse_json, query
from service.http import read_body as _read_body
from service.schemas import (
    SESSION_CREATE_FIELDS,
    SESSION_DATA_FIELDS,
    Revoked,
    SessionInfo,
    UserSessions,
)
from service.settings import ServiceLimits
from store.show import show

GET_PARAMS = frozenset({"touch"})
REVOKE_PARAMS = frozenset({"except"})

_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _answer(session: SessionInfo, status: int = 200, location: bool = False) -> Response:
    headers = {"ETag": f'"{session["version"]}"'}
    if location:
        headers["Location"] = f"/v1/sessions/{session['id']}"
    return json_response(session, status, headers)


def _etags(raw: str, header: str) -> list[tuple[bool, int]] | None:
    """``*`` -> None; else each entity tag as (weak, version). Malformed: a 400 quoting it."""
    if raw.strip() == "*":
        return None
    tags: list[tuple[bool, int]] = []
    for item in raw.split(","):
        tag = item.strip()
        weak = tag.startswith("W/")
        if weak:
            tag = tag[2:]
        if len(tag) >= 2 and tag[0] == tag[-1] == '"':
            tag = tag[1:-1]
        elif weak:
            tag = ""  # W/ must be followed by a quoted tag
        if not (tag.isascii() and tag.isdigit() and len(tag) <= 18):
            raise bad_request(
                f'{header} must be * or session ETags such as "3", but got {show(raw)}'
            )
        tags.append((weak, int(tag)))
    return tags


async def precondition(sessions: Sessions, request: Request, sid: str) -> int | None:
    """The version the write must still find, after If-Match / If-None-Match (412 if false).

    No condition: None (unconditional). The session is read without touching it, and an
    absent one is the store's 404 before any condition is judged.
    """
    headers = request.headers
    if_match, if_none = headers.get("if-match"), headers.get("if-none-match")
    if if_match is None and if_none is None:
        return None
    current = (await sessions.get(sid, touch=False))["version"]
    if if_match is not None:
        tags = _etags(if_match, "If-Match")
        if tags is not None and (False, current) not in tags:
            raise Problem(
                412,
                "precondition-failed",
                f'If-Match {show(if_match)} does not match the session\'s ETag "{current}" '
                "(strong comparison: a weak W/ tag never matches)",
            )
    if if_none is not None:
        tags = _etags(if_none, "If-None-Match")
        if tags is None or any(version == current for _, version in tags):
            raise Problem(
                412,
                "precondition-failed",
                f'If-None-Match {show(if_none)} matches the existing session (ETag "{current}")',
            )
    return current


async def _body(
    limits: ServiceLimits, request: Request, fields: frozenset[str], what: str
) -> dict[str, object]:
    cap = limits.body_bytes
    return json_object(parse_json(await _read_body(request, cap), empty={}), fields, what)


async def create(request: Request, limits: ServiceLimits, sessions: Sessions) -> Response:
    body = await _body(limits, request, SESSION_CREATE_FIELDS, "the session")
    session = await sessions.create(
        user=body.get("user"),
        data=body.get("data"),
        ttl=body.get("ttl"),
        max_lifetime=body.get("max_lifetime"),
    )
    return _answer(session, 201, location=True)


async def get(request: Request, sessions: Sessions) -> Response:
    raw = query(request, GET_PARAMS).get("touch", "true")
    touch = _BOOLS.get(raw)
    if touch is None:
        raise bad_request(f"touch must be true or false, but got {show(raw)}")
    if request.method == "HEAD":
        # HEAD is a safe method (RFC 9110): a monitor checking that a session exists must not
        # keep it alive forever, whatever ?touch says.
        touch = False
    return _answer(await sessions.get(request.path_params["id"], touch=touch))


async def _data(limits: ServiceLimits, request: Request) -> object:
    body = await _body(limits, request, SESSION_DATA_FIELDS, "the request")
    if "data" not in body:
        raise bad_request("the request needs a 'data' object")
    return body["data"]


async def patch(request: Request, limits: ServiceLimits, sessions: Sessions) -> Response:
    sid = request.path_params["id"]
    version = await precondition(sessions, request, sid)
    # Another write may land while the body arrives: the store re-checks the version
    # (VersionConflict, also a 412).
    data = await _data(limits, request)
    return _answer(await sessions.patch(sid, data, if_version=version))


async def replace(request: Request, limits: ServiceLimits, sessions: Sessions) -> Response:
    sid = request.path_params["id"]
    headers = request.headers
    if headers.get("if-none-match", "").strip() == "*" and "if-match" not in headers:
        return await _create_with_id(limits, sessions, request, sid)
    version = await precondition(sessions, request, sid)
    data = await _data(limits, request)
    return _answer(await sessions.replace(sid, data, if_version=version))


async def _create_with_id(
    limits: ServiceLimits, sessions: Sessions, request: Request, sid: str
) -> Response:
    body = await _body(limits, request, SESSION_CREATE_FIELDS, "the session")
    session = await sessions.create(
        user=body.get("user"),
        data=body.get("data"),
        ttl=body.get("ttl"),
        max_lifetime=body.get("max_lifetime"),
        sid=sid,
    )
    return _answer(session, 201, location=True)


async def touch(request: Request, sessions: Sessions) -> Response:
    return _answer(await sessions.touch(request.path_params["id"]))


async def rotate(request: Request, sessions: Sessions) -> Response:
    session = await sessions.rotate(request.path_params["id"])
    return _answer(session, location=True)


async def delete(request: Request, sessions: Sessions) -> Response:
    await sessions.delete(request.path_params["id"])
    return no_content()


async def list_user(request: Request, sessions: Sessions) -> Response:
    query(request, frozenset())
    user = request.path_params["user"]
    held = await sessions.list_user(user)
    answer: UserSessions = {"user": user, "sessions": held}
    return json_response(answer)


async def revoke_user(request: Request, sessions: Sessions) -> Response:
    keep = query(request, REVOKE_PARAMS).get("except")
    if keep == "":
        # A template rendered with an empty id (?except=) must not log the user out everywhere.
        raise bad_request("except must be the id of the session to keep, but it is empty")
    user = request.path_params["user"]
    revoked = await sessions.revoke_user(user, except_id=keep)
    answer: Revoked = {"user": user, "revoked": revoked}
    return json_response(answer)


_S = "/v1/sessions/{id}"
_U = "/v1/users/{user}/sessions"

ROUTES = [
    RouteSpec("POST", "/v1/sessions", create, SESSIONS, no_store=True),
    RouteSpec("GET", _S, get, SESSIONS, no_store=True),
    RouteSpec("PATCH", _S, patch, SESSIONS, no_store=True),
    RouteSpec("PUT", _S, replace, SESSIONS, no_store=True),
    RouteSpec("DELETE", _S, delete, SESSIONS, no_store=True),
    RouteSpec("POST", _S + "/touch", touch, SESSIONS, no_store=True),
    RouteSpec("POST", _S + "/rotate", rotate, SESSIONS, no_store=True),
    RouteSpec("GET", _U, list_user, SESSIONS, no_store=True),
    RouteSpec("DELETE", _U, revoke_user, SESSIONS, no_store=True),
]
