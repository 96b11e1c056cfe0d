"""Edges of issue #12 against the real server: scopes, safe methods, addressable names, paths
and credentials in error details.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ADMIN_KEY = "admin-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"
SESSIONS_KEY = "sess-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed(server_class: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = server_class(
        tmp_path_factory.mktemp("edges"),
        {"api_key": [f"{ADMIN_KEY}:admin", f"{READ_KEY}:read", f"{SESSIONS_KEY}:sessions"]},
    )
    s.start()
    yield s
    s.stop()


def _client(srv: Any, key: str) -> httpx.Client:
    c: httpx.Client = srv.client(headers={"authorization": f"Bearer {key}"})
    return c


def _new_session(srv: Any, **body: Any) -> dict[str, Any]:
    with _client(srv, SESSIONS_KEY) as c:
        r = c.post("/v1/sessions", json=body)
        assert r.status_code == 201, r.text
        session: dict[str, Any] = r.json()
        return session


def _peek(srv: Any, sid: str) -> float:
    with _client(srv, SESSIONS_KEY) as c:
        r = c.get(f"/v1/sessions/{sid}", params={"touch": "false"})
        assert r.status_code == 200, r.text
        expires: float = r.json()["expires_at"]
        return expires


async def _ws_outcome(srv: Any, query: str) -> tuple[int | None, str]:
    """(close code, reason) if the server closes the connection, else (None, first frame)."""
    url = srv.url.replace("http://", "ws://") + "/v1/ws" + query
    async with connect(url, proxy=None) as ws:
        try:
            frame = orjson.dumps({"op": "subscribe", "id": 1, "board": "b", "top": 1}).decode()
            await ws.send(frame)
            frame = await asyncio.wait_for(ws.recv(), 5)  # type: ignore[arg-type]
        except ConnectionClosed:
            assert ws.close_code is not None
            return ws.close_code, ws.close_reason or ""
        return None, str(frame)


def test_ws_session_binding_needs_the_sessions_scope(keyed: Any) -> None:
    sid = _new_session(keyed, ttl=3600)["id"]
    before = _peek(keyed, sid)
    code, reason = asyncio.run(_ws_outcome(keyed, f"?token={READ_KEY}&session={sid}"))
    assert (code, reason) == (1008, "the 'sessions' scope is needed to bind ?session=")
    # Not even probed: a read key's attempt did not refresh the idle deadline.
    assert _peek(keyed, sid) == before
    # The same answer for an id that does not exist: nothing to learn from the difference.
    code, _ = asyncio.run(_ws_outcome(keyed, f"?token={READ_KEY}&session={'x' * 43}"))
    assert code == 1008
    # An admin key (which implies sessions) binds and subscribes.
    code, frame = asyncio.run(_ws_outcome(keyed, f"?token={ADMIN_KEY}&session={sid}"))
    assert code is None and '"type":"top"' in frame, frame


def test_head_never_touches_a_session(keyed: Any) -> None:
    sid = _new_session(keyed, ttl=3600)["id"]
    before = _peek(keyed, sid)
    with _client(keyed, SESSIONS_KEY) as c:
        for query in ("", "?touch=true"):
            r = c.head(f"/v1/sessions/{sid}{query}")
            assert r.status_code == 200 and r.content == b""
    assert _peek(keyed, sid) == before
    with _client(keyed, SESSIONS_KEY) as c:
        assert c.get(f"/v1/sessions/{sid}").json()["expires_at"] > before  # GET still touches


@pytest.mark.parametrize("user", ["a/b", "/", ".", "..", "a\x85b", "a\x9fb", "a\x00b", "\x7f"])
def test_unaddressable_or_control_user_ids_are_refused(http: httpx.Client, user: str) -> None:
    r = http.post("/v1/sessions", json={"user": user})
    assert r.status_code == 400, (user, r.text)
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("member", ["a/b", ".", "..", "a\x85b", "\x80", "é\x9f"])
def test_unaddressable_or_control_members_are_refused(
    http: httpx.Client, name: str, member: str
) -> None:
    r = http.post(f"/v1/boards/{name}/scores", json={"member": member, "score": 1})
    assert r.status_code == 400, (member, r.text)
    r = http.post(f"/v1/boards/{name}/scores:batch", json=[{"member": member, "score": 1}])
    assert r.status_code == 400, (member, r.text)
    assert http.get(f"/v1/boards/{name}").status_code == 404  # nothing was created


@pytest.mark.parametrize("board", [".", ".."])
def test_dot_board_names_are_refused(server: Any, board: str) -> None:
    encoded = board.replace(".", "%2E")  # as a client would have to send it: "." is resolved
    with server.client() as c:
        assert c.put(f"/v1/boards/{encoded}").status_code == 400
        r = c.post(f"/v1/boards/{encoded}/scores", json={"member": "m", "score": 1})
        assert r.status_code == 400, r.text
        names = [b["board"] for b in c.get("/v1/boards", params={"limit": 1000}).json()["boards"]]
        assert board not in names

    async def ws() -> dict[str, Any]:
        url = server.url.replace("http://", "ws://") + "/v1/ws"
        async with connect(url, proxy=None) as conn:
            frame = {"op": "score", "id": 1, "board": board, "member": "m", "score": 1}
            await conn.send(orjson.dumps(frame).decode())
            answer: dict[str, Any] = orjson.loads(await asyncio.wait_for(conn.recv(), 5))
            return answer

    answer = asyncio.run(ws())
    assert answer["type"] == "error" and answer["status"] == 400, answer


def _raw_get(srv: Any, target: str) -> bytes:
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize(
    "target", ["//seg/v1/boards", "//seg/healthz", "//v1/boards", "//127.0.0.1/openapi.json"]
)
def test_double_slash_paths_are_not_found(server: Any, target: str) -> None:
    head = _raw_get(server, target).split(b"\r\n", 1)[0]
    assert head == b"HTTP/1.1 404 Not Found", (target, head)


def test_a_session_id_in_the_wrong_place_is_never_echoed(http: httpx.Client, name: str) -> None:
    r = http.post("/v1/sessions", json={"user": name})
    sid = r.json()["id"]
    answers = [
        http.get(f"/v1/boards/{sid}"),
        http.get(f"/v1/boards/{sid}/top"),
        http.delete(f"/v1/boards/{sid}"),
        http.get(f"/v1/boards/{name}/members/{sid}"),
        http.get(f"/v1/boards/{name}/top", params={"offset": sid}),
        http.get(f"/v1/boards/{name}/rank", params={"score": sid}),
        http.get("/v1/boards", params={sid: "1"}),
        http.get(f"/v1/sessions/{sid}", params={"touch": sid}),
        http.patch(f"/v1/sessions/{sid}", json={"data": {}}, headers={"if-match": sid}),
        http.post(f"/v1/boards/{name}/scores", json={"member": "m", "score": sid}),
        http.post(f"/v1/boards/{name}/scores", json={"member": "m", "score": 1, sid: 1}),
        http.post(f"/v1/boards/{name}/scores", json={"member": "m", "score": 1, "metadata": sid}),
        http.post(f"/v1/boards/{name}/scores:batch", json=[{"member": sid + "/", "score": 1}]),
        http.put(f"/v1/boards/{name}", json={"order": sid}),
        http.put(f"/v1/boards/{name}", json={sid: "asc"}),
        http.post("/v1/sessions", json={"ttl": sid}),
        http.post("/v1/sessions", json={"user": sid + "/"}),
        http.post("/v1/sessions", json={"data": sid}),
    ]
    for r in answers:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code)
        for i in range(len(sid) - 8):
            assert sid[i : i + 8] not in r.text, (str(r.request.url)[:60], r.text)
