"""Settings parsing, log redaction and the catch-all error path (pure functions, in-process)."""

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from service.app import build_routes
from service.auth import READ, Auth
from service.backend.embedded import EmbeddedBackend
from service.cli import protected_mode_error, settings_from
from service.http import RouteSpec
from service.redact import RedactingFormatter
from service.runtime import Runtime
from service.settings import Settings, SettingsError, is_loopback, load, parse_api_keys
from store.sessions import new_session_id

KEY = "k" * 20


def test_defaults() -> None:
    s = load({})
    assert (s.host, s.port, s.data_dir, s.fsync, s.snapshot_interval) == (
        "127.0.0.1",
        8000,
        Path("data"),
        "everysec",
        300.0,
    )
    assert s.api_keys == {} and not s.auth_enabled and s.loopback_only
    assert s.limits.body_bytes == 65536 and s.limits.batch_items == 1000


def test_connection_limits_come_from_flags_and_environment() -> None:
    s = load(
        {"RANKD_MAX_CONNECTIONS": "500", "RANKD_BODY_TIMEOUT": "2.5"},
        {"header_timeout": "3", "max_connections": "700"},
    )
    assert s.limits.max_connections == 700
    assert (s.limits.body_timeout, s.limits.header_timeout) == (2.5, 3.0)
    assert s.limits.idle_timeout == 5.0 and s.limits.shutdown_grace == 5.0


def test_environment_then_flags_win() -> None:
    env = {
        "RANKD_PORT": "9000",
        "RANKD_FSYNC": "ALWAYS",
        "RANKD_BATCH_ITEMS": "50",
        "RANKD_WS_TICK": "0.25",
        "RANKD_API_KEYS": f"{KEY}:read,write; {'z' * 16}:admin",
        "RANKD_HOST": "",  # empty means unset, not "bind to nothing"
    }
    s = load(env)
    assert s.port == 9000 and s.fsync == "always" and s.host == "127.0.0.1"
    assert s.limits.batch_items == 50 and s.limits.ws_tick == 0.25
    assert s.api_keys == {KEY: frozenset({"read", "write"}), "z" * 16: frozenset({"admin"})}
    s = settings_from(["--port", "9100", "--batch-items", "7", "--api-key", f"{KEY}:sessions"], env)
    assert s.port == 9100 and s.limits.batch_items == 7
    assert s.api_keys == {KEY: frozenset({"sessions"})}
    assert s.limits.store().batch_items == 7


def test_one_store_limits_bound_boards_and_sessions() -> None:
    flags = ["--page-items", "20", "--radius", "3", "--sessions-per-user", "4"]
    env = {"RANKD_MAX_ANONYMOUS_SESSIONS": "9", "RANKD_SESSION_DATA_BYTES": "100"}
    settings = settings_from([*flags, "--data-dir", "unused"], env)
    limits = settings.limits.store()
    assert (limits.page_items, limits.radius, limits.sessions_per_user) == (20, 3, 4)
    assert (limits.anonymous_sessions, limits.session_data_bytes) == (9, 100)
    backend = EmbeddedBackend(settings)
    assert backend._keyspace.limits == limits
    sessions = backend._sessions
    assert (sessions.max_sessions_per_user, sessions.max_anonymous_sessions) == (4, 9)
    assert sessions.max_data_bytes == 100 and sessions.max_ttl == limits.session_max_ttl
    rt = Runtime(settings, backend)
    rt.backend.ready = True
    app = Starlette(routes=build_routes(rt))

    async def calls() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            assert (
                await c.post("/v1/boards/b/scores", json={"member": "m", "score": 1})
            ).is_success
            return [
                (await c.get(f"/v1/boards/b/{path}")).status_code
                for path in (
                    "top?limit=20",
                    "top?limit=21",
                    "members/m/around?radius=3",
                    "members/m/around?radius=4",
                )
            ]

    assert asyncio.run(calls()) == [200, 400, 200, 400]


def test_keys_stay_out_of_repr_and_errors() -> None:
    s = load({"RANKD_API_KEYS": f"{KEY}:admin"})
    assert KEY not in repr(s) and KEY not in str(s)
    with pytest.raises(SettingsError) as err:
        parse_api_keys(f"{KEY}:admin;{KEY}:read")
    assert KEY not in str(err.value) and "twice" in str(err.value)
    with pytest.raises(SettingsError) as err:
        parse_api_keys("a key with spaces!!:read")
    assert "spaces" in str(err.value)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"RANKD_PORT": "65536"}, "between"),
        ({"RANKD_PORT": "http"}, "integer"),
        ({"RANKD_SNAPSHOT_INTERVAL": "inf"}, "between"),
        ({"RANKD_SNAPSHOT_INTERVAL": "-1"}, "between"),
        ({"RANKD_LOG_LEVEL": "loud"}, "one of"),
        ({"RANKD_ON_BAD_DATA": "ignore"}, "one of"),
        ({"RANKD_BODY_BYTES": "10"}, "between"),
        ({"RANKD_MEMBER_BYTES": "1.5"}, "integer"),
        ({"RANKD_SESSION_TTL": "100", "RANKD_SESSION_MAX_TTL": "10"}, "must not exceed"),
        ({"RANKD_API_KEYS": f"{KEY}:"}, "scopes"),
        ({"RANKD_MAX_CONNECTIONS": "0"}, "between"),
        ({"RANKD_IDLE_TIMEOUT": "nan"}, "between"),
        ({"RANKD_HEADER_BYTES": "2048"}, "target_bytes .* must not exceed"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        load(env)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("rankd.internal", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    settings = Settings(host=host)
    assert (protected_mode_error(settings) is None) is loopback
    assert protected_mode_error(Settings(host=host, api_keys={KEY: frozenset({"read"})})) is None


def test_log_formatter_blanks_keys_session_ids_and_bearer_tokens() -> None:
    sid = new_session_id()
    fmt = RedactingFormatter("%(message)s", [KEY])
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "%s", None, None)
    record.args = (f"GET /v1/sessions/{sid} with {KEY} and Authorization: Bearer abc.def",)
    text = fmt.format(record)
    assert sid not in text and KEY not in text and "abc.def" not in text
    assert text.count("[redacted]") == 3


def test_auth_compares_every_key() -> None:
    auth = Auth({KEY: frozenset({"read"}), "y" * 16: frozenset({"admin"})})
    assert auth.scopes_for(f"Bearer {KEY}") == {"read"}
    assert auth.scopes_for(f"bearer   {'y' * 16}") == {"admin"}
    assert auth.scopes_for(f"Bearer {KEY}x") is None
    assert auth.scopes_for(KEY) is None
    assert auth.scopes_for(None) is None


def test_a_bug_is_a_logged_500_that_names_the_route_not_the_path(tmp_path, caplog) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    settings = Settings(data_dir=tmp_path)
    rt = Runtime(settings, EmbeddedBackend(settings))
    rt.backend.ready = True
    routes = build_routes(rt, (RouteSpec("GET", "/v1/things/{id}", broken, READ),))
    app = Starlette(routes=routes)
    sid = new_session_id()

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            return await c.get(f"/v1/things/{sid}")

    with caplog.at_level(logging.ERROR, logger="rankd.http"):
        r = asyncio.run(call())
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:rankd:problem:internal" and "boom" not in r.text
    assert "GET /v1/things/{id}" in caplog.text and "boom" in caplog.text
    assert sid not in caplog.text


def test_cors_origins_are_normalised_as_browsers_send_them() -> None:
    env = {"RANKD_CORS_ORIGINS": "HTTP://A.example:80, https://b.example:8443,,http://[::1]:3000"}
    assert load(env).cors_origins == {
        "http://a.example",
        "https://b.example:8443",
        "http://[::1]:3000",
    }
    assert load(env, {"cors_origins": "https://c.example:443"}).cors_origins == {
        "https://c.example"
    }
    assert load({}).cors_origins == frozenset()
    for bad in ("*", "null", "https://a.example/", "ftp://a.example", "https://a.example:x"):
        with pytest.raises(SettingsError, match="--cors-origins"):
            load({"RANKD_CORS_ORIGINS": bad})


def test_a_metrics_key_is_a_scope_of_its_own() -> None:
    keys = parse_api_keys("scraper-key-0123456789:metrics")
    assert keys == {"scraper-key-0123456789": frozenset({"metrics"})}
