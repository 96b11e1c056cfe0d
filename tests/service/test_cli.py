"""The ``rankd`` command as an operator meets it: --version, --help, signals, refusals.

Every test runs the installed console script as a real process; the one in-process check
(every flag has help text and a default) reads the same parser the process builds.
"""

import argparse
import os
import re
import signal
import subprocess
import time
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from service.cli import build_parser

ADMIN = "file-admin-key-0123456789"


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 30):
    base = {k: v for k, v in os.environ.items() if not k.startswith("RANKD_")}
    base.update(env or {})
    return subprocess.run(
        argv, cwd=cwd, env=base, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_version_prints_the_installed_version(rankd_argv, tmp_path) -> None:
    r = _run([*rankd_argv, "--version"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"rankd {metadata.version('rankd')}"


def test_every_flag_has_help_text_with_its_default(rankd_argv, tmp_path) -> None:
    r = _run([*rankd_argv, "--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # argparse wraps lines
    flags = 0
    for action in build_parser()._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        flags += 1
        assert action.help, f"{action.option_strings} has no help text"
        assert "default" in action.help, f"{action.option_strings}: help names no default"
        assert " ".join(action.help.split()) in text, action.option_strings
    assert flags >= 35  # the limits included


@pytest.mark.parametrize(
    ("sig", "status"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_signals_stop_cleanly_with_the_conventional_status(rankd_server, sig, status) -> None:
    srv = rankd_server(snapshot_interval=0)
    with srv.client() as c:
        assert c.post("/v1/boards/sig/scores", json={"member": "a", "score": 3}).status_code == 200
    assert srv.stop(sig) == status
    logs = srv.logs()
    assert "Traceback" not in logs and "KeyboardInterrupt" not in logs, logs
    assert "final snapshot done" in logs
    srv.start()  # the final snapshot holds the write
    with srv.client() as c:
        assert c.get("/v1/boards/sig/members/a").json()["score"] == 3


def test_a_taken_port_fails_fast_before_touching_the_data_dir(rankd_server, tmp_path) -> None:
    first = rankd_server()
    second = rankd_server(start=False, port=first.port)
    began = time.monotonic()
    r = _run(second.argv(), second.workdir)
    assert r.returncode == 3, r
    assert time.monotonic() - began < 10
    assert f"cannot bind 127.0.0.1:{first.port}" in r.stderr
    assert "--port" in r.stderr and "Traceback" not in r.stderr
    assert "listening" not in r.stdout  # nothing claims to listen
    assert not second.data_dir.exists()  # no recovery, not even a directory


def test_a_locked_data_dir_fails_before_binding(rankd_server) -> None:
    first = rankd_server()
    second = rankd_server(start=False, data_dir=first.data_dir)
    r = _run(second.argv(), second.workdir)
    assert r.returncode == 1, r
    assert "in use by another rankd process" in r.stderr and "--data-dir" in r.stderr
    assert "listening" not in r.stdout and "Traceback" not in r.stderr
    with first.client() as c:  # the owner is untouched
        assert c.get("/readyz").status_code == 200


def test_corrupt_data_says_what_to_do_without_a_traceback(rankd_server) -> None:
    srv = rankd_server(snapshot_interval=0)
    srv.stop()
    for name in ("snapshot.rkd", "snapshot.prev.rkd"):
        (srv.data_dir / name).write_bytes(b"not a snapshot")
    with pytest.raises(RuntimeError, match="exited with 1"):
        srv.start()
    logs = srv.logs()
    assert "rankd check --data-dir" in logs and "rankd repair" in logs
    assert "Traceback" not in logs, logs


def test_api_keys_file_is_read_as_a_docker_secret(rankd_server, tmp_path) -> None:
    secret = tmp_path / "keys"
    secret.write_text(f"{ADMIN}:admin\n")
    srv = rankd_server(host="0.0.0.0", env={"RANKD_API_KEYS_FILE": str(secret)})
    url = f"http://127.0.0.1:{srv.port}"
    with httpx.Client(base_url=url, trust_env=False) as c:
        assert c.get("/v1/boards").status_code == 401
        ok = c.get("/v1/boards", headers={"authorization": f"Bearer {ADMIN}"})
        assert ok.status_code == 200, ok.text


def test_secret_file_refusals_name_the_variable(rankd_argv, tmp_path) -> None:
    both = _run(
        [*rankd_argv, "--port", "0"],
        tmp_path,
        {"RANKD_API_KEYS": f"{ADMIN}:admin", "RANKD_API_KEYS_FILE": str(tmp_path / "k")},
    )
    assert both.returncode == 2 and "RANKD_API_KEYS and RANKD_API_KEYS_FILE" in both.stderr
    missing = _run(
        [*rankd_argv, "--port", "0"], tmp_path, {"RANKD_API_KEYS_FILE": str(tmp_path / "nope")}
    )
    assert missing.returncode == 2
    assert re.search(r"RANKD_API_KEYS_FILE: cannot read .*nope", missing.stderr), missing.stderr


def test_bad_settings_say_which_flag_and_variable(rankd_argv, tmp_path) -> None:
    r = _run([*rankd_argv, "--log-format", "xml"], tmp_path)
    assert r.returncode == 2 and "--log-format" in r.stderr
    r = _run([*rankd_argv], tmp_path, {"RANKD_LOG_FORMAT": "xml"})
    assert r.returncode == 2 and "RANKD_LOG_FORMAT" in r.stderr and "'xml'" in r.stderr
    r = _run([*rankd_argv], tmp_path, {"RANKD_ACCESS_LOG": "maybe"})
    assert r.returncode == 2 and "RANKD_ACCESS_LOG" in r.stderr
