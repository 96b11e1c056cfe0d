"""Count caps on both backends: ``--max-boards`` and ``--max-anonymous-sessions`` answer 507
``insufficient-storage`` past them, and a drop, a delete, a rotate or an expiry makes room
again (README "Limits"; on the redis backend the counts are cluster-wide, README "Scaling
out"). Each test runs its own server on a fresh namespace (a redis key prefix of its own), so
the boards and sessions of the rest of the suite do not count."""

import time
import uuid
from typing import Any

import httpx


def fresh(rankd_server: Any, **flags: Any) -> Any:
    return rankd_server(redis_prefix="cap" + uuid.uuid4().hex[:8], **flags)


def test_max_boards(rankd_server: Any, problem: Any) -> None:
    srv = fresh(rankd_server, max_boards=3)
    with srv.client() as c:
        for name in ("a", "b"):
            assert c.put(f"/v1/boards/{name}").status_code == 201
        assert c.post("/v1/boards/c/scores", json={"member": "m", "score": 1}).status_code == 200
        body = problem(c.put("/v1/boards/d"), 507, "insufficient-storage")
        assert "--max-boards" in body["detail"]
        problem(c.post("/v1/boards/d/scores", json={"member": "m", "score": 1}), 507)
        problem(c.post("/v1/boards/d/scores:batch", json=[{"member": "m", "score": 1}]), 507)
        assert c.get("/v1/boards/d").status_code == 404  # a refused create leaves nothing
        # existing boards take writes and options at the cap
        assert c.post("/v1/boards/a/scores", json={"member": "m", "score": 1}).status_code == 200
        assert c.put("/v1/boards/b", json={"update": "sum"}).status_code == 200
        assert c.delete("/v1/boards/a").status_code == 204
        assert c.put("/v1/boards/d").status_code == 201  # room again
        problem(c.put("/v1/boards/e"), 507, "insufficient-storage")
        assert c.get("/v1/boards").json()["total"] == 3


def test_max_anonymous_sessions(rankd_server: Any, problem: Any) -> None:
    srv = fresh(rankd_server, max_anonymous_sessions=2)
    with srv.client() as c:
        first = c.post("/v1/sessions", json={}).json()["id"]
        second = c.post("/v1/sessions", json={}).json()["id"]
        body = problem(c.post("/v1/sessions", json={}), 507, "insufficient-storage")
        assert "--max-anonymous-sessions" in body["detail"]
        assert c.post("/v1/sessions", json={"user": "u"}).status_code == 201  # users: own cap
        assert c.delete(f"/v1/sessions/{first}").status_code == 204
        third = c.post("/v1/sessions", json={})
        assert third.status_code == 201, third.text
        problem(c.post("/v1/sessions", json={}), 507)
        # a rotated session is still one session
        rotated = c.post(f"/v1/sessions/{second}/rotate")
        assert rotated.status_code in (200, 201), rotated.text
        problem(c.post("/v1/sessions", json={}), 507)
        assert c.delete(f"/v1/sessions/{rotated.json()['id']}").status_code == 204
        assert c.post("/v1/sessions", json={}).status_code == 201


def test_expired_anonymous_sessions_free_their_places_and_live_ones_keep_them(
    rankd_server: Any, problem: Any
) -> None:
    srv = fresh(rankd_server, max_anonymous_sessions=2)
    with srv.client() as c:
        short = c.post("/v1/sessions", json={"ttl": 1}).json()["id"]
        kept = c.post("/v1/sessions", json={"ttl": 1}).json()["id"]
        problem(c.post("/v1/sessions", json={}), 507)
        # keep one alive past its first idle deadline by using it; let the other expire
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert c.get(f"/v1/sessions/{kept}").status_code == 200
            time.sleep(0.3)
        assert c.get(f"/v1/sessions/{short}", params={"touch": "false"}).status_code == 404
        created = _until_created(c, 10.0)
        assert created.status_code == 201, created.text
        # the used one still holds its place: the cap is full again
        assert c.get(f"/v1/sessions/{kept}").status_code == 200
        problem(c.post("/v1/sessions", json={}), 507)


def _until_created(c: httpx.Client, timeout: float) -> httpx.Response:
    # the embedded engine purges expired sessions in the background (store/ttl.py): give it
    # its turn; the redis backend verifies the candidates in the create itself
    deadline = time.monotonic() + timeout
    while True:
        r = c.post("/v1/sessions", json={})
        if r.status_code != 507 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)
