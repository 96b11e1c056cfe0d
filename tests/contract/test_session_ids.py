"""Caller-chosen session ids and the per-user limit policy, against the real process.

DESIGN.md "Sessions": ``PUT /v1/sessions/{id}`` + ``If-None-Match: *`` creates (201), 412 if
the id is live, 410 if it ended within --session-max-ttl -- deleted, expired, rotated,
revoked or evicted -- also after a kill -9 and a restart; --sessions-over-limit.
"""

import signal
import time
from typing import Any

import httpx
import pytest

from tests.contract.conftest import BACKENDS
from tests.servers import ServerFactory

CREATE = {"if-none-match": "*"}


def _id(name: str, tag: str) -> str:
    """A 32+ character caller-chosen id, unique per test (``name`` is)."""
    return f"{tag}-{name}".replace(".", "_")[:128].ljust(40, "x")


def _put_new(http: httpx.Client, sid: str, **body: Any) -> httpx.Response:
    return http.put(f"/v1/sessions/{sid}", json=body, headers=CREATE)


def test_put_with_if_none_match_star_creates_under_the_callers_id(
    http: httpx.Client, name: str, problem: Any
) -> None:
    sid = _id(name, "create")
    r = _put_new(http, sid, user=name, data={"cart": [1]}, ttl=60)
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["id"] == sid and s["user"] == name and s["data"] == {"cart": [1]}
    assert s["ttl"] == 60 and s["version"] == 1
    assert r.headers["location"] == f"/v1/sessions/{sid}" and r.headers["etag"] == '"1"'
    assert r.headers["cache-control"] == "no-store"
    assert http.get(f"/v1/sessions/{sid}").json()["data"] == {"cart": [1]}
    # A second create with the same id: it exists (RFC 9110 If-None-Match: * is false).
    body = problem(_put_new(http, sid), 412, "precondition-failed")
    assert sid not in body["detail"]
    # Without If-None-Match the PUT keeps replacing data (If-Match rule), never creating.
    r = http.put(f"/v1/sessions/{sid}", json={"data": {"b": 2}}, headers={"if-match": '"1"'})
    assert r.status_code == 200 and r.json()["data"] == {"b": 2} and r.json()["version"] == 2
    other = _id(name, "never")
    problem(http.put(f"/v1/sessions/{other}", json={"data": {}}), 404, "session-not-found")
    # If-Match and If-None-Match together are a conditional replace, not a create.
    problem(
        http.put(f"/v1/sessions/{other}", json={"data": {}}, headers={**CREATE, "if-match": "*"}),
        404,
    )


@pytest.mark.parametrize(
    "bad",
    ["short", "x" * 31, "x" * 129, "has.dot" + "x" * 30, "has%20space" + "x" * 30, "é" * 40],
)
def test_a_malformed_caller_chosen_id_is_a_400_that_does_not_echo_it(
    http: httpx.Client, problem: Any, bad: str
) -> None:
    body = problem(_put_new(http, bad), 400, "invalid-argument")
    assert "32-128 characters" in body["detail"] and bad not in body["detail"]


def test_every_way_a_session_ends_makes_its_id_gone(
    http: httpx.Client, name: str, problem: Any
) -> None:
    """Deleted, rotated, revoked, expired: creating the id again is a 410, whose detail does
    not echo it; rankd's own ids are remembered too."""
    ended = []
    sid = _id(name, "deleted")
    assert _put_new(http, sid).status_code == 201
    assert http.delete(f"/v1/sessions/{sid}").status_code == 204
    ended.append(sid)

    sid = _id(name, "rotated")
    assert _put_new(http, sid).status_code == 201
    new = http.post(f"/v1/sessions/{sid}/rotate").json()["id"]
    assert new != sid
    ended.append(sid)

    sid = _id(name, "revoked")
    assert _put_new(http, sid, user=f"{name}-r").status_code == 201
    assert http.delete(f"/v1/users/{name}-r/sessions").json()["revoked"] == 1
    ended.append(sid)

    sid = _id(name, "expired")
    assert _put_new(http, sid, ttl=1).status_code == 201
    ended.append(sid)

    issued = http.post("/v1/sessions").json()["id"]  # rankd's own id: 43 URL-safe characters
    assert http.delete(f"/v1/sessions/{issued}").status_code == 204
    ended.append(issued)

    time.sleep(1.2)  # the 1 s session expires (read: lazily; or the purge)
    for sid in ended:
        body = problem(_put_new(http, sid, data={"back": True}), 410, "session-ended")
        assert sid not in body["detail"]
        problem(http.get(f"/v1/sessions/{sid}"), 404)


def test_over_limit_evicts_the_oldest_by_default(
    rankd_server: ServerFactory, name: str, problem: Any
) -> None:
    srv = rankd_server(sessions_per_user=2)
    with srv.client() as http:
        ids = [http.post("/v1/sessions", json={"user": name}).json()["id"] for _ in range(2)]
        time.sleep(0.01)
        third = _put_new(http, _id(name, "third"), user=name)
        assert third.status_code == 201
        listed = [s["id"] for s in http.get(f"/v1/users/{name}/sessions").json()["sessions"]]
        assert listed == [ids[1], third.json()["id"]]
        problem(http.get(f"/v1/sessions/{ids[0]}"), 404)
        problem(_put_new(http, ids[0]), 410, "session-ended")  # an evicted id stays dead
        # The end reason is reported where the others are: the session event counters.
        assert 'rankd_session_events_total{event="evicted"} 1.0' in http.get("/metrics").text


def test_over_limit_refuse_is_a_429(rankd_server: ServerFactory, name: str, problem: Any) -> None:
    srv = rankd_server(sessions_per_user=1, sessions_over_limit="refuse")
    with srv.client() as http:
        first = http.post("/v1/sessions", json={"user": name}).json()["id"]
        body = problem(http.post("/v1/sessions", json={"user": name}), 429, "too-many-sessions")
        assert "the limit is 1" in body["detail"]
        problem(_put_new(http, _id(name, "second"), user=name), 429, "too-many-sessions")
        assert http.get(f"/v1/sessions/{first}").status_code == 200  # nobody was logged out


def test_a_bad_over_limit_policy_stops_the_server(rankd_server: ServerFactory) -> None:
    srv = rankd_server(start=False, sessions_over_limit="evict-newest")
    with pytest.raises(RuntimeError, match="evict-oldest, refuse"):
        srv.start()


@pytest.mark.parametrize("snapshot_first", [False, True], ids=["journal", "snapshot"])
def test_an_ended_id_stays_refused_after_kill_9_and_restart(
    rankd_server: ServerFactory, backend: str, name: str, problem: Any, snapshot_first: bool
) -> None:
    """The end is journalled (fsync always: acknowledged means on disk); with a snapshot in
    between, the snapshot's ENDED records carry it instead of the journal. On the redis backend
    the cluster holds the end (rankd keeps nothing local, and has no snapshot: 501)."""
    chosen = BACKENDS[backend]
    srv = rankd_server(**chosen.durable_flags)
    sid, live = _id(name, "gone"), _id(name, "live")
    with srv.client() as http:
        assert _put_new(http, sid, data={"v": 1}).status_code == 201
        assert _put_new(http, live, data={"v": 2}).status_code == 201
        assert http.delete(f"/v1/sessions/{sid}").status_code == 204
        if snapshot_first:
            snap = http.post("/v1/admin/snapshot")
            assert snap.status_code == (200 if chosen.snapshots else 501), snap.text
    srv.restart(signal.SIGKILL)
    with srv.client() as http:
        problem(_put_new(http, sid, data={"v": 3}), 410, "session-ended")
        problem(http.get(f"/v1/sessions/{sid}"), 404)
        assert http.get(f"/v1/sessions/{live}").json()["data"] == {"v": 2}
        problem(_put_new(http, live), 412)
    # And again, after a clean stop (final snapshot) and one more kill -9.
    srv.restart(signal.SIGTERM)
    srv.restart(signal.SIGKILL)
    with srv.client() as http:
        problem(_put_new(http, sid), 410, "session-ended")


def test_an_evicted_sessions_websocket_is_closed_with_its_reason(
    rankd_server: ServerFactory, name: str
) -> None:
    """Eviction ends a session like any other end: its WebSockets close ("session evicted")."""
    import asyncio

    from tests.contract.test_ws import http_client, run, ws_client

    srv = rankd_server(sessions_per_user=1)

    async def main() -> None:
        async with http_client(srv) as http:
            r = await http.post("/v1/sessions", json={"user": name})
            sid = r.json()["id"]
            async with ws_client(srv, f"?session={sid}") as bound:
                await bound.send(op="subscribe", id="s", board=name, top=1)
                await bound.expect("top", "s")
                nxt = f"/v1/sessions/{_id(name, 'next')}"
                r = await http.put(nxt, json={"user": name}, headers=CREATE)
                assert r.status_code == 201, r.text
                assert await bound.closed(timeout=5) == (1008, "session evicted")
            await asyncio.sleep(0)
        assert sid not in srv.logs()

    run(main)
