"""scripts/redis-cluster on its own: start, status, refusal to double-start, and the watchdog
that stops the cluster when the watched process dies (a killed test run leaves nothing)."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.redis.redis_support import SCRIPT, free_base

pytestmark = pytest.mark.redis


def pids(cluster_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in cluster_dir.glob("node-*/redis.pid")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_status_and_watchdog(tmp_path: Path) -> None:
    watched = subprocess.Popen(["sleep", "600"])
    cluster_dir = tmp_path / "c"
    try:
        base = free_base()
        start = subprocess.run(
            [
                SCRIPT,
                "start",
                "--dir",
                cluster_dir,
                "--base-port",
                str(base),
                "--watch",
                str(watched.pid),
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert start.returncode == 0, start.stderr
        assert start.stdout.strip() == f"redis://127.0.0.1:{base}"
        nodes = pids(cluster_dir)
        assert len(nodes) == 6 and all(alive(p) for p in nodes)
        status = subprocess.run(
            [SCRIPT, "status", "--dir", cluster_dir], capture_output=True, text=True, timeout=30
        )
        assert status.returncode == 0
        assert status.stdout.count("master cluster_state:ok") == 3
        assert status.stdout.count("slave cluster_state:ok") == 3
        again = subprocess.run(
            [SCRIPT, "start", "--dir", cluster_dir], capture_output=True, text=True, timeout=30
        )
        assert again.returncode != 0 and "already running" in again.stderr
        conf = (cluster_dir / f"node-{base}" / "redis.conf").read_text()
        assert "appendonly yes" in conf and "appendfsync everysec" in conf
        assert "bind 127.0.0.1" in conf
    finally:
        watched.kill()
        watched.wait()
    deadline = time.monotonic() + 30
    while any(alive(p) for p in nodes):
        assert time.monotonic() < deadline, "watchdog did not stop the cluster"
        time.sleep(0.2)
    subprocess.run([SCRIPT, "stop", "--dir", cluster_dir], check=True, timeout=30)  # idempotent
