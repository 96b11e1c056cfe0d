"""Session-wide fixtures shared by several test directories.

``redis_cluster``: one real Redis Cluster (3 primaries + 3 replicas on 127.0.0.1) for the whole
test session, used by tests/redis and by tests/contract's redis backend. Started by
scripts/redis-cluster in a tmp dir on free ports and torn down at the end; the script's
watchdog (--watch) also stops it if this process dies without tearing down. A missing
redis-server is a failure, not a skip: scripts/test installs it, so its absence is a broken
setup that must not pass silently.
"""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.redis.redis_support import SCRIPT, free_base


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The seed URL of a running cluster, e.g. redis://127.0.0.1:14520."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; scripts/test installs it (apt-get install)")
    cluster_dir = tmp_path_factory.mktemp("redis-cluster")
    error = ""
    for _ in range(3):  # a port may be taken between the probe and the bind
        started = time.monotonic()
        base, pid = str(free_base()), str(os.getpid())
        proc = subprocess.run(
            [SCRIPT, "start", "--dir", cluster_dir, "--base-port", base, "--watch", pid],
            capture_output=True,
            text=True,
            timeout=90,
        )
        if proc.returncode == 0:
            break
        error = proc.stderr
    else:
        pytest.fail(f"scripts/redis-cluster start failed:\n{error}")
    url = proc.stdout.strip().splitlines()[-1]
    print(f"\nredis cluster {url} started in {time.monotonic() - started:.1f} s")
    try:
        yield url
    finally:
        subprocess.run([SCRIPT, "stop", "--dir", cluster_dir], timeout=60, check=False)
