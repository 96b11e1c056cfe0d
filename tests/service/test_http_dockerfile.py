"""The Dockerfile's own commands, run here: its ENTRYPOINT and its HEALTHCHECK.

No image is built (CI has no Docker daemon); instead the exact argv the image would run is run
against the installed rankd, so a typo in the HEALTHCHECK one-liner or an ENTRYPOINT that
starts without keys fails here rather than in production.
"""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def _instruction(name: str) -> str:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = re.findall(rf"^{name}\s+(.*)$", text, flags=re.MULTILINE)
    assert found, f"no {name} in the Dockerfile"
    return found[-1].strip()


def _healthcheck_argv() -> list[str]:
    spec = _instruction("HEALTHCHECK")
    argv: list[str] = json.loads(spec[spec.index("CMD") + 3 :].strip())
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def test_image_runs_as_a_non_root_user_with_a_data_volume() -> None:
    assert _instruction("USER") not in ("root", "0")
    assert _instruction("VOLUME") == "/data"
    entry = json.loads(_instruction("ENTRYPOINT"))
    assert entry[:3] == ["rankd", "--host", "0.0.0.0"]
    assert entry[entry.index("--data-dir") + 1] == "/data"


def test_healthcheck_command_passes_on_a_live_server(rankd_server) -> None:
    srv = rankd_server()
    r = subprocess.run(
        _healthcheck_argv(),
        env={"RANKD_PORT": str(srv.port), "http_proxy": "http://192.0.2.1:9"},
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


def test_healthcheck_command_fails_without_a_server(rankd_server) -> None:
    srv = rankd_server()
    port = srv.port
    srv.stop(signal.SIGTERM)
    r = subprocess.run(
        _healthcheck_argv(), env={"RANKD_PORT": str(port)}, capture_output=True, timeout=30
    )
    assert r.returncode != 0


def _entrypoint(data: Path) -> list[str]:
    entry = json.loads(_instruction("ENTRYPOINT"))
    entry[entry.index("--data-dir") + 1] = str(data)
    return [str(Path(sys.executable).with_name(entry[0])), *entry[1:], "--port", "0"]


def test_entrypoint_refuses_to_start_without_keys(tmp_path) -> None:
    r = subprocess.run(
        _entrypoint(tmp_path / "d"), capture_output=True, text=True, timeout=30, env={}
    )
    assert r.returncode == 2
    assert "RANKD_API_KEYS" in r.stderr


def test_entrypoint_starts_with_keys_from_the_environment(tmp_path) -> None:
    with subprocess.Popen(
        _entrypoint(tmp_path / "d"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"RANKD_API_KEYS": "admin-key-0123456789:admin"},
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith(b"rankd listening on http://0.0.0.0:")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
