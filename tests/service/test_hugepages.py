"""The heap on transparent huge pages (service/hugepages.py): with RANKD_HUGEPAGES=1 the rankd
server re-executes itself with PYTHONMALLOC=malloc + glibc.malloc.hugetlb=1 where the platform
allows it, and
collapse() puts huge pages split by copy-on-write back together."""

import ctypes
import mmap
import os
import signal
import time
from pathlib import Path

from service import hugepages
from tests.servers import ServerFactory

# What this box supports decides what the server must do; the tests check the decision both
# ways instead of skipping (environment() is None only off Linux/glibc >= 2.35 or THP "never").
SUPPORTED = hugepages.environment({"RANKD_HUGEPAGES": "1"}, []) is not None


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


def test_environment_decision() -> None:
    on = {"RANKD_HUGEPAGES": "1"}
    env = hugepages.environment(
        {**on, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, ["--port", "0"]
    )
    if SUPPORTED:
        assert env is not None
        assert env["PYTHONMALLOC"] == "malloc"
        assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    else:
        assert env is None
    # Subcommands fork nothing and should start fast; an explicit choice is respected (and is
    # what stops a second re-execution); off unless asked for.
    assert hugepages.environment(on, ["check", "/data"]) is None
    assert hugepages.environment(on, ["healthcheck"]) is None
    assert hugepages.environment({**on, "PYTHONMALLOC": "pymalloc"}, []) is None
    assert hugepages.environment({**on, "PYTHONMALLOC": "malloc"}, []) is None
    assert hugepages.environment({"RANKD_HUGEPAGES": "0"}, []) is None
    assert hugepages.environment({}, []) is None
    tuned = hugepages.environment({**on, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, [])
    assert tuned is None or tuned["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


def test_server_runs_on_huge_pages(rankd_server: ServerFactory) -> None:
    srv = rankd_server(env={"RANKD_HUGEPAGES": "1"})
    assert srv.proc is not None
    env = _environ(srv.proc.pid)  # the same pid: the re-execution is an exec, not a child
    if SUPPORTED:
        assert env.get("PYTHONMALLOC") == "malloc"
        assert "glibc.malloc.hugetlb=1" in env.get("GLIBC_TUNABLES", "")
        smaps = Path(f"/proc/{srv.proc.pid}/smaps").read_text()
        assert " hg" in smaps  # glibc madvised its heap MADV_HUGEPAGE
    else:
        assert "PYTHONMALLOC" not in env
    # It still serves and snapshots (the lifespan's final snapshot on SIGTERM).
    with srv.client() as c:
        assert c.post("/v1/sessions", json={"data": {"a": 1}}).status_code == 201
        assert c.post("/v1/admin/snapshot").status_code == 200
    assert srv.stop(signal.SIGTERM) in (0, -signal.SIGTERM)


def test_off_by_default(rankd_server: ServerFactory) -> None:
    srv = rankd_server()
    assert srv.proc is not None
    assert "PYTHONMALLOC" not in _environ(srv.proc.pid)


def _huge_kb(start: int) -> int:
    """AnonHugePages of the mapping that starts at ``start`` in this process."""
    found = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            found = int(head.split("-")[0], 16) == start
        elif found and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    raise AssertionError("mapping not found")


def test_collapse_after_copy_on_write_split() -> None:
    if not SUPPORTED:
        assert hugepages.collapse()[0] == 0  # nothing asked for huge pages
        return
    size = 16 << 20
    # Private, as a heap (a shared anonymous mapping is shmem, with its own THP setting);
    # 2 MiB more, to align to a huge page.
    region = mmap.mmap(-1, size + (2 << 20), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = memoryview(region)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    aligned = (base + (2 << 20) - 1) & ~((2 << 20) - 1)
    offset = aligned - base
    region.madvise(mmap.MADV_HUGEPAGE, offset, size)
    for i in range(offset, offset + size, 4096):
        view[i] = 1  # faults in huge pages (the range is VM_HUGEPAGE now)
    start = next(lo for lo, hi in hugepages._huge_ranges() if lo <= aligned < hi)
    before = _huge_kb(start)
    assert before >= 8 << 10, before
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only holds the pages shared
        time.sleep(30)
        os._exit(0)
    try:
        for i in range(offset, offset + size, 2 << 20):
            view[i] = 2  # copy-on-write on a shared huge page splits it
        split = _huge_kb(start)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert split < before, (before, split)
    blocks, _ = hugepages.collapse()
    assert blocks >= 8
    assert _huge_kb(start) >= before
    assert all(view[i] == 2 for i in range(offset, offset + size, 2 << 20))  # same contents
    view.release()
    region.close()
