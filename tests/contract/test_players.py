"""Players and public boards (DESIGN "Security"), through the real server, once per backend.

A game backend (the ``sessions`` key) creates a session for a user; the game client sends
``Authorization: Session <id>`` (``?session=`` on /v1/ws) and may read every board, write its own
entry on ``player_writes`` boards within ``player_rate``, and read, touch, rotate or delete its
own session.
``public_read`` boards serve reads and subscriptions with no credential.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.contract.conftest import BACKENDS
from tests.contract.test_ws import run, ws_client
from tests.servers import RankdServer

ADMIN = "players-admin-0123456789"
BACKEND = "players-backend-0123456789"  # what a game backend holds: sessions
READER = "players-read-0123456789"
KEYS = [f"{ADMIN}:admin", f"{BACKEND}:sessions", f"{READER}:read"]


@pytest.fixture(scope="module")
def keyed(
    backend: str, backend_flags: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RankdServer]:
    chosen = BACKENDS[backend]
    srv = RankdServer(  # backend_flags: the cluster's url and this session's key prefix
        tmp_path_factory.mktemp(f"players-{backend}"),
        {**backend_flags, "api_key": KEYS},
        env=chosen.env,
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def c(keyed: RankdServer) -> Iterator[httpx.Client]:
    with keyed.client() as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def session_of(sid: str) -> dict[str, str]:
    return {"authorization": f"Session {sid}"}


def new_board(c: httpx.Client, **options: Any) -> str:
    board = "p" + uuid.uuid4().hex[:12]
    r = c.put(f"/v1/boards/{board}", json=options, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    return board


def new_player(c: httpx.Client, user: str | None = None, **extra: Any) -> tuple[str, str]:
    """(session id, user), created the way a game backend does: the ``sessions`` key."""
    user = user or "u" + uuid.uuid4().hex[:10]
    r = c.post("/v1/sessions", json={"user": user, **extra}, headers=bearer(BACKEND))
    assert r.status_code == 201, r.text
    return r.json()["id"], user


# -- board options -------------------------------------------------------------------------


def test_options_default_show_change_any_time_and_refuse_bad_values(
    c: httpx.Client, problem: Any
) -> None:
    board = new_board(c)
    info = c.get(f"/v1/boards/{board}", headers=bearer(READER)).json()
    assert (info["player_writes"], info["player_rate"], info["public_read"]) == (False, 60, False)
    c.post(f"/v1/boards/{board}/scores", json={"member": "a", "score": 1}, headers=bearer(ADMIN))
    # Any time: the board is not empty.
    r = c.put(
        f"/v1/boards/{board}",
        json={"player_writes": True, "player_rate": 5, "public_read": True},
        headers=bearer(ADMIN),
    )
    assert r.status_code == 200, r.text
    assert r.json() | {"size": 1} == r.json()
    assert (r.json()["player_writes"], r.json()["player_rate"], r.json()["public_read"]) == (
        True,
        5,
        True,
    )
    # Options not named keep their values.
    r = c.put(f"/v1/boards/{board}", json={"update": "latest"}, headers=bearer(ADMIN))
    assert (r.json()["player_rate"], r.json()["public_read"]) == (5, True)
    listed = c.get("/v1/boards?limit=1000", headers=bearer(ADMIN)).json()["boards"]
    assert next(b for b in listed if b["board"] == board)["player_rate"] == 5
    for option, bad, shown in (
        ("player_writes", "yes", "'yes'"),
        ("player_writes", 1, "1"),
        ("public_read", None, "None"),
        ("player_rate", 0, "0"),
        ("player_rate", 10_001, "10001"),
        ("player_rate", 1.5, "1.5"),
        ("player_rate", True, "True"),
        ("player_rate", "60", "'60'"),
    ):
        r = c.put(f"/v1/boards/{board}", json={option: bad}, headers=bearer(ADMIN))
        body = problem(r, 400, "invalid-argument")
        assert option in body["detail"] and shown in body["detail"], body
    info = c.get(f"/v1/boards/{board}", headers=bearer(ADMIN)).json()
    assert (info["player_writes"], info["player_rate"], info["public_read"]) == (True, 5, True)


# -- player writes -------------------------------------------------------------------------


def test_a_player_writes_only_its_own_entry_on_player_writes_boards(
    c: httpx.Client, problem: Any
) -> None:
    open_board = new_board(c, player_writes=True)
    closed_board = new_board(c)
    sid, user = new_player(c)
    me = session_of(sid)
    r = c.post(f"/v1/boards/{open_board}/scores", json={"score": 10}, headers=me)
    assert r.status_code == 200, r.text
    assert (r.json()["member"], r.json()["score"]) == (user, 10)
    r = c.post(
        f"/v1/boards/{open_board}/scores",
        json={"member": user, "score": 12, "metadata": {"c": "fr"}},
        headers=me,
    )
    assert r.json()["previous"] == {"score": 10, "rank": 1}, r.text
    r = c.post(f"/v1/boards/{open_board}/scores", json={"member": "bob", "score": 99}, headers=me)
    body = problem(r, 403, "forbidden")
    assert "own entry" in body["detail"] and sid not in r.text
    assert r.headers["www-authenticate"].startswith("Session ")
    problem(
        c.post(f"/v1/boards/{closed_board}/scores", json={"score": 1}, headers=me),
        403,
        "forbidden",
    )
    # An absent board would be created with defaults (no player writes): refused, not created.
    ghost = "p" + uuid.uuid4().hex[:12]
    problem(c.post(f"/v1/boards/{ghost}/scores", json={"score": 1}, headers=me), 403)
    problem(c.get(f"/v1/boards/{ghost}", headers=bearer(ADMIN)), 404, "board-not-found")
    # Batches are for keys, even of the player's own entry.
    problem(
        c.post(
            f"/v1/boards/{open_board}/scores:batch",
            json=[{"member": user, "score": 50}],
            headers=me,
        ),
        403,
        "forbidden",
    )
    # The store's own checks still apply after the policy (a malformed write is a 400).
    problem(c.post(f"/v1/boards/{open_board}/scores", json={"score": "x"}, headers=me), 400)
    problem(c.post(f"/v1/boards/{open_board}/scores", json=[1], headers=me), 400)
    top = c.get(f"/v1/boards/{open_board}/top", headers=me).json()
    assert [(e["member"], e["score"], e.get("metadata")) for e in top["entries"]] == [
        (user, 12, {"c": "fr"})
    ]


def test_a_players_writes_stay_within_the_boards_score_bounds(
    c: httpx.Client, keyed: RankdServer, problem: Any
) -> None:
    """A game client can only post scores inside ``min_score``/``max_score``, over HTTP and
    WebSocket; a refused write changes nothing (it counts against ``player_rate``: the
    limiter meters attempts)."""
    board = new_board(c, player_writes=True, min_score=0, max_score=1000)
    sid, user = new_player(c)
    me = session_of(sid)
    for bad in (1001, -1, 1e9):
        body = problem(c.post(f"/v1/boards/{board}/scores", json={"score": bad}, headers=me), 400)
        assert "max_score" in body["detail"] or "min_score" in body["detail"], body
    assert c.post(f"/v1/boards/{board}/scores", json={"score": 1000}, headers=me).status_code == 200

    async def main() -> None:
        async with ws_client(keyed, f"?session={sid}") as ws:
            await ws.send(op="score", id="w1", board=board, score=5000)
            frame = await ws.expect("error", "w1")
            assert frame["status"] == 400 and "max_score" in frame["detail"], frame
            await ws.send(op="score", id="w2", board=board, score=0)  # in bounds, not a best
            ack = await ws.expect("ack", "w2")
            assert (ack["score"], ack["changed"]) == (1000, False), ack

    run(main)
    top = c.get(f"/v1/boards/{board}/top", headers=me).json()
    assert [(e["member"], e["score"]) for e in top["entries"]] == [(user, 1000)]


def test_player_rate_answers_429_with_retry_after_per_board_and_member(
    c: httpx.Client, problem: Any
) -> None:
    board = new_board(c, player_writes=True, player_rate=3)
    other_board = new_board(c, player_writes=True, player_rate=3)
    sid, _ = new_player(c)
    sid2, _ = new_player(c)
    for score in range(3):  # a burst of player_rate writes passes
        r = c.post(f"/v1/boards/{board}/scores", json={"score": score}, headers=session_of(sid))
        assert r.status_code == 200, r.text
    r = c.post(f"/v1/boards/{board}/scores", json={"score": 9}, headers=session_of(sid))
    body = problem(r, 429, "too-many-requests")
    assert "3 player writes per minute" in body["detail"]
    # 60 s / 3 = one write every 20 s; the first of the burst was just now.
    assert 15 <= int(r.headers["retry-after"]) <= 20, r.headers
    # Per (board, member): another member, and the same member on another board, are not held.
    r = c.post(f"/v1/boards/{board}/scores", json={"score": 1}, headers=session_of(sid2))
    assert r.status_code == 200, r.text
    r = c.post(f"/v1/boards/{other_board}/scores", json={"score": 1}, headers=session_of(sid))
    assert r.status_code == 200, r.text
    # Keys are not rate limited.
    for score in range(5):
        r = c.post(
            f"/v1/boards/{board}/scores",
            json={"member": "server-side", "score": score},
            headers=bearer(ADMIN),
        )
        assert r.status_code == 200, r.text
    # Raising the rate: the used-up burst drains at the new pace (one write per 0.1 s).
    c.put(f"/v1/boards/{board}", json={"player_rate": 600}, headers=bearer(ADMIN))
    r = c.post(f"/v1/boards/{board}/scores", json={"score": 9}, headers=session_of(sid))
    if r.status_code == 429:
        assert r.headers["retry-after"] == "1"  # 0.1 s, rounded up to whole seconds
        time.sleep(0.2)
        r = c.post(f"/v1/boards/{board}/scores", json={"score": 9}, headers=session_of(sid))
    assert r.status_code == 200, r.text


# -- what else a player may do -------------------------------------------------------------


def test_a_player_reads_every_board_and_touches_only_its_own_session(
    c: httpx.Client, problem: Any
) -> None:
    private = new_board(c)
    c.post(f"/v1/boards/{private}/scores", json={"member": "a", "score": 3}, headers=bearer(ADMIN))
    sid, user = new_player(c)
    other, other_user = new_player(c)
    me = session_of(sid)
    for path in ("", "/top", "/members/a", "/members/a/around", "/rank?score=1"):
        r = c.get(f"/v1/boards/{private}{path}", headers=me)
        assert r.status_code == 200, (path, r.text)
    assert c.get("/v1/boards", headers=me).status_code == 200
    r = c.get(f"/v1/sessions/{sid}", headers=me)
    assert r.status_code == 200 and r.json()["user"] == user
    assert r.headers["cache-control"] == "no-store"
    assert c.post(f"/v1/sessions/{sid}/touch", headers=me).status_code == 200
    forbidden = [
        ("GET", f"/v1/sessions/{other}", None),
        ("GET", f"/v1/sessions/{'n' * 43}", None),  # absent: 403 too, nothing to probe
        ("POST", f"/v1/sessions/{other}/touch", None),
        ("PATCH", f"/v1/sessions/{sid}", {"data": {"admin": True}}),
        ("PUT", f"/v1/sessions/{sid}", {"data": {}}),
        ("POST", f"/v1/sessions/{other}/rotate", None),
        ("DELETE", f"/v1/sessions/{other}", None),
        ("POST", "/v1/sessions", {"user": "someone"}),
        ("GET", f"/v1/users/{user}/sessions", None),
        ("DELETE", f"/v1/users/{other_user}/sessions", None),
        ("PUT", f"/v1/boards/{private}", {"player_writes": True}),
        ("DELETE", f"/v1/boards/{private}", None),
        ("DELETE", f"/v1/boards/{private}/members/a", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/admin/snapshot", None),
    ]
    for method, path, body in forbidden:
        r = c.request(method, path, json=body, headers=me)
        problem(r, 403, "forbidden")
        assert sid not in r.text and other not in r.text, (method, path)
    # Nothing of that happened: the other session lives, the board is still private and full.
    assert c.get(f"/v1/sessions/{other}", headers=session_of(other)).status_code == 200
    info = c.get(f"/v1/boards/{private}", headers=bearer(ADMIN)).json()
    assert (info["player_writes"], info["size"]) == (False, 1)
    # Its own login: renew the id (the old one dies at once), then log out.
    r = c.post(f"/v1/sessions/{sid}/rotate", headers=me)
    assert r.status_code == 200 and r.json()["user"] == user, r.text
    renewed = r.json()["id"]
    assert renewed != sid
    problem(c.get(f"/v1/boards/{private}/top", headers=me), 401)
    assert c.delete(f"/v1/sessions/{renewed}", headers=session_of(renewed)).status_code == 204
    problem(c.get(f"/v1/boards/{private}/top", headers=session_of(renewed)), 401)


def test_an_ended_or_unknown_session_is_401_and_use_never_refreshes_it(
    c: httpx.Client, problem: Any
) -> None:
    board = new_board(c, player_writes=True)
    sid, user = new_player(c, ttl=600)
    before = c.get(f"/v1/sessions/{sid}?touch=false", headers=bearer(BACKEND)).json()
    for _ in range(3):
        assert c.get(f"/v1/boards/{board}/top", headers=session_of(sid)).status_code == 200
        r = c.post(f"/v1/boards/{board}/scores", json={"score": 1}, headers=session_of(sid))
        assert r.status_code == 200, r.text
    after = c.get(f"/v1/sessions/{sid}?touch=false", headers=bearer(BACKEND)).json()
    assert after["expires_at"] == before["expires_at"]  # reads and writes did not extend it
    assert after["version"] == before["version"]

    # Revoked by the game backend: every right ends at once.
    r = c.delete(f"/v1/users/{user}/sessions", headers=bearer(BACKEND))
    assert r.json()["revoked"] == 1
    # A session without a user is nobody's: not a player credential.
    userless = c.post("/v1/sessions", json={}, headers=bearer(BACKEND)).json()["id"]
    rotated, _ = new_player(c)
    r = c.post(f"/v1/sessions/{rotated}/rotate", headers=bearer(BACKEND))
    assert r.status_code == 200
    for dead in (sid, rotated, userless, "n" * 43, "short", "a" * 300, "bad id!"):
        for method, path in (("GET", f"/v1/boards/{board}/top"), ("GET", f"/v1/sessions/{dead}")):
            r = c.request(method, path, headers=session_of(dead))
            body = problem(r, 401, "unauthorized")
            assert 'Session realm="rankd"' in r.headers["www-authenticate"]
            assert dead not in body["detail"], body
        r = c.post(f"/v1/boards/{board}/scores", json={"score": 5}, headers=session_of(dead))
        problem(r, 401, "unauthorized")
    # The scheme is case-insensitive (RFC 9110); a bare "Session" is no credential at all.
    sid, _ = new_player(c)
    r = c.get(f"/v1/boards/{board}/top", headers={"authorization": f"SESSION {sid}"})
    assert r.status_code == 200, r.text
    problem(c.get(f"/v1/boards/{board}/top", headers={"authorization": "Session"}), 401)


# -- public boards -------------------------------------------------------------------------


def test_public_boards_serve_reads_without_a_credential(c: httpx.Client, problem: Any) -> None:
    public = new_board(c, public_read=True)
    private = new_board(c)
    for board in (public, private):
        c.post(
            f"/v1/boards/{board}/scores", json={"member": "a", "score": 3}, headers=bearer(ADMIN)
        )
    reads = ("", "/top", "/members/a", "/members/a/around", "/rank?score=1")
    for path in reads:
        r = c.get(f"/v1/boards/{public}{path}")
        assert r.status_code == 200, (path, r.text)
        r = c.get(f"/v1/boards/{private}{path}")
        problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert c.get(f"/v1/boards/{public}").json()["public_read"] is True
    # An absent board answers like a private one: existence is not revealed.
    problem(c.get(f"/v1/boards/p{uuid.uuid4().hex[:12]}/top"), 401, "unauthorized")
    problem(c.get("/v1/boards"), 401, "unauthorized")  # the directory stays keyed
    # Writes still need a key or a player session.
    problem(c.post(f"/v1/boards/{public}/scores", json={"member": "z", "score": 1}), 401)
    problem(c.delete(f"/v1/boards/{public}/members/a"), 401)
    problem(c.put(f"/v1/boards/{public}", json={"public_read": False}), 401)
    # A wrong key is an error, not anonymity.
    problem(c.get(f"/v1/boards/{public}/top", headers=bearer("wrong-key-0123456789")), 401)
    # Turned off: private again, at once.
    c.put(f"/v1/boards/{public}", json={"public_read": False}, headers=bearer(ADMIN))
    problem(c.get(f"/v1/boards/{public}/top"), 401, "unauthorized")


# -- /v1/ws --------------------------------------------------------------------------------


def test_a_player_over_websocket_by_query_or_header(c: httpx.Client, keyed: RankdServer) -> None:
    board = new_board(c, player_writes=True, player_rate=2)
    private = new_board(c)
    sid, user = new_player(c)

    async def main() -> None:
        async with ws_client(keyed, f"?session={sid}") as ws:
            await ws.send(op="subscribe", id="s", board=private, top=5)
            await ws.expect("top", "s")
            await ws.send(op="score", id="w1", board=board, score=7)
            ack = await ws.expect("ack", "w1")
            assert (ack["member"], ack["score"], ack["by"]) == (user, 7, "player")
            await ws.send(op="score", id="w2", board=board, member="bob", score=9)
            frame = await ws.expect("error", "w2")
            assert frame["status"] == 403 and "own entry" in frame["detail"], frame
            await ws.send(op="score", id="w3", board=private, member=user, score=9)
            frame = await ws.expect("error", "w3")
            assert frame["status"] == 403 and "player writes" in frame["detail"], frame
        async with ws_client(keyed, headers=session_of(sid)) as ws:
            await ws.send(op="score", id="w4", board=board, member=user, score=8)
            await ws.expect("ack", "w4")
            # The same (board, member) cells as HTTP: 2 a minute, both used.
            await ws.send(op="score", id="w5", board=board, score=9)
            frame = await ws.expect("error", "w5")
            assert frame["status"] == 429 and "retry in" in frame["detail"], frame
        async with ws_client(keyed, headers=bearer(ADMIN)) as ws:
            # A key holder's write says so (never which key): "by" is the kind of writer.
            await ws.send(op="score", id="k1", board=board, member="bob", score=3)
            assert (await ws.expect("ack", "k1"))["by"] == "key"
        r = c.post(f"/v1/boards/{board}/scores", json={"score": 10}, headers=session_of(sid))
        assert r.status_code == 429
        for query, headers in (
            ("?session=" + "n" * 43, None),
            ("", session_of("n" * 43)),
        ):
            async with ws_client(keyed, query, headers) as ws:
                code, reason = await ws.closed()
                assert code == 1008 and reason == "unauthorized: the player session is not valid"

    run(main)


def test_revoking_a_player_session_cuts_its_websocket(c: httpx.Client, keyed: RankdServer) -> None:
    board = new_board(c)
    sid, user = new_player(c)

    async def main() -> None:
        async with ws_client(keyed, headers=session_of(sid)) as ws:
            await ws.send(op="subscribe", id="s", board=board, top=5)
            await ws.expect("top", "s")
            r = c.delete(f"/v1/users/{user}/sessions", headers=bearer(BACKEND))
            assert r.json()["revoked"] == 1
            code, reason = await ws.closed()
            assert code == 1008 and reason == "session revoked", (code, reason)

    run(main)


def test_anonymous_websocket_follows_public_boards_only(
    c: httpx.Client, keyed: RankdServer
) -> None:
    public = new_board(c, public_read=True)
    private = new_board(c)

    async def main() -> None:
        async with ws_client(keyed) as ws:
            await ws.send(op="subscribe", id="pub", board=public, top=5)
            await ws.expect("top", "pub")
            await ws.send(op="subscribe", id="priv", board=private, top=5)
            frame = await ws.expect("error", "priv")
            assert frame["status"] == 401 and "not public" in frame["detail"], frame
            await ws.send(op="score", id="w", board=public, member="a", score=1)
            frame = await ws.expect("error", "w")
            assert frame["status"] == 401, frame
            # A write by a key reaches the anonymous subscriber.
            r = c.post(
                f"/v1/boards/{public}/scores",
                json={"member": "a", "score": 4},
                headers=bearer(ADMIN),
            )
            assert r.status_code == 200
            update = await ws.expect("top", "pub")
            assert [e["member"] for e in update["entries"]] == ["a"]

    run(main)


def test_turning_public_read_off_cuts_anonymous_websockets_at_once(
    c: httpx.Client, keyed: RankdServer, backend: str, rankd_server: Any
) -> None:
    """Like a revoked session: the credential-less watchers of a board that stops being public
    are closed (1008) at once; keyed, player and other boards' watchers live on. With redis the
    change is made through another rankd process: every instance's watchers are cut."""
    board = new_board(c, public_read=True)
    still = new_board(c, public_read=True)
    sid, _ = new_player(c)
    other = rankd_server(api_key=KEYS) if BACKENDS[backend].cluster else keyed

    async def main() -> None:
        async with (
            ws_client(keyed) as top,
            ws_client(keyed) as rank,
            ws_client(keyed) as elsewhere,
            ws_client(keyed, headers=bearer(READER)) as reader,
            ws_client(keyed, f"?session={sid}") as player,
        ):
            await top.send(op="subscribe", id="t", board=board, top=5)
            await top.expect("top", "t")
            await rank.send(op="subscribe", id="r", board=board, member="a", radius=1)
            await rank.expect("around", "r")
            await elsewhere.send(op="subscribe", id="e", board=still, top=5)
            await elsewhere.expect("top", "e")
            for ws in (reader, player):
                await ws.send(op="subscribe", id="k", board=board, top=5)
                await ws.expect("top", "k")
            with other.client() as oc:
                # Another option changes, public_read stays on: nobody is cut.
                r = oc.put(f"/v1/boards/{board}", json={"player_rate": 7}, headers=bearer(ADMIN))
                assert r.status_code == 200, r.text
                assert all(f["type"] != "error" for f in await top.quiet(0.3))
                assert top.conn.close_code is None
                r = oc.put(
                    f"/v1/boards/{board}", json={"public_read": False}, headers=bearer(ADMIN)
                )
                assert r.status_code == 200, r.text
            for ws in (top, rank):
                code, reason = await ws.closed()
                assert (code, reason) == (1008, "unauthorized: the board is no longer public")
            r = c.post(
                f"/v1/boards/{board}/scores",
                json={"member": "a", "score": 3},
                headers=bearer(ADMIN),
            )
            assert r.status_code == 200, r.text
            for ws in (reader, player):
                assert [e["member"] for e in (await ws.expect("top", "k"))["entries"]] == ["a"]
            r = c.post(
                f"/v1/boards/{still}/scores",
                json={"member": "b", "score": 1},
                headers=bearer(ADMIN),
            )
            assert r.status_code == 200, r.text
            assert [e["member"] for e in (await elsewhere.expect("top", "e"))["entries"]] == ["b"]
        async with ws_client(keyed) as again:
            await again.send(op="subscribe", id="t", board=board, top=5)
            frame = await again.expect("error", "t")
            assert frame["status"] == 401 and "not public" in frame["detail"], frame

    run(main)
