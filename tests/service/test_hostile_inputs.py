"""Every hostile value in every input place is a 4xx (or an error frame), never a 500.

One real server; a table of every body field, query parameter, path parameter and WebSocket
field of every route, and a set of hostile JSON values dropped into each: arrays and objects
nested 100, 1,000 and 5,000 deep (``repr`` overflows the stack near 1,000, orjson's parser
stops at 1,024, its serialiser at 254), a string near the body cap, a 20,000-item array, a
number that overflows a double, and a session-id-shaped string that must never be echoed.
At the end the server log holds no traceback.

Bodies are built as text (a hole ``@`` replaced by the raw value): orjson itself could not
encode a value 1,000 deep.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TOKEN = secrets.token_urlsafe(32)  # shaped like a session id: must never come back


def _deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


HOSTILE: dict[str, str] = {
    "array100": _deep_array(100),
    "array300": _deep_array(300),
    "array1000": _deep_array(1000),
    "array5000": _deep_array(5000),
    "object1000": _deep_object(1000),
    "mixed1000": '[{"a":' * 500 + "1" + "}]" * 500,
    "long-string": '"' + "x" * 50_000 + '"',
    "wide-array": "[" + ",".join(["0"] * 20_000) + "]",
    "huge-number": "1" * 5000,
    "token": f'"{TOKEN}"',
    "control": '"a\\u0085b"',
}

# Valid JSON strings that some fields rightly accept (a session-id-shaped member, a C1 control
# inside session data); everywhere else, and every other value anywhere, must be a 4xx.
MAY_SUCCEED = frozenset({"token", "control"})

B = "/v1/boards/hb"

# (method, path, body template with one "@" hole), path parameter holes use "{@}".
BODY_FIELDS: list[tuple[str, str, str]] = [
    ("PUT", B, "@"),
    ("PUT", B, '{"order": @}'),
    ("PUT", B, '{"update": @}'),
    ("PUT", B, '{"ties": @}'),
    ("POST", B + "/scores", "@"),
    ("POST", B + "/scores", '{"member": @, "score": 1}'),
    ("POST", B + "/scores", '{"member": "m", "score": @}'),
    ("POST", B + "/scores", '{"member": "m", "score": 1, "metadata": @}'),
    ("POST", B + "/scores", '{"member": "m", "score": 1, "metadata": {"k": @}}'),
    ("POST", B + "/scores", '{"member": "m", "score": 1, "extra": @}'),
    ("POST", B + "/scores:batch", "@"),
    ("POST", B + "/scores:batch", "[@]"),
    ("POST", B + "/scores:batch", '[{"member": @, "score": 1}]'),
    ("POST", B + "/scores:batch", '[{"member": "m", "score": @}]'),
    ("POST", B + "/scores:batch", '[{"member": "m", "score": 1, "metadata": @}]'),
    ("POST", B + "/scores:batch", '[{"member": "m", "score": 1, "metadata": {"k": @}}]'),
    ("POST", "/v1/sessions", "@"),
    ("POST", "/v1/sessions", '{"user": @}'),
    ("POST", "/v1/sessions", '{"data": @}'),
    ("POST", "/v1/sessions", '{"data": {"k": @}}'),
    ("POST", "/v1/sessions", '{"ttl": @}'),
    ("POST", "/v1/sessions", '{"max_lifetime": @}'),
    ("PUT", "/v1/sessions/{sid}", "@"),
    ("PUT", "/v1/sessions/{sid}", '{"data": @}'),
    ("PUT", "/v1/sessions/{sid}", '{"data": {"k": @}}'),
    ("PATCH", "/v1/sessions/{sid}", "@"),
    ("PATCH", "/v1/sessions/{sid}", '{"data": @}'),
    ("PATCH", "/v1/sessions/{sid}", '{"data": {"k": @}}'),
    ("POST", "/v1/sessions/{sid}/touch", "@"),
    ("POST", "/v1/admin/snapshot", "@"),
]

# (method, path with a "@" hole in the query string or a path segment); the raw JSON text is
# sent percent-encoded, capped near the URL sizes a proxy would pass.
URL_HOLES: list[tuple[str, str]] = [
    ("GET", "/v1/boards?offset=@"),
    ("GET", "/v1/boards?limit=@"),
    ("GET", "/v1/boards?@=1"),
    ("GET", B + "/top?offset=@"),
    ("GET", B + "/top?limit=@"),
    ("GET", B + "/members/m/around?radius=@"),
    ("GET", B + "/rank?score=@"),
    ("GET", "/v1/sessions/{sid}?touch=@"),
    ("HEAD", "/v1/sessions/{sid}?touch=@"),
    ("GET", "/v1/users/u/sessions?except=@"),
    ("DELETE", "/v1/users/u/sessions?except=@"),
    ("GET", "/v1/boards/@"),
    ("PUT", "/v1/boards/@"),
    ("DELETE", "/v1/boards/@"),
    ("POST", "/v1/boards/@/scores"),
    ("GET", B + "/members/@"),
    ("DELETE", B + "/members/@"),
    ("GET", B + "/members/@/around"),
    ("GET", "/v1/sessions/@"),
    ("PATCH", "/v1/sessions/@"),
    ("DELETE", "/v1/sessions/@"),
    ("POST", "/v1/sessions/@/touch"),
    ("POST", "/v1/sessions/@/rotate"),
    ("GET", "/v1/users/@/sessions"),
    ("DELETE", "/v1/users/@/sessions"),
]

WS_TEMPLATES: list[str] = [
    "@",
    '{"op": @, "id": 1}',
    '{"op": "subscribe", "id": @, "board": "hb", "top": 3}',
    '{"op": "subscribe", "id": 1, "board": @, "top": 3}',
    '{"op": "subscribe", "id": 1, "board": "hb", "top": @}',
    '{"op": "subscribe", "id": 1, "board": "hb", "member": @}',
    '{"op": "subscribe", "id": 1, "board": "hb", "top": 3, "extra": @}',
    '{"op": "unsubscribe", "id": @}',
    '{"op": "score", "id": @, "board": "hb", "member": "m", "score": 1}',
    '{"op": "score", "id": 1, "board": @, "member": "m", "score": 1}',
    '{"op": "score", "id": 1, "board": "hb", "member": @, "score": 1}',
    '{"op": "score", "id": 1, "board": "hb", "member": "m", "score": @}',
    '{"op": "score", "id": 1, "board": "hb", "member": "m", "score": 1, "metadata": @}',
    '{"op": "score", "id": 1, "board": "hb", "member": "m", "score": 1, "metadata": {"k": @}}',
    '{"op": "score", "id": 1, "board": "hb", "member": "m", "score": 1, "extra": @}',
]


@pytest.fixture(scope="module")
def srv(server_class: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    s = server_class(tmp_path_factory.mktemp("hostile"), {})
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sid(srv: Any) -> str:
    with srv.client() as c:
        c.post(f"{B}/scores", json={"member": "m", "score": 1})
        r = c.post("/v1/sessions", json={"user": "u"})
        assert r.status_code == 201
        value: str = r.json()["id"]
        return value


def _no_leak(text: str, what: str) -> None:
    for i in range(0, len(TOKEN) - 8):
        assert TOKEN[i : i + 8] not in text, f"{what}: a fragment of the token was echoed: {text}"


def _check(r: httpx.Response, what: str, label: str) -> None:
    if label in MAY_SUCCEED and r.status_code < 300:
        return
    assert 400 <= r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"] == "application/problem+json", what
    assert len(r.content) < 2048, f"{what}: detail of {len(r.content)} bytes"
    _no_leak(r.text, what)


@pytest.mark.parametrize("method,path,template", BODY_FIELDS)
def test_body_fields(srv: Any, sid: str, method: str, path: str, template: str) -> None:
    with srv.client() as c:
        for label, value in HOSTILE.items():
            body = template.replace("@", value).encode()
            r = c.request(
                method,
                path.replace("{sid}", sid),
                content=body,
                headers={"content-type": "application/json"},
            )
            if method == "POST" and path.endswith(("/touch", "/snapshot")):
                # These take no body: ignoring one is fine, as long as it is not a 500.
                assert r.status_code < 500, (label, r.status_code, r.text[:300])
                continue
            _check(r, f"{method} {path} {template} <- {label}", label)


@pytest.mark.parametrize("method,path", URL_HOLES)
def test_query_and_path(srv: Any, sid: str, method: str, path: str) -> None:
    with srv.client() as c:
        for label, value in HOSTILE.items():
            raw = quote(value[:6000], safe="")
            body = b'{"member": "m", "score": 1}' if method == "POST" else b'{"data": {}}'
            r = c.request(
                method,
                path.replace("{sid}", sid).replace("@", raw),
                content=body if method in ("POST", "PATCH", "PUT") else None,
            )
            what = f"{method} {path} <- {label}"
            assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
            if r.status_code >= 300 and method != "HEAD":  # in a path "[[[...]]]" is a string
                _check(r, what, label)


def test_if_match_header(srv: Any, sid: str) -> None:
    with srv.client() as c:
        for label, value in HOSTILE.items():
            r = c.patch(
                f"/v1/sessions/{sid}", json={"data": {}}, headers={"if-match": value[:4000]}
            )
            _check(r, f"If-Match <- {label}", label)


def test_websocket_fields(srv: Any) -> None:
    async def main() -> None:
        url = srv.url.replace("http", "ws", 1) + "/v1/ws"
        for template in WS_TEMPLATES:
            for label, value in HOSTILE.items():
                # A fresh connection each time: a request that rightly succeeds (a token-shaped
                # member) leaves a subscription whose pushes must not be read as the next answer.
                async with connect(url, max_size=2**22) as ws:
                    await ws.send(template.replace("@", value))
                    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    what = f"ws {template} <- {label}"
                    if label in MAY_SUCCEED and frame["type"] != "error":
                        continue
                    assert frame["type"] == "error", (what, frame)
                    assert 400 <= frame["status"] < 500, (what, frame)
                    assert len(frame["detail"]) < 1024, what
                    _no_leak(frame["detail"], what)

    asyncio.run(asyncio.wait_for(main(), 120))


def test_websocket_query_parameters(srv: Any) -> None:
    """?session= and ?token= with hostile values: a close frame (or an open connection), no 500."""

    async def main() -> None:
        base = srv.url.replace("http", "ws", 1) + "/v1/ws"
        for name in ("session", "token"):
            for value in HOSTILE.values():
                url = f"{base}?{name}={quote(value[:6000], safe='')}"
                try:
                    await _query_answer(url, name)
                except InvalidStatus as exc:  # e.g. 414 from the handshake for a long URL
                    assert 400 <= exc.response.status_code < 500, exc

    asyncio.run(asyncio.wait_for(main(), 120))


async def _query_answer(url: str, name: str) -> None:
    async with connect(url, max_size=2**22) as ws:
        try:
            await ws.send('{"op": "unsubscribe", "id": 1}')
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed:
            assert ws.close_code == 1008, (name, ws.close_code)
            assert TOKEN[:8] not in (ws.close_reason or "")
            return
        assert frame["type"] == "error" and frame["status"] == 404, frame


def test_zz_no_traceback_in_the_log(srv: Any) -> None:
    """Runs last in this module: nothing above left a traceback or a 500 behind."""
    with srv.client() as c:
        assert c.get("/healthz").status_code == 200
    logs = srv.logs()
    assert "Traceback" not in logs, logs[-3000:]
    assert "unhandled error" not in logs, logs[-3000:]
    assert "RecursionError" not in logs, logs[-3000:]
