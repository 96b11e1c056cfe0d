"""The browser rules (service/browser.py) and HTTP conformance, header by header, on the real
process. What a real browser does with them is test_browser_attack.py.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.browser import is_json, is_loopback_host, own_origin

JSON = {"content-type": "application/json"}
ALLOWED = "http://game.example:3000"
KEY = "browser-admin-key-0123456789"


@pytest.fixture(scope="module")
def cors(tmp_path_factory: pytest.TempPathFactory, server_class: Any) -> Iterator[Any]:
    # Given as the environment variable, with a default port that browsers never send.
    env = {"RANKD_CORS_ORIGINS": f"{ALLOWED}, HTTPS://Shop.Example:443"}
    srv = server_class(tmp_path_factory.mktemp("cors"), {}, env=env)
    srv.start()
    yield srv
    srv.stop()


def _score(c: httpx.Client, board: str, **headers: str) -> httpx.Response:
    return c.post(
        f"/v1/boards/{board}/scores", content=b'{"member":"m","score":1}', headers=headers
    )


@pytest.mark.parametrize(
    ("ctype", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/merge-patch+json", True),
        ("text/plain", False),  # the no-cors simple request
        ("text/plain; charset=utf-8", False),
        ("application/x-www-form-urlencoded", False),  # an HTML form, or curl -d
        ("multipart/form-data; boundary=x", False),
        ("application/jsonx", False),
        ("text/json", False),
    ],
)
def test_a_body_must_be_declared_json(http: httpx.Client, name: str, problem, ctype, ok) -> None:
    r = _score(http, name, **{"content-type": ctype})
    if ok:
        assert r.status_code == 200, r.text
    else:
        body = problem(r, 415, "unsupported-media-type")
        assert ctype[:20] in body["detail"]
        problem(http.get(f"/v1/boards/{name}/members/m"), 404)  # nothing was written


def test_415_covers_every_body_and_any_declared_type(http: httpx.Client, name: str, problem):
    problem(_score(http, name), 415)  # a body without any Content-Type
    problem(http.post("/v1/sessions", content=b"{}", headers={"content-type": "text/plain"}), 415)
    # Declared but empty: a form posting nothing must not create a session with defaults.
    form = {"content-type": "application/x-www-form-urlencoded"}
    problem(http.post("/v1/sessions", headers=form), 415)
    problem(
        http.put(f"/v1/boards/{name}", content=b"{}", headers={"content-type": "text/plain"}), 415
    )
    # No body, no Content-Type: a bodiless write is fine (curl -XPOST .../touch).
    assert http.post("/v1/sessions").status_code == 201
    assert http.put(f"/v1/boards/{name}").status_code in (200, 201)
    # Reads ignore Content-Type.
    assert http.get(f"/v1/boards/{name}", headers={"content-type": "text/plain"}).status_code == 200


def test_a_foreign_origin_may_not_write_but_may_read(http: httpx.Client, server, name, problem):
    own = f"http://127.0.0.1:{server.port}"
    assert _score(http, name, origin=own, **JSON).status_code == 200
    for origin in (
        "http://evil.example",
        "null",
        f"http://localhost:{server.port}",
        "https://127.0.0.1",
    ):
        body = problem(_score(http, name, origin=origin, **JSON), 403, "origin-not-allowed")
        assert origin in body["detail"]
        problem(http.post("/v1/sessions", headers={"origin": origin}), 403, "origin-not-allowed")
        problem(http.post("/v1/admin/snapshot", headers={"origin": origin}), 403)
        problem(http.delete(f"/v1/boards/{name}", headers={"origin": origin}), 403)
        # GET is no write: without CORS headers the page cannot read the answer anyway.
        r = http.get(f"/v1/boards/{name}/top", headers={"origin": origin})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert http.get(f"/v1/boards/{name}/top").json()["total"] == 1
    # Same host under a name the browser would treat as another origin is still foreign,
    # but the Host the client used is what "own" means.
    same = {"host": f"localhost:{server.port}", "origin": f"http://localhost:{server.port}"}
    assert _score(http, name, **same, **JSON).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "localhost.",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "192.0.2.1",
        "[2001:db8::1]:80",
        "",
    ],
)
def test_protected_mode_refuses_a_rebound_host(http: httpx.Client, name, problem, host) -> None:
    headers = {"host": host}
    body = problem(http.get("/v1/boards", headers=headers), 403, "host-not-allowed")
    assert "DNS rebinding" in body["detail"]
    problem(_score(http, name, **headers, **JSON), 403, "host-not-allowed")
    problem(http.get("/metrics", headers=headers), 403, "host-not-allowed")
    problem(http.get(f"/v1/boards/{name}/top"), 404)  # nothing was written


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:1", "127.0.0.1", "127.3.4.5:80", "[::1]:9"]
)
def test_protected_mode_accepts_loopback_hosts(http: httpx.Client, host: str) -> None:
    assert http.get("/v1/boards", headers={"host": host}).status_code == 200


def test_with_keys_any_host_is_fine_but_origins_still_count(rankd_server, problem) -> None:
    srv = rankd_server(api_key=[f"{KEY}:admin"])
    auth = {"authorization": f"Bearer {KEY}"}
    with srv.client(headers=auth) as c:
        # Behind a proxy the Host is the public name; the key is what protects the data.
        assert c.get("/v1/boards", headers={"host": "rank.example"}).status_code == 200
        problem(_score(c, "k", origin="http://evil.example", **JSON), 403, "origin-not-allowed")
        assert _score(c, "k", host="rank.example", origin="http://rank.example", **JSON).is_success


def test_cors_preflight_and_writes_from_an_allowed_origin(cors, problem) -> None:
    with cors.client() as c:
        pre = c.options(
            "/v1/boards/c/scores",
            headers={
                "origin": ALLOWED,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, authorization",
            },
        )
        assert pre.status_code == 200, pre.text
        assert pre.headers["access-control-allow-origin"] == ALLOWED
        assert "POST" in pre.headers["access-control-allow-methods"]
        allowed = pre.headers["access-control-allow-headers"].lower()
        assert "content-type" in allowed and "authorization" in allowed
        # Chrome's Private Network Access: a public page reaching a loopback server.
        pna = c.options(
            "/v1/boards/c/scores",
            headers={
                "origin": ALLOWED,
                "access-control-request-method": "POST",
                "access-control-request-private-network": "true",
            },
        )
        assert pna.status_code == 200, pna.text
        assert pna.headers["access-control-allow-private-network"] == "true"
        r = _score(c, "c", origin=ALLOWED, **JSON)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ALLOWED
        # The default port was dropped from the setting, as browsers drop it from Origin.
        assert _score(c, "c", origin="https://shop.example", **JSON).status_code == 200
        s = c.post("/v1/sessions", headers={"origin": ALLOWED})
        assert s.status_code == 201
        assert "etag" in s.headers["access-control-expose-headers"].lower()

        evil = {"origin": "http://evil.example", "access-control-request-method": "POST"}
        bad = c.options("/v1/boards/c/scores", headers=evil)
        assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
        problem(_score(c, "c", origin="http://evil.example", **JSON), 403, "origin-not-allowed")


def test_without_cors_origins_a_preflight_finds_nothing(http: httpx.Client) -> None:
    pre = http.options(
        "/v1/boards/x/scores",
        headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
    )
    assert pre.status_code == 405 and "access-control-allow-origin" not in pre.headers


def _handshake(port: int, origin: str | None, host: str | None = None) -> int:
    """The status of a raw WebSocket handshake (101 = upgraded) with exactly these headers."""
    lines = [
        "GET /v1/ws HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = sock.recv(1024).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def test_websocket_handshake_checks_origin_and_host(server, cors) -> None:
    p = server.port
    assert _handshake(p, None) == 101  # no Origin: not a browser
    assert _handshake(p, f"http://127.0.0.1:{p}") == 101  # the live page
    assert _handshake(p, "http://evil.example") == 403
    assert _handshake(p, "null") == 403
    assert _handshake(p, None, host="evil.example") == 403
    # DNS rebinding: the page *is* same-origin with the Host it used; only the Host rule helps.
    assert _handshake(p, f"http://evil.example:{p}", host=f"evil.example:{p}") == 403
    assert _handshake(cors.port, ALLOWED) == 101


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("*", "no '*'"),
        ("null", "null"),
        ("https://a.example/", "no path"),
        ("a.example", "a.example"),
    ],
)
def test_bad_cors_origins_stop_the_process(tmp_path, rankd_argv, spec, needle) -> None:
    r = subprocess.run(
        [*rankd_argv, "--data-dir", str(tmp_path / "d"), "--cors-origins", spec],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2 and "--cors-origins" in r.stderr and needle in r.stderr, r.stderr


def test_rule_helpers() -> None:
    assert is_json(b"application/problem+json") and not is_json(b"application/json-seq")
    assert is_loopback_host("[::1]") and not is_loopback_host("[::1")
    assert not is_loopback_host("::1")  # an IPv6 Host must be bracketed
    assert own_origin("wss", "Rank.Example:443") == "https://rank.example"
    assert own_origin("http", "localhost:80") == "http://localhost"


# -- HTTP conformance -------------------------------------------------------------------------


def test_session_answers_are_never_stored_by_caches(http: httpx.Client, name, problem) -> None:
    r = http.post("/v1/sessions", json={"user": name})
    sid = r.json()["id"]
    url = f"/v1/sessions/{sid}"
    answers = [
        r,
        http.get(url),
        http.patch(url, json={"data": {"a": 1}}),
        http.put(url, json={"data": {}}),
        http.post(url + "/touch"),
        http.get(f"/v1/users/{name}/sessions"),
        http.patch(url, json={"data": {}}, headers={"if-match": '"99"'}),  # an error too
    ]
    rotated = http.post(url + "/rotate")
    answers += [rotated, http.get(url)]  # the 404 of the dead id
    new = f"/v1/sessions/{rotated.json()['id']}"
    answers += [http.delete(f"/v1/users/{name}/sessions", params={"except": rotated.json()["id"]})]
    answers += [http.delete(new)]
    for answer in answers:
        assert answer.headers.get("cache-control") == "no-store", (
            answer.request.url,
            answer.headers,
        )
    assert "cache-control" not in http.get("/v1/boards").headers


def test_if_none_match_on_an_existing_session_is_412(http: httpx.Client, problem) -> None:
    s = http.post("/v1/sessions", json={"data": {"a": 1}}).json()
    url = f"/v1/sessions/{s['id']}"
    problem(
        http.put(url, json={"data": {}}, headers={"if-none-match": "*"}), 412, "precondition-failed"
    )
    problem(http.patch(url, json={"data": {}}, headers={"if-none-match": 'W/"1"'}), 412)
    r = http.put(url, json={"data": {"b": 2}}, headers={"if-none-match": '"7"'})
    assert r.status_code == 200 and r.json()["data"] == {"b": 2}
    # Both conditions: If-Match true, If-None-Match false -> 412, nothing written.
    both = {"if-match": '"2"', "if-none-match": '"2"'}
    problem(http.put(url, json={"data": {}}, headers=both), 412)
    assert http.get(url).json()["data"] == {"b": 2}
    # An unknown id: If-Match has nothing to match (404); If-None-Match: * creates the session
    # under the caller's id (tests/contract/test_session_ids.py covers that form in full).
    unknown = "/v1/sessions/" + "c" * 43
    problem(http.put(unknown, json={"data": {}}, headers={"if-match": '"1"'}), 404)
    assert http.put(unknown, json={"data": {}}, headers={"if-none-match": "*"}).status_code == 201
    problem(http.put(url, json={"data": {}}, headers={"if-none-match": "nope"}), 400)


def test_an_empty_except_revokes_nothing(http: httpx.Client, name: str, problem) -> None:
    for _ in range(2):
        http.post("/v1/sessions", json={"user": name})
    body = problem(http.delete(f"/v1/users/{name}/sessions?except="), 400, "bad-request")
    assert "except" in body["detail"]
    assert len(http.get(f"/v1/users/{name}/sessions").json()["sessions"]) == 2


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/boards/"),
        ("GET", "/v1/boards/b/top/"),
        ("POST", "/v1/boards/b/scores/"),
        ("POST", "/v1/sessions/"),
        ("GET", "/metrics/"),
    ],
)
def test_a_trailing_slash_is_a_404_problem(http: httpx.Client, problem, method, path) -> None:
    r = http.request(method, path, json={"member": "m", "score": 1}, follow_redirects=False)
    problem(r, 404, "not-found")
    assert "location" not in r.headers
