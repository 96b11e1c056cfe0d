"""Every rankd route as a ``Call``: what to send and how to read the answer, with no I/O.

A call is built here once and sent by either transport (``Client`` or ``AsyncClient``), so the
two never disagree about a path, a parameter, a header or whether a call may be retried::

    calls.top("laps", limit=3)
    -> Call(method="GET", path="/v1/boards/laps/top", params={"limit": "3"}, body=NO_BODY,
            headers={}, idempotent=True, decode=<json>)

``idempotent`` is the retry contract: only a call that changes nothing when repeated may be
sent again after a lost answer or a 503 -- GETs, PUT of a board's options, DELETEs. A score
POST is never repeated: on a ``sum`` board a retried write whose first answer was lost would
count twice. Session writes (PATCH/PUT/touch/rotate) are not retried either: each bumps the
version or the id, so a repeat would answer 412 or 404 for a write that worked.

Names are path segments, percent-encoded whole (a member may hold ``?``, ``#``, ``%`` or
spaces); rankd refuses ``/`` in names, so no encoding can change which resource is meant.

A retried DELETE can meet its own success: the first try deleted, its answer was lost, and the
retry answers 404. Calls marked ``gone_is_done`` take that 404 as the success it is (only after
a lost answer: a first-try 404 still raises, so a typo in a name is never silent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from rankd_client.types import (
    Board,
    BoardList,
    Entries,
    Entry,
    Health,
    Metadata,
    Order,
    RankForScore,
    Ready,
    Revoked,
    Score,
    ScoreItem,
    Session,
    SnapshotResult,
    Ties,
    UpdateRule,
    UserSessions,
    WriteResult,
)

T = TypeVar("T")


class _NoBody:
    def __repr__(self) -> str:
        return "NO_BODY"


NO_BODY: Any = _NoBody()


def _json(response: httpx.Response) -> Any:
    return response.json()


def _empty(response: httpx.Response) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    body: Any = NO_BODY  # a JSON value, sent as application/json; NO_BODY sends nothing
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = False
    decode: Callable[[httpx.Response], T] = _json
    # A DELETE whose answer was lost and whose retry finds nothing to delete succeeded: the
    # first try did it. Without this the caller would see NotFound for a delete that worked.
    gone_is_done: bool = False


def _seg(name: str) -> str:
    return quote(name, safe="")


def _params(**values: object) -> dict[str, str]:
    """Query parameters that were given (None: the server's default), as strings."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


def _score_param(score: Score) -> str:
    # repr keeps every digit of a float and never writes "+" or "inf" forms the server's JSON
    # number grammar would refuse for a finite value; non-finite ones are the server's 400.
    return repr(score) if isinstance(score, float) else str(int(score))


# -- boards ------------------------------------------------------------------------------------


def put_board(
    board: str,
    *,
    order: Order | None = None,
    update: UpdateRule | None = None,
    ties: Ties | None = None,
    **options: Any,
) -> Call[Board]:
    """Create or reconfigure a board; options left out keep their value (or the default).

    Any other option of the server's (``player_writes=True``, ``public_read=True``,
    ``windows=[...]``, ...) is sent as given; the server refuses one it does not know (400).
    """
    named = {k: v for k, v in (("order", order), ("update", update), ("ties", ties)) if v}
    return Call("PUT", f"/v1/boards/{_seg(board)}", body={**named, **options}, idempotent=True)


def get_board(board: str) -> Call[Board]:
    return Call("GET", f"/v1/boards/{_seg(board)}", idempotent=True)


def list_boards(*, offset: int | None = None, limit: int | None = None) -> Call[BoardList]:
    return Call("GET", "/v1/boards", _params(offset=offset, limit=limit), idempotent=True)


def drop_board(board: str) -> Call[None]:
    path = f"/v1/boards/{_seg(board)}"
    return Call("DELETE", path, idempotent=True, decode=_empty, gone_is_done=True)


def post_score(
    board: str, member: str, score: Score, *, metadata: Metadata | None = None
) -> Call[WriteResult]:
    """Write one score under the board's update rule (never retried). Unknown boards are
    created with the defaults."""
    body: dict[str, Any] = {"member": member, "score": score}
    if metadata is not None:
        body["metadata"] = metadata
    return Call("POST", f"/v1/boards/{_seg(board)}/scores", body=body)


def post_batch(board: str, items: Iterable[ScoreItem]) -> Call[list[WriteResult]]:
    """Write many scores, all or nothing; the results come back in the same order."""
    return Call("POST", f"/v1/boards/{_seg(board)}/scores:batch", body=list(items))


def top(board: str, *, offset: int | None = None, limit: int | None = None) -> Call[Entries]:
    """Entries ranked offset+1 .. offset+limit (server defaults: 0 and 10)."""
    path = f"/v1/boards/{_seg(board)}/top"
    return Call("GET", path, _params(offset=offset, limit=limit), idempotent=True)


def member(board: str, member: str) -> Call[Entry]:
    return Call("GET", f"/v1/boards/{_seg(board)}/members/{_seg(member)}", idempotent=True)


def around(board: str, member: str, *, radius: int | None = None) -> Call[Entries]:
    """Up to ``radius`` entries on each side of ``member`` (server default 5), member included."""
    path = f"/v1/boards/{_seg(board)}/members/{_seg(member)}/around"
    return Call("GET", path, _params(radius=radius), idempotent=True)


def rank_for_score(board: str, score: Score) -> Call[RankForScore]:
    """The rank a new ``score`` would get now."""
    path = f"/v1/boards/{_seg(board)}/rank"
    return Call("GET", path, {"score": _score_param(score)}, idempotent=True)


def delete_member(board: str, member: str) -> Call[None]:
    path = f"/v1/boards/{_seg(board)}/members/{_seg(member)}"
    return Call("DELETE", path, idempotent=True, decode=_empty, gone_is_done=True)


# -- sessions ----------------------------------------------------------------------------------


def create_session(
    *,
    user: str | None = None,
    data: dict[str, Any] | None = None,
    ttl: int | None = None,
    max_lifetime: int | None = None,
) -> Call[Session]:
    given = {"user": user, "data": data, "ttl": ttl, "max_lifetime": max_lifetime}
    return Call("POST", "/v1/sessions", body={k: v for k, v in given.items() if v is not None})


def create_session_with_id(
    session_id: str,
    *,
    user: str | None = None,
    data: dict[str, Any] | None = None,
    ttl: int | None = None,
    max_lifetime: int | None = None,
) -> Call[Session]:
    """Create a session under an id the caller chose (32-128 of ``[A-Za-z0-9_-]``, at least
    128 random bits: what web framework stores do). PreconditionFailed if the id is live;
    Gone if it ended before (rankd never lets an ended id live again).

    Not retried: a retry after a lost answer would find its own session and fail with 412.
    """
    given = {"user": user, "data": data, "ttl": ttl, "max_lifetime": max_lifetime}
    body = {k: v for k, v in given.items() if v is not None}
    path = f"/v1/sessions/{_seg(session_id)}"
    return Call("PUT", path, body=body, headers={"If-None-Match": "*"})


def get_session(session_id: str, *, touch: bool = True) -> Call[Session]:
    """The session; ``touch=False`` peeks without refreshing its idle deadline."""
    params = {} if touch else {"touch": "false"}
    return Call("GET", f"/v1/sessions/{_seg(session_id)}", params, idempotent=True)


def _condition(if_match: int | None) -> dict[str, str]:
    return {} if if_match is None else {"If-Match": f'"{if_match}"'}


def patch_session(
    session_id: str, data: dict[str, Any], *, if_match: int | None = None
) -> Call[Session]:
    """Merge ``data`` into the session's (a None value deletes that key). With ``if_match``
    (a ``version``), only if nobody wrote since: PreconditionFailed otherwise."""
    path = f"/v1/sessions/{_seg(session_id)}"
    return Call("PATCH", path, body={"data": data}, headers=_condition(if_match))


def replace_session(
    session_id: str, data: dict[str, Any], *, if_match: int | None = None
) -> Call[Session]:
    """Replace the session's data; ``if_match`` as for ``patch_session``."""
    path = f"/v1/sessions/{_seg(session_id)}"
    return Call("PUT", path, body={"data": data}, headers=_condition(if_match))


def touch_session(session_id: str) -> Call[Session]:
    return Call("POST", f"/v1/sessions/{_seg(session_id)}/touch")


def rotate_session(session_id: str) -> Call[Session]:
    """A new id for the same session; the old id is dead at once."""
    return Call("POST", f"/v1/sessions/{_seg(session_id)}/rotate")


def delete_session(session_id: str) -> Call[None]:
    path = f"/v1/sessions/{_seg(session_id)}"
    return Call("DELETE", path, idempotent=True, decode=_empty, gone_is_done=True)


def user_sessions(user: str) -> Call[UserSessions]:
    """The user's live sessions, oldest first."""
    return Call("GET", f"/v1/users/{_seg(user)}/sessions", idempotent=True)


def revoke_user_sessions(user: str, *, keep: str | None = None) -> Call[Revoked]:
    """End every session of ``user`` except ``keep`` (log out everywhere else).

    Retried after a lost answer, ``revoked`` counts what the last try ended (0 if the lost one
    ended them all): the sessions are gone either way.
    """
    if keep == "":
        # rankd refuses an empty except= too; refusing here names the bug in the caller's code.
        raise ValueError("keep must be a session id or None, but got ''")
    params = {} if keep is None else {"except": keep}
    return Call("DELETE", f"/v1/users/{_seg(user)}/sessions", params, idempotent=True)


# -- operations --------------------------------------------------------------------------------


def snapshot() -> Call[SnapshotResult]:
    """Take a snapshot now (admin scope)."""
    return Call("POST", "/v1/admin/snapshot")


def health() -> Call[Health]:
    return Call("GET", "/healthz", idempotent=True)


def ready() -> Call[Ready]:
    """200 once recovery is done; Unavailable (503 not-ready) before."""
    return Call("GET", "/readyz", idempotent=True)
