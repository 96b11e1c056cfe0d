"""Log output on a real process: JSON lines parse, the access log carries request ids, and no
API key or session id reaches either format (the redaction rules of service/redact.py)."""

import json
import logging
import re
import signal
import sys

import pytest
from websockets.sync.client import connect

from service.logs import RedactingJsonFormatter

KEY = "log-admin-key-0123456789"
ODD_KEY = 'odd"key\\0123456789abc'  # a key with JSON escapes must be found in JSON lines too


def _traffic(srv) -> list[str]:
    """Requests that put credentials where a careless log would copy them; returns them."""
    auth = {"authorization": f"Bearer {KEY}"}
    with srv.client() as c:
        sid = c.post("/v1/sessions", json={"user": "ann"}, headers=auth).json()["id"]
        assert c.get(f"/v1/sessions/{sid}", headers=auth).status_code == 200
        # An unknown query parameter is a 400; the query still must not reach the log.
        assert c.get(f"/v1/sessions/{sid}?session={sid}", headers=auth).status_code == 400
        assert (
            c.get("/v1/boards", headers={"authorization": f"Bearer {ODD_KEY}"}).status_code == 200
        )
        assert (
            c.get("/v1/boards", headers={"authorization": "Bearer wrong-key-xyz"}).status_code
            == 401
        )
        mine = c.get("/healthz", headers={"x-request-id": "trace-42.a:b"})
        assert mine.headers["x-request-id"] == "trace-42.a:b"
        # A session id as the request id is not echoed: it would be logged otherwise.
        shaped = c.get("/healthz", headers={"x-request-id": sid})
        assert shaped.headers["x-request-id"] != sid
        assert len(shaped.headers["x-request-id"]) == 16
        assert c.get("/nowhere").headers["x-request-id"]  # errors carry one too
    ws_url = srv.url.replace("http", "ws") + f"/v1/ws?session={sid}"
    with connect(ws_url) as ws:
        ws.close()
    # The key in the query, as a browser must send it; the WebSocket is access-logged too.
    with connect(srv.url.replace("http", "ws") + f"/v1/ws?token={KEY}&session={sid}") as ws:
        ws.close()
    return [KEY, ODD_KEY, sid]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_key_or_session_id_in_either_log_format(rankd_server, fmt) -> None:
    srv = rankd_server(api_key=[f"{KEY}:admin", f"{ODD_KEY}:read"], log_format=fmt, access_log=True)
    secrets = _traffic(srv)
    assert srv.stop(signal.SIGTERM) == 0
    logs = srv.logs()
    for secret in secrets:
        assert secret not in logs, f"{secret!r} leaked into the {fmt} log"
        assert json.dumps(secret)[1:-1] not in logs  # nor in its JSON-escaped form
    assert "trace-42.a:b" in logs
    assert "GET /v1/sessions/[redacted] 200" in logs
    # The WebSocket lines exist (upgrade and close of both connections) and hold no query.
    assert logs.count("WS /v1/ws 101 id=") == 2 and logs.count("WS /v1/ws closed 1000") == 2
    ws_lines = [line for line in logs.splitlines() if "WS /v1/ws" in line]
    assert not any("token" in line or "session=" in line for line in ws_lines)
    assert "token=<redacted>" in logs  # uvicorn's own upgrade line: values hidden (redact.py)


def test_json_lines_parse_and_access_records_carry_fields(rankd_server) -> None:
    srv = rankd_server(
        api_key=[f"{KEY}:admin", f"{ODD_KEY}:read"], log_format="json", access_log=True
    )
    _traffic(srv)
    assert srv.stop(signal.SIGTERM) == 0
    records = [json.loads(line) for line in srv.logs().splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert not any("color_message" in r for r in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", r["time"]) for r in records)
    access = [r for r in records if r["logger"] == "rankd.access"]
    assert len(access) >= 7
    mine = next(r for r in access if r["request_id"] == "trace-42.a:b")
    assert mine["method"] == "GET" and mine["path"] == "/healthz" and mine["status"] == 200
    assert mine["bytes"] > 0 and mine["duration_ms"] >= 0
    assert any(r["status"] == 401 for r in access)
    assert any(r["status"] == 404 and r["path"] == "/nowhere" for r in access)
    assert any(r["message"].startswith("ready in") for r in records)


def test_no_access_log_unless_asked(rankd_server) -> None:
    srv = rankd_server()
    with srv.client() as c:
        r = c.get("/healthz")
        assert "x-request-id" not in r.headers
    srv.stop()
    assert "rankd.access" not in srv.logs()


def test_json_formatter_redacts_every_field_and_the_exception() -> None:
    fmt = RedactingJsonFormatter([ODD_KEY])
    sid = "A" * 43
    try:
        raise ValueError(f"bad session {sid}")
    except ValueError:
        record = logging.LogRecord(
            "rankd", logging.ERROR, __file__, 1, "key %s", (ODD_KEY,), exc_info=sys.exc_info()
        )
    record.path = f"/v1/sessions/{sid}"
    out = json.loads(fmt.format(record))
    assert out["message"] == "key [redacted]"
    assert out["path"] == "/v1/sessions/[redacted]"
    assert sid not in out["exc_info"] and "ValueError" in out["exc_info"]
