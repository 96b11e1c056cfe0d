"""Players and public boards, the embedded server's side: the rate limiter on a manual clock,
the options through a crash and a restart, session ids never reaching a log line, an error
body or /metrics, expiry, protected mode, the OpenAPI schemes and the live page on a public
board in a real Chromium. The behaviour every backend shares is in tests/contract/test_players.py.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from websockets.exceptions import ConnectionClosed

from service.players import RateLimiter
from tests.contract.test_ws import ws_client
from tests.service.test_live import browser, page  # noqa: F401  (fixtures)
from tests.service.test_readme_tour import _block_after, _run

ADMIN = "players-admin-0123456789"
KEYS = [f"{ADMIN}:admin"]
A = {"authorization": f"Bearer {ADMIN}"}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the rate limiter (GCRA) ---------------------------------------------------------------


def test_gcra_allows_a_burst_of_rate_then_one_per_interval() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock)
    key = ("b", "alice")
    assert [limiter.take(key, 6) for _ in range(6)] == [0.0] * 6  # the burst: 6 a minute
    assert limiter.take(key, 6) == pytest.approx(10.0)  # then one per 60/6 s
    clock.now += 9.5
    assert limiter.take(key, 6) == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take(key, 6) == 0.0
    assert limiter.take(key, 6) == pytest.approx(10.0)
    # Refusals cost nothing: waiting the answer is always enough.
    for _ in range(100):
        limiter.take(key, 6)
    clock.now += 10.0
    assert limiter.take(key, 6) == 0.0
    # After a full minute of silence the whole burst is back.
    clock.now += 60.0
    assert [limiter.take(key, 6) for _ in range(6)] == [0.0] * 6
    limiter._check()


def test_gcra_matches_a_sliding_log_oracle_over_a_seeded_run() -> None:
    """Against the plain definition: at most ``rate`` accepted writes in any burst, and over a
    long run the accepted count never exceeds rate per minute + the burst."""
    rng = random.Random(1302)
    clock = ManualClock()
    limiter = RateLimiter(clock)
    rate = 5
    accepted: list[float] = []
    start = clock.now
    for _ in range(5000):
        clock.now += rng.expovariate(1 / 3.0)  # about 20 attempts a minute, 4x the rate
        wait = limiter.take(("b", "m"), rate)
        if wait == 0.0:
            accepted.append(clock.now)
        else:
            assert 0 < wait <= 60.0 / rate + 1e-9
    # GCRA: between any two accepted writes i < j, (j - i) intervals have passed minus the
    # burst allowance: t_j - t_i >= (j - i - (rate - 1)) * 60 / rate.
    interval = 60.0 / rate
    for i in range(len(accepted)):
        for j in range(i + rate, min(len(accepted), i + 4 * rate)):
            assert accepted[j] - accepted[i] >= (j - i - (rate - 1)) * interval - 1e-6
    minutes = (clock.now - start) / 60
    assert len(accepted) <= rate * minutes + rate
    assert len(accepted) >= rate * minutes * 0.9  # and it does not starve a steady writer


def test_cells_are_bounded_and_expired_ones_dropped() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, max_cells=100)
    for i in range(1000):
        assert limiter.take(("b", f"m{i}"), 60) == 0.0
        assert len(limiter) <= 100
    limiter._check()
    # Each cell expires one interval (1 s at 60/min) after its write; writes drop them.
    clock.now += 2.0
    for i in range(50):
        limiter.take(("other", f"m{i}"), 60)
    assert len(limiter) < 100
    # The least recently written cell is the one forgotten at the bound.
    small = RateLimiter(clock, max_cells=2)
    small.take(("b", "first"), 1)
    small.take(("b", "second"), 1)
    small.take(("b", "third"), 1)
    assert small.take(("b", "first"), 1) == 0.0  # forgotten: judged as a first write
    assert small.take(("b", "third"), 1) > 0.0


# -- a keyed server --------------------------------------------------------------------------


@pytest.fixture
def keyed(rankd_server: Any) -> Any:
    return rankd_server(api_key=KEYS, log_level="debug", fsync="always")


def _player(c: httpx.Client, user: str = "alice", **extra: Any) -> str:
    r = c.post("/v1/sessions", json={"user": user, **extra}, headers=A)
    assert r.status_code == 201, r.text
    sid: str = r.json()["id"]
    return sid


def test_options_survive_a_crash_and_a_restart(keyed: Any) -> None:
    options = {"player_writes": True, "player_rate": 7, "public_read": True}
    with keyed.client() as c:
        c.put("/v1/boards/kept", json=options, headers=A)
        c.put("/v1/boards/changed", json={}, headers=A)
        c.put("/v1/boards/changed", json={"public_read": True}, headers=A)
    keyed.restart(signal.SIGKILL)  # journal replay
    with keyed.client() as c:
        r = c.get("/v1/boards/kept")  # public: no credential needed after recovery
        assert r.status_code == 200, r.text
        assert {k: r.json()[k] for k in options} == options
        assert c.get("/v1/boards/changed").json()["public_read"] is True
        c.put("/v1/boards/changed", json={"player_rate": 9}, headers=A)
    keyed.restart(signal.SIGTERM)  # final snapshot, then load it
    with keyed.client() as c:
        got = c.get("/v1/boards/changed").json()
        assert (got["player_writes"], got["player_rate"], got["public_read"]) == (False, 9, True)
        assert {k: c.get("/v1/boards/kept").json()[k] for k in options} == options


def test_an_expired_session_is_401_at_once_over_http_and_websocket(
    keyed: Any, problem: Any
) -> None:
    with keyed.client() as c:
        c.put("/v1/boards/g", json={"player_writes": True}, headers=A)
        sid = _player(c, ttl=1)
        me = {"authorization": f"Session {sid}"}
        assert c.get("/v1/boards", headers=me).status_code == 200

        async def main() -> None:
            async with ws_client(keyed, f"?session={sid}") as ws:
                await ws.send(op="score", id="before", board="g", score=1)
                await ws.expect("ack", "before")
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:  # expiry at 1 s: lazy on read, no purge
                    r = c.get("/v1/boards", headers=me)
                    if r.status_code != 200:
                        break
                    await asyncio.sleep(0.05)
                problem(r, 401, "unauthorized")
                # The socket's rights end with it: its next write is refused (or, if the purge
                # got there first, the socket is already closed).
                try:
                    await ws.send(op="score", id="after", board="g", score=2)
                    frame = await ws.recv()
                    if frame["type"] == "error":
                        assert (frame["id"], frame["status"]) == ("after", 401), frame
                    else:
                        pytest.fail(f"a write after expiry was answered {frame}")
                except ConnectionClosed:
                    assert ws.conn.close_reason == "session expired", ws.conn.close_reason

        asyncio.run(asyncio.wait_for(main(), 30))
        assert c.get("/v1/boards/g/members/alice", headers=A).json()["score"] == 1


def test_session_ids_never_reach_logs_error_bodies_or_metrics(keyed: Any, problem: Any) -> None:
    bodies: list[str] = []
    with keyed.client() as c:
        c.put("/v1/boards/g", json={"player_writes": True, "player_rate": 1}, headers=A)
        live = _player(c)
        ended = _player(c, "bob")
        other = _player(c, "carol")
        c.delete(f"/v1/sessions/{ended}", headers=A)
        probes = [
            ("POST", "/v1/boards/g/scores", live, {"score": 1}),  # accepted
            ("POST", "/v1/boards/g/scores", live, {"score": 2}),  # 429
            ("POST", "/v1/boards/g/scores", live, {"member": other, "score": 1}),  # 403
            ("POST", "/v1/boards/g/scores", ended, {"score": 1}),  # 401
            ("GET", f"/v1/sessions/{other}", live, None),  # 403
            ("POST", f"/v1/sessions/{ended}/rotate", live, None),
            ("GET", "/metrics", live, None),
            ("GET", f"/v1/boards/{other}/top", None, None),  # a session id as a board name
            ("GET", f"/v1/boards/g/members/{other}", live, None),  # ... as a member: 404
        ]
        for method, path, sid, body in probes:
            headers = {} if sid is None else {"authorization": f"Session {sid}"}
            r = c.request(method, path, json=body, headers=headers)
            assert (r.status_code >= 400) == (len(bodies) > 0), (method, path, r.status_code)
            bodies.append(r.text + str(r.headers))

        async def sockets() -> None:
            for query in (f"?session={live}", f"?session={ended}", f"?token={other}"):
                async with ws_client(keyed, query) as ws:
                    try:
                        await ws.send(op="score", id="w", board="g", member=other, score=1)
                        bodies.append(str(await ws.recv(2)))
                    except ConnectionClosed as exc:  # the close reason is what a client sees
                        bodies.append(str(exc))

        asyncio.run(asyncio.wait_for(sockets(), 30))
        bodies.append(c.get("/metrics", headers=A).text)
    logs = keyed.logs()
    assert "DEBUG" in logs or "INFO" in logs  # the log was written
    for sid in (live, ended, other):
        assert sid not in logs
        for text in bodies:
            assert sid not in text, text[:300]


def test_protected_mode_keeps_todays_behaviour(rankd_server: Any) -> None:
    srv = rankd_server()  # no keys: loopback only, everything open, sessions not judged
    with srv.client() as c:
        c.put("/v1/boards/g", json={}, headers={})
        r = c.post(
            "/v1/boards/g/scores",
            json={"member": "anyone", "score": 1},
            headers={"authorization": "Session not-even-a-session"},
        )
        assert r.status_code == 200, r.text
        assert c.get("/v1/boards/g/top").status_code == 200
        assert c.post("/v1/admin/snapshot").status_code == 200


def test_readme_players_walkthrough_runs_verbatim(rankd_server: Any) -> None:
    srv = rankd_server(
        env={
            "RANKD_API_KEYS": "ops-key-0123456789abcdef:admin;game-backend-key-0123456789:sessions"
        }
    )
    out = _run(srv, _block_after("### Players: a worked example"))
    assert out.count('"member":"ann"') == 2, out  # her write, then the public top
    assert "}403\n" in out and out.endswith("}401\n"), out
    with srv.client() as c:
        top = c.get("/v1/boards/arena/top").json()
        assert [(e["member"], e["score"]) for e in top["entries"]] == [("ann", 1200)]
    assert "Exception" not in srv.logs()


def test_openapi_names_the_session_and_anonymous_schemes(http: Any) -> None:
    doc = http.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["session"] == {
        "type": "http",
        "scheme": "Session",
        "description": schemes["session"]["description"],
    }
    paths = doc["paths"]
    top = paths["/v1/boards/{board}/top"]["get"]["security"]
    assert {"session": []} in top and {} in top  # players, and anyone on a public board
    write = paths["/v1/boards/{board}/scores"]["post"]["security"]
    assert {"session": []} in write and {} not in write
    batch = paths["/v1/boards/{board}/scores:batch"]["post"]["security"]
    assert batch == [{"bearer": []}]
    assert {"session": []} in paths["/v1/sessions/{id}"]["get"]["security"]
    assert {"session": []} in paths["/v1/sessions/{id}"]["delete"]["security"]
    assert {"session": []} in paths["/v1/sessions/{id}/rotate"]["post"]["security"]
    assert paths["/v1/sessions/{id}"]["patch"]["security"] == [{"bearer": []}]
    assert paths["/v1/boards"]["get"]["security"] == [{"bearer": []}, {"session": []}]
    assert "429" in paths["/v1/boards/{board}/scores"]["post"]["responses"]


@pytest.mark.browser
def test_the_live_page_follows_a_public_board_without_a_key(
    rankd_server: Any,
    page: Page,  # noqa: F811
) -> None:
    srv = rankd_server(api_key=KEYS)
    with srv.client() as c:
        c.put("/v1/boards/open", json={"public_read": True}, headers=A)
        c.post("/v1/boards/open/scores", json={"member": "ada", "score": 3}, headers=A)
    page.goto(f"{srv.url}/?board=open")
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    expect(page.locator("#rows")).to_contain_text("ada", timeout=10_000)
    with srv.client() as c:
        c.post("/v1/boards/open/scores", json={"member": "bo", "score": 9}, headers=A)
    expect(page.locator("#rows tr").first).to_contain_text("bo", timeout=10_000)
    page.goto(f"{srv.url}/?board=closed")
    expect(page.locator("#status")).to_contain_text("unauthorized", timeout=10_000)
