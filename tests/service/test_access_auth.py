"""The access log on a real rankd: WebSocket sessions (upgrade and close lines), who wrote
(``auth=`` and the ``writer`` metric label), and never a key, session id or query string.

Complements tests/service/test_logs.py (HTTP lines and both formats' redaction).
"""

import json
import signal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.servers import RankdServer, ServerFactory

ADMIN = "access-admin-0123456789"
WRITER = "access-write-0123456789"
GAME = "access-sessions-0123456789"
KEYS = [f"{ADMIN}:admin", f"{WRITER}:write,read", f"{GAME}:sessions"]


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _ws(srv: RankdServer, query: str = "", **headers: str) -> Any:
    url = srv.url.replace("http://", "ws://") + "/v1/ws" + query
    return connect(url, additional_headers=headers, proxy=None, open_timeout=10)


def _access(srv: RankdServer) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in srv.logs().splitlines() if line.startswith("{")]
    return [r for r in records if r["logger"] == "rankd.access"]


def _writes(srv: RankdServer) -> dict[str, float]:
    with srv.client(headers=_bearer(ADMIN)) as c:
        text = c.get("/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "rankd_score_writes_total":
                out[s.labels["writer"]] = s.value
    return out


@pytest.fixture
def srv(rankd_server: ServerFactory) -> RankdServer:
    return rankd_server(api_key=KEYS, log_format="json", access_log=True)


def test_websocket_sessions_are_access_logged_without_credentials(srv: RankdServer) -> None:
    with srv.client() as c:
        r = c.put("/v1/boards/arena", json={"player_writes": True}, headers=_bearer(ADMIN))
        assert r.status_code == 201, r.text
        sid = c.post("/v1/sessions", json={"user": "ann"}, headers=_bearer(GAME)).json()["id"]

    # A key in the query (what a browser must do): subscribe, write, close normally.
    with _ws(srv, f"?token={WRITER}", **{"x-request-id": "ws-key-1"}) as ws:
        assert ws.response.headers["x-request-id"] == "ws-key-1"
        ws.send(json.dumps({"op": "subscribe", "id": "s", "board": "arena", "top": 5}))
        received = [json.loads(ws.recv(timeout=10))]
        ws.send(
            json.dumps({"op": "score", "id": "w", "board": "arena", "member": "bob", "score": 4})
        )
        while not any(f["type"] == "ack" for f in received):
            received.append(json.loads(ws.recv(timeout=10)))
        ack = next(f for f in received if f["type"] == "ack")
        assert ack["by"] == "key" and ack["member"] == "bob"
        # The subscription's push of bob's write may come before or after the ack: wait for it.
        while not any(f["type"] == "top" and f["total"] == 1 for f in received):
            received.append(json.loads(ws.recv(timeout=10)))
    # A player in the query; the client closes with 4000.
    with _ws(srv, f"?session={sid}", **{"x-request-id": "ws-player-1"}) as ws:
        ws.send(json.dumps({"op": "score", "id": "p", "board": "arena", "score": 9}))
        assert json.loads(ws.recv(timeout=10))["by"] == "player"
        ws.close(4000, "done")
    # A bad key: accepted, then closed by the server with 1008.
    with _ws(srv, "?token=not-a-key-at-all", **{"x-request-id": "ws-bad-1"}) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.protocol.close_code == 1008
    # A foreign origin: refused before the upgrade (HTTP 403).
    with pytest.raises(InvalidStatus) as refused:
        _ws(srv, f"?token={WRITER}", origin="https://evil.example", **{"x-request-id": "ws-x"})
    assert refused.value.response.status_code == 403

    assert srv.stop(signal.SIGTERM) == 0
    logs = srv.logs()
    for secret in (ADMIN, WRITER, GAME, sid, "not-a-key-at-all"):
        assert secret not in logs
    lines = _access(srv)
    assert not any("?" in rec["message"] or "?" in rec["path"] for rec in lines)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for rec in lines:
        by_id.setdefault(rec["request_id"], []).append(rec)

    upgrade, close = by_id["ws-key-1"]
    assert (upgrade["method"], upgrade["path"], upgrade["status"]) == ("WS", "/v1/ws", 101)
    assert upgrade["message"].startswith("WS /v1/ws 101 id=ws-key-1")
    assert close["close_code"] == 1000 and close["auth"] == "key:read,write"
    assert close["frames_sent"] == len(received)  # every frame the client read, none else
    assert close["duration_ms"] > 0
    assert close["message"].startswith("WS /v1/ws closed 1000 after ")

    upgrade, close = by_id["ws-player-1"]
    assert upgrade["status"] == 101
    assert (close["close_code"], close["auth"], close["frames_sent"]) == (4000, "player", 1)

    upgrade, close = by_id["ws-bad-1"]
    assert upgrade["status"] == 101  # refusals after the upgrade are close frames
    assert (close["close_code"], close["auth"], close["frames_sent"]) == (1008, "-", 0)

    (refusal,) = by_id["ws-x"]
    assert refusal["status"] == 403 and "close_code" not in refusal


def test_who_wrote_is_in_the_access_log_and_the_writer_metric(srv: RankdServer) -> None:
    with srv.client() as c:
        c.put(
            "/v1/boards/open",
            json={"player_writes": True, "public_read": True},
            headers=_bearer(ADMIN),
        )
        sid = c.post("/v1/sessions", json={"user": "ann"}, headers=_bearer(GAME)).json()["id"]
        before = _writes(srv)
        assert before == {"player": 0, "key": 0, "anonymous": 0}

        def post(path: str, body: Any, headers: dict[str, str], rid: str) -> httpx.Response:
            r = c.post(path, json=body, headers={**headers, "x-request-id": rid})
            assert r.status_code == 200, r.text
            return r

        post("/v1/boards/open/scores", {"member": "bob", "score": 1}, _bearer(WRITER), "h-key")
        post("/v1/boards/open/scores", {"score": 2}, {"authorization": f"Session {sid}"}, "h-ply")
        batch = [{"member": f"m{i}", "score": i} for i in range(5)]
        post("/v1/boards/open/scores:batch", batch, _bearer(ADMIN), "h-batch")
        assert c.get("/v1/boards/open/top", headers={"x-request-id": "h-anon"}).status_code == 200
        bad = c.post(
            "/v1/boards/open/scores",
            json={"member": "x", "score": 1},
            headers={**_bearer("wrong-key-1234"), "x-request-id": "h-401"},
        )
        assert bad.status_code == 401
    with _ws(srv, f"?session={sid}") as ws:
        ws.send(json.dumps({"op": "score", "id": 1, "board": "open", "score": 3}))
        assert json.loads(ws.recv(timeout=10))["by"] == "player"
    assert _writes(srv) == {"player": 2, "key": 6, "anonymous": 0}

    assert srv.stop(signal.SIGTERM) == 0
    auth = {r["request_id"]: r["auth"] for r in _access(srv) if r["method"] != "WS"}
    assert auth["h-key"] == "key:read,write"
    assert auth["h-ply"] == "player"
    assert auth["h-batch"] == "key:admin"
    assert auth["h-anon"] == "anonymous"  # a public board, no credential
    assert auth["h-401"] == "-"  # refused: no credential established
    assert sid not in srv.logs()


def test_protected_mode_writes_are_anonymous(rankd_server: ServerFactory) -> None:
    srv = rankd_server(access_log=True)
    with srv.client() as c:
        assert c.post("/v1/boards/b/scores", json={"member": "a", "score": 1}).status_code == 200
    with _ws(srv) as ws:
        ws.send(json.dumps({"op": "score", "id": 1, "board": "b", "member": "c", "score": 2}))
        assert json.loads(ws.recv(timeout=10))["by"] == "anonymous"
    with srv.client() as c:
        text = c.get("/metrics").text
    assert 'rankd_score_writes_total{writer="anonymous"} 2.0' in text
    srv.stop()
    logs = srv.logs()
    assert "POST /v1/boards/b/scores 200" in logs and "auth=anonymous" in logs
