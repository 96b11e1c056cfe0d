"""API keys on a real process started with keys; protected mode at the CLI.

Which route each scope opens is the matrix in test_http_scopes.py (rendered into README).
"""

import subprocess

import httpx
import pytest

READ = "read-key-0123456789"
WRITE = "write-key-0123456789"
SESS = "sessions-key-0123456789"
ADMIN = "admin-key-0123456789"
BOTH = "readwrite-key-0123456789"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, server_class):
    srv = server_class(
        tmp_path_factory.mktemp("secured"),
        {"api_key": [f"{READ}:read", f"{WRITE}:write", f"{SESS}:sessions", f"{BOTH}:read,write"]},
        # Env and flags both: flags win, so the admin key must come from a flag too.
        env={"RANKD_API_KEYS": "ignored-key-0123456789:admin"},
    )
    srv.flags["api_key"].append(f"{ADMIN}:admin")
    srv.start()
    yield srv
    srv.stop()


def _as(key: str | None) -> dict[str, str]:
    return {} if key is None else {"authorization": f"Bearer {key}"}


def test_a_key_may_hold_several_scopes_and_an_unknown_key_is_401(secured, problem) -> None:
    with secured.client() as c:
        w = c.post("/v1/boards/both/scores", json={"member": "a", "score": 1}, headers=_as(BOTH))
        assert w.status_code == 200, w.text
        assert c.get("/v1/boards/both/top", headers=_as(BOTH)).status_code == 200
        problem(c.post("/v1/sessions", json={}, headers=_as(BOTH)), 403, "forbidden")
        r = c.get("/v1/boards", headers=_as("wrong-key-0123456789"))
        problem(r, 401, "unauthorized")
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_open_routes_and_malformed_headers(secured, problem) -> None:
    with secured.client() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        problem(c.get("/v1/boards", headers={"authorization": READ}), 401)  # no scheme
        problem(c.get("/v1/boards", headers={"authorization": "Basic " + READ}), 401)
        problem(c.get("/v1/boards", headers={"authorization": "Bearer"}), 401)
        assert c.get("/v1/boards", headers={"authorization": f"bearer {READ}"}).status_code == 200
        # The env key was replaced by the flags.
        problem(c.get("/v1/boards", headers=_as("ignored-key-0123456789")), 401)


def test_keys_never_reach_the_log(secured) -> None:
    with secured.client() as c:
        c.get("/v1/boards", headers=_as("wrong-key-0123456789"))
        sid = c.post("/v1/sessions", json={}, headers=_as(SESS)).json()["id"]
        c.get(f"/v1/sessions/{sid}", headers=_as(SESS))
    logs = secured.logs()
    for secret in (READ, WRITE, SESS, ADMIN, BOTH, "wrong-key-0123456789", sid):
        assert secret not in logs


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_protected_mode_refuses_a_public_bind_without_keys(tmp_path, rankd_argv, host: str) -> None:
    r = subprocess.run(
        [*rankd_argv, "--host", host, "--port", "0", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2, r
    assert "protected mode" in r.stderr and "RANKD_API_KEYS" in r.stderr
    assert not (tmp_path / "d").exists()


def test_public_bind_with_keys_is_allowed(rankd_server) -> None:
    srv = rankd_server(host="0.0.0.0", api_key=[f"{ADMIN}:admin"])
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", trust_env=False) as c:
        assert c.get("/v1/boards", headers=_as(ADMIN)).status_code == 200


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--api-key", "short:read"], "at least 16"),
        (["--api-key", "long-enough-key-123:root"], "scopes"),
        (["--api-key", "long-enough-key-123"], "no ':'"),
        (["--fsync", "sometimes"], "invalid choice"),
        (["--body-bytes", "lots"], "integer"),
        (["--batch-items", "0"], "between"),
        (["--snapshot-interval", "nan"], "between"),
    ],
)
def test_bad_settings_exit_2_with_a_message(
    tmp_path, rankd_argv, args: list[str], needle: str
) -> None:
    r = subprocess.run(
        [*rankd_argv, "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2, r
    assert needle in r.stderr, r.stderr
    assert "long-enough-key-123" not in r.stderr  # keys are never echoed
