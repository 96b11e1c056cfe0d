"""Settings of the redis backend: persistence refused, URLs checked, passwords from the
environment or a file and never in repr; and the CLI refusing with a clear message."""

import subprocess
from pathlib import Path

import pytest

from service.backend.redis.backend import Target
from service.settings import SettingsError, load
from tests.servers import rankd_command


@pytest.mark.parametrize(
    ("env", "flags"),
    [
        ({}, {"fsync": "always"}),
        ({}, {"data_dir": "/tmp/x"}),
        ({"RANKD_SNAPSHOT_INTERVAL": "10"}, {}),
        ({}, {"on_bad_data": "move-aside"}),
    ],
)
def test_persistence_settings_are_refused_in_redis_mode(env: dict, flags: dict) -> None:
    with pytest.raises(SettingsError, match="redis backend keeps no local data"):
        load({"RANKD_BACKEND": "redis", **env}, flags)
    load(env, flags)  # the embedded backend takes them


def test_password_from_env_or_file_and_never_in_repr(tmp_path: Path) -> None:
    s = load({"RANKD_REDIS_PASSWORD": "pw-from-env"}, {"backend": "redis"})
    assert s.redis_password == "pw-from-env" and "pw-from-env" not in repr(s)
    f = tmp_path / "pw"
    f.write_text("pw-from-file\n")
    s = load(
        {"RANKD_REDIS_PASSWORD_FILE": str(f), "RANKD_REDIS_PASSWORD": "no"}, {"backend": "redis"}
    )
    assert s.redis_password == "pw-from-file"
    with pytest.raises(SettingsError, match="RANKD_REDIS_PASSWORD_FILE cannot be read"):
        load({"RANKD_REDIS_PASSWORD_FILE": str(tmp_path / "absent")}, {"backend": "redis"})


def test_urls_and_prefix() -> None:
    s = load(
        {}, {"backend": "redis", "redis_url": "rediss://u:p@a:7000,b:7001", "redis_prefix": "x:y"}
    )
    t = Target(s.redis_url, s.redis_username, s.redis_password)
    assert t.seeds == [("a", 7000), ("b", 7001)] and t.tls
    assert (t.username, t.password) == ("u", "p")
    for bad in ("http://a:1", "redis://a b", ""):
        with pytest.raises(SettingsError, match="--redis-url"):
            load({}, {"backend": "redis", "redis_url": bad})
    with pytest.raises(SettingsError, match="--redis-prefix"):
        load({}, {"backend": "redis", "redis_prefix": "{x}"})


def test_cli_refuses_fsync_in_redis_mode() -> None:
    proc = subprocess.run(
        [*rankd_command(), "--backend", "redis", "--fsync", "always"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "--fsync / RANKD_FSYNC: the redis backend keeps no local data" in proc.stderr


def test_wait_settings() -> None:
    s = load({"RANKD_REDIS_WAIT_REPLICAS": "2"}, {"backend": "redis", "redis_wait_aof": "1, 1"})
    assert (s.redis_wait_replicas, s.redis_wait_aof, s.redis_wait_timeout_ms) == (2, (1, 1), 100)
    s = load({}, {"backend": "redis", "redis_wait_timeout_ms": "2500"})
    assert (s.redis_wait_replicas, s.redis_wait_aof, s.redis_wait_timeout_ms) == (0, (0, 0), 2500)
    for bad in ("2,0", "1", "a,b", "0,16", "-1,0"):
        with pytest.raises(SettingsError, match="--redis-wait-aof / RANKD_REDIS_WAIT_AOF"):
            load({}, {"backend": "redis", "redis_wait_aof": bad})
    # a 0 timeout would be WAIT's "block forever": a write must always get an answer
    for bad in ("0", "60001", "x"):
        with pytest.raises(SettingsError, match="--redis-wait-timeout-ms"):
            load({}, {"backend": "redis", "redis_wait_timeout_ms": bad})
    with pytest.raises(SettingsError, match="--redis-wait-replicas"):
        load({}, {"backend": "redis", "redis_wait_replicas": "16"})
