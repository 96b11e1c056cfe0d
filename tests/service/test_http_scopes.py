"""Who may do what with keys configured: ONE table, checked route by route against a real
rankd, over HTTP and the WebSocket, and rendered into README's Security section.

``MATRIX`` is the single source of truth. A row names a route, the scope it needs (None: open
to everyone), what a player session may do there and whether a ``public_read`` board serves it
without a credential; every principal's expected answer follows from that: no key -> 401, a
key with the scope (or ``admin``) -> success, any other key -> 403; a player -> success where
the row says ``all`` (or ``own`` and it is the player's own session or entry), else 403; no
credential on a public board -> success where the row says ``public``, else 401. The rows'
board has ``player_writes`` on, so the player's own score is accepted. The tests check that

- the table lists exactly the routes the app serves (a new route cannot skip the table),
- every cell holds on the live server (status codes; WebSocket close codes and error frames),
- README contains the table exactly as ``render()`` draws it, so the two never drift.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.app import SPECS

README = Path(__file__).resolve().parents[2] / "README.md"

KEYS = {
    "read": "matrix-read-0123456789",
    "write": "matrix-write-0123456789",
    "sessions": "matrix-sessions-0123456789",
    "metrics": "matrix-metrics-0123456789",
    "admin": "matrix-admin-0123456789",
}
PLAYER = "player"  # Authorization: Session <the id the row's {sid} names>, user {user}
OTHER = "other player"  # a live session of another user
PUBLIC = "public board"  # no credential, the row's board has public_read
PRINCIPALS: tuple[str | None, ...] = (None, *KEYS, PLAYER, OTHER, PUBLIC)  # None: no credential


class Row(NamedTuple):
    method: str  # an HTTP method, or "WS" for a WebSocket op
    route: str  # the template as the app routes it (WS: the op)
    path: str  # concrete: {board} {member} {sid} {user} are filled in per check
    body: Any  # JSON body, or None
    scope: str | None  # None: open to everyone
    player: str = ""  # "all": any player; "own": only the {sid}/{user} player; "": none
    public: bool = False  # served without a credential on a public_read board


MATRIX: tuple[Row, ...] = (
    Row("GET", "/v1/boards", "/v1/boards", None, "read", "all"),
    Row("PUT", "/v1/boards/{board}", "/v1/boards/{board}", {}, "write"),
    Row("GET", "/v1/boards/{board}", "/v1/boards/{board}", None, "read", "all", True),
    Row("DELETE", "/v1/boards/{board}", "/v1/boards/{board}", None, "write"),
    Row(
        "POST",
        "/v1/boards/{board}/scores",
        "/v1/boards/{board}/scores",
        {"member": "{user}", "score": 2},
        "write",
        "own",
    ),
    Row(
        "POST",
        "/v1/boards/{board}/scores:batch",
        "/v1/boards/{board}/scores:batch",
        [{"member": "b", "score": 2}],
        "write",
    ),
    Row("GET", "/v1/boards/{board}/top", "/v1/boards/{board}/top", None, "read", "all", True),
    Row(
        "GET",
        "/v1/boards/{board}/rank",
        "/v1/boards/{board}/rank?score=5",
        None,
        "read",
        "all",
        True,
    ),
    Row(
        "GET",
        "/v1/boards/{board}/periods",
        "/v1/boards/{board}/periods",
        None,
        "read",
        "all",
        True,
    ),
    Row(
        "GET",
        "/v1/boards/{board}/members/{member}",
        "/v1/boards/{board}/members/a",
        None,
        "read",
        "all",
        True,
    ),
    Row(
        "DELETE",
        "/v1/boards/{board}/members/{member}",
        "/v1/boards/{board}/members/a",
        None,
        "write",
    ),
    Row(
        "GET",
        "/v1/boards/{board}/members/{member}/around",
        "/v1/boards/{board}/members/a/around",
        None,
        "read",
        "all",
        True,
    ),
    Row(
        "WS",
        "subscribe",
        "/v1/ws",
        {"op": "subscribe", "board": "{board}", "top": 3},
        "read",
        "all",
        True,
    ),
    Row(
        "PATCH",
        "/v1/boards/{board}/members/{member}",
        "/v1/boards/{board}/members/a",
        {"metadata": {"k": 1}},
        "write",
    ),
    Row(
        "POST",
        "/v1/boards/{board}/members:lookup",
        "/v1/boards/{board}/members:lookup",
        {"members": ["a", "zz"]},
        "read",
        "all",
        True,
    ),
    Row(
        "GET",
        "/v1/boards/{board}/scores",
        "/v1/boards/{board}/scores?min=0&max=9",
        None,
        "read",
        "all",
        True,
    ),
    Row(
        "WS",
        "score",
        "/v1/ws",
        {"op": "score", "board": "{board}", "member": "{user}", "score": 1},
        "write",
        "own",
    ),
    Row("POST", "/v1/sessions", "/v1/sessions", {"user": "{user}"}, "sessions"),
    Row("GET", "/v1/sessions/{id}", "/v1/sessions/{sid}", None, "sessions", "own"),
    Row("PATCH", "/v1/sessions/{id}", "/v1/sessions/{sid}", {"data": {"k": 1}}, "sessions"),
    Row("PUT", "/v1/sessions/{id}", "/v1/sessions/{sid}", {"data": {}}, "sessions"),
    Row("DELETE", "/v1/sessions/{id}", "/v1/sessions/{sid}", None, "sessions", "own"),
    Row("POST", "/v1/sessions/{id}/touch", "/v1/sessions/{sid}/touch", None, "sessions", "own"),
    Row("POST", "/v1/sessions/{id}/rotate", "/v1/sessions/{sid}/rotate", None, "sessions", "own"),
    Row("GET", "/v1/users/{user}/sessions", "/v1/users/{user}/sessions", None, "sessions"),
    Row("DELETE", "/v1/users/{user}/sessions", "/v1/users/{user}/sessions", None, "sessions"),
    Row("GET", "/metrics", "/metrics", None, "metrics"),
    Row("POST", "/v1/admin/snapshot", "/v1/admin/snapshot", None, "admin"),
    Row("GET", "/healthz", "/healthz", None, None),
    Row("GET", "/readyz", "/readyz", None, None),
    Row("GET", "/openapi.json", "/openapi.json", None, None),
    Row("GET", "/asyncapi.json", "/asyncapi.json", None, None),
    Row("GET", "/", "/", None, None),
)


def expected(row: Row, principal: str | None) -> str:
    """ "ok", "401" or "403": what ``principal`` (a scope name, a player, None = no key) gets."""
    if row.scope is None:
        return "ok"
    if principal is None:
        return "401"
    if principal == PUBLIC:
        return "ok" if row.public else "401"
    if principal == PLAYER:
        return "ok" if row.player in ("all", "own") else "403"
    if principal == OTHER:
        return "ok" if row.player == "all" else "403"
    return "ok" if principal in (row.scope, "admin") else "403"


def render() -> str:
    """The README table: one row per route, one column per principal."""
    heads = [
        "no key",
        *(f"`{p}` key" for p in KEYS),
        "player: own session, own entry",
        "another player",
        "no key, `public_read` board",
    ]
    lines = [
        "| route | " + " | ".join(heads) + " |",
        "| --- |" + " :---: |" * len(heads),
    ]
    marks = {"ok": "✓", "401": "401", "403": "403"}
    for row in MATRIX:
        name = f"`{row.method} {row.route}`" if row.method != "WS" else f"`/v1/ws` `{row.route}`"
        cells = [marks[expected(row, p)] for p in PRINCIPALS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_the_matrix_lists_every_route_the_app_serves() -> None:
    served = {(spec.method, spec.path) for spec in SPECS} | {("GET", "/")}
    listed = {(row.method, row.route) for row in MATRIX if row.method != "WS"}
    assert listed == served
    ws_ops = {row.route for row in MATRIX if row.method == "WS"}
    assert ws_ops == {"subscribe", "score"}  # unsubscribe needs a subscription: read


def test_readme_shows_the_matrix_as_rendered() -> None:
    table = render()
    assert table in README.read_text(), (
        "README's Security section must contain the scope matrix exactly as "
        "tests/service/test_http_scopes.py renders it:\n\n" + table
    )


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, server_class: Any) -> Iterator[Any]:
    srv = server_class(
        tmp_path_factory.mktemp("matrix"),
        {"api_key": [f"{key}:{scope}" for scope, key in KEYS.items()], "snapshot_interval": 0},
    )
    srv.start()
    yield srv
    srv.stop()


def _auth(principal: str | None, names: dict[str, str]) -> dict[str, str]:
    if principal is None or principal == PUBLIC:
        return {}
    if principal == PLAYER:
        return {"authorization": f"Session {names['sid']}"}
    if principal == OTHER:
        return {"authorization": f"Session {names['other']}"}
    return {"authorization": f"Bearer {KEYS[principal]}"}


def _fill(value: Any, names: dict[str, str]) -> Any:
    text = orjson.dumps(value).decode()
    for key, name in names.items():
        text = text.replace("{" + key + "}", name)
    return orjson.loads(text)


def _fresh(c: httpx.Client, public: bool = False) -> dict[str, str]:
    """A board with member "a" that takes player writes (public_read as asked), a user with
    one session, another user's session: destructive rows get their own."""
    names = {"board": "m" + uuid.uuid4().hex[:10], "user": "u" + uuid.uuid4().hex[:10]}
    admin = _auth("admin", names)
    options = {"player_writes": True, "public_read": public}
    r = c.put(f"/v1/boards/{names['board']}", json=options, headers=admin)
    assert r.status_code == 201, r.text
    r = c.post(
        f"/v1/boards/{names['board']}/scores", json={"member": "a", "score": 1}, headers=admin
    )
    assert r.status_code == 200, r.text
    r = c.post("/v1/sessions", json={"user": names["user"]}, headers=admin)
    assert r.status_code == 201, r.text
    names["sid"] = r.json()["id"]
    r = c.post("/v1/sessions", json={"user": "x" + names["user"]}, headers=admin)
    assert r.status_code == 201, r.text
    names["other"] = r.json()["id"]
    return names


@pytest.mark.parametrize("row", [r for r in MATRIX if r.method != "WS"], ids=lambda r: r.route)
def test_every_http_route_answers_each_principal_as_the_matrix_says(
    keyed: Any, row: Row, problem: Any
) -> None:
    with keyed.client() as c:
        for principal in PRINCIPALS:
            names = _fresh(c, public=principal == PUBLIC)
            path = _fill(row.path, names)
            body = None if row.body is None else _fill(row.body, names)
            r = c.request(row.method, path, json=body, headers=_auth(principal, names))
            want = expected(row, principal)
            where = (row.method, row.route, principal, r.status_code, r.text[:200])
            if want == "ok":
                assert 200 <= r.status_code < 300, where
            else:
                problem(r, int(want), "unauthorized" if want == "401" else "forbidden")
                challenge = r.headers["www-authenticate"]
                if want == "403" and principal in (PLAYER, OTHER):
                    assert challenge.startswith("Session "), where
                elif want == "403":
                    assert f'scope="{row.scope}"' in challenge, where


async def _ws_outcome(srv: Any, headers: dict[str, str], frame: dict[str, Any]) -> str:
    url = srv.url.replace("http://", "ws://") + "/v1/ws"
    async with connect(url, additional_headers=headers, proxy=None) as ws:
        try:
            await ws.send(orjson.dumps({"id": "q", **frame}).decode())
            answer = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        except ConnectionClosed:
            assert ws.close_code == 1008 and (ws.close_reason or "").startswith("unauthorized")
            return "401"
    if answer["type"] == "error":
        assert answer["id"] == "q", answer
        return str(answer["status"])
    assert answer["type"] in ("top", "ack"), answer
    return "ok"


@pytest.mark.parametrize("row", [r for r in MATRIX if r.method == "WS"], ids=lambda r: r.route)
def test_every_websocket_op_answers_each_principal_as_the_matrix_says(keyed: Any, row: Row) -> None:
    for principal in PRINCIPALS:
        with keyed.client() as c:
            names = _fresh(c, public=principal == PUBLIC)
        frame = _fill(row.body, names)
        outcome = _ws_outcome(keyed, _auth(principal, names), frame)
        got = asyncio.run(asyncio.wait_for(outcome, 30))
        assert got == expected(row, principal), (row.route, principal, got)
