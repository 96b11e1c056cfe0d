"""System tools some tests run for real, and what happens where one is missing.

scripts/test installs redis-server, chromium, wrk and promtool (Debian packages) when it can
(as root, or with sudo). On a laptop without them, the tests that need a missing tool are
*deselected* -- not skipped one by one, each pretending to have run -- and the run ends with a
line per tool saying how many tests it cost and how to get them back. Under ``CI=true`` nothing
may be missing: the run fails if any test was deselected or skipped.

Which tests need which tool:

    needs_redis      marked ``needs_redis`` or ``redis``, or using the ``redis_cluster``
                     fixture, or a contract test parametrised with ``backend=redis``
    needs_chromium   marked ``needs_chromium`` or ``browser``
    needs_wrk        marked ``needs_wrk``
    needs_promtool   marked ``needs_promtool``
    needs_root       marked ``needs_root`` (a tmpfs mount, a SCHED_FIFO process), or using the
                     ``tmpfs`` fixture (it mounts one)

Session-wide fixtures shared by several test directories: ``redis_cluster``, one real Redis
Cluster (3 primaries + 3 replicas on 127.0.0.1) for the whole test session, used by tests/redis
and by tests/contract's redis backend. Started by scripts/redis-cluster in a tmp dir on free
ports and torn down at the end; the script's watchdog (--watch) also stops it if this process
dies without tearing down.
"""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.redis.redis_support import SCRIPT, free_base

TOOLS: dict[str, tuple[str, ...]] = {
    "needs_redis": ("redis-server", "redis-cli"),
    "needs_chromium": ("chromium",),
    "needs_wrk": ("wrk",),
    "needs_promtool": ("promtool",),
}
PACKAGES = {
    "needs_redis": "redis-server",
    "needs_chromium": "chromium",
    "needs_wrk": "wrk",
    "needs_promtool": "prometheus",
}
_ALIASES = {"redis": "needs_redis", "browser": "needs_chromium"}
ROOT = "needs_root"

_deselected: dict[str, int] = {}
_missing: dict[str, list[str]] = {}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def needs(item: pytest.Item) -> set[str]:
    """The ``needs_*`` requirements of one collected test."""
    found = {m.name for m in item.iter_markers() if m.name in TOOLS}
    found |= {_ALIASES[m.name] for m in item.iter_markers() if m.name in _ALIASES}
    fixtures = getattr(item, "fixturenames", ())
    if "redis_cluster" in fixtures:
        found.add("needs_redis")
    if "tmpfs" in fixtures or item.get_closest_marker(ROOT) is not None:
        found.add(ROOT)
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "redis":
        found.add("needs_redis")
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _missing.clear()
    _deselected.clear()
    for marker, tools in TOOLS.items():
        absent = [t for t in tools if shutil.which(t) is None]
        if absent:
            _missing[marker] = absent
    if os.geteuid() != 0:
        _missing[ROOT] = ["root (mount, real-time priority)"]
    if not _missing:
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        lacking = needs(item) & _missing.keys()
        if lacking:
            dropped.append(item)
            for marker in lacking:
                _deselected[marker] = _deselected.get(marker, 0) + 1
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for marker, count in sorted(_deselected.items()):
        if marker == ROOT:
            line = f"deselected {count} test(s) needing root (tmpfs mount, SCHED_FIFO): run as root"
        else:
            line = (
                f"deselected {count} test(s) needing {', '.join(_missing[marker])} (not on "
                f"PATH): install Debian's {PACKAGES[marker]} (scripts/test does, as root)"
            )
        terminalreporter.write_line(line, yellow=True)
    if in_ci():
        skipped = len(terminalreporter.stats.get("skipped", []))
        deselected = len(terminalreporter.stats.get("deselected", []))
        if skipped or deselected:
            terminalreporter.write_line(
                f"CI=true: {skipped} skipped and {deselected} deselected test(s); CI runs "
                "every test",
                red=True,
            )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = getattr(reporter, "stats", {})
    if (stats.get("skipped") or stats.get("deselected")) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
