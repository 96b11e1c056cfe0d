"""The heap on transparent huge pages (service/hugepages.py): with RANKD_HUGEPAGES=1 the rankd
server re-executes itself with PYTHONMALLOC=malloc + glibc.malloc.hugetlb=1 where the platform
allows it; collapse() puts huge pages split by copy-on-write back together and, on the default
(pymalloc) heap, moves the dense blocks of the heap onto huge pages."""

import contextlib
import ctypes
import mmap
import os
import signal
import threading
import time
from collections.abc import Iterator
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


def _mapping_kb(address: int) -> tuple[int, int]:
    """(Rss, AnonHugePages) kB of the mapping that holds ``address`` in this process."""
    found, rss = False, -1
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(x, 16) for x in head.split("-"))
            found = lo <= address < hi
        elif found and line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif found and line.startswith("AnonHugePages:"):
            return rss, int(line.split()[1])
    raise AssertionError("mapping not found")


def _resident_pages(block: int) -> int:
    """Resident 4 KiB pages of the 2 MiB block at ``block`` in this process (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    pages = (ctypes.c_ubyte * 512)()
    assert libc.mincore(block, 2 << 20, pages) == 0, ctypes.get_errno()
    return 512 - bytes(pages).count(0)


def _smaps_rollup_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in smaps_rollup")


def test_default_heap_collapse_takes_dense_blocks_only() -> None:
    """Default heap (no MADV_HUGEPAGE anywhere): the dense 2 MiB blocks of a private anonymous
    mapping become huge pages, the sparse ones are left alone (their holes stay unallocated)."""
    two = 2 << 20
    region = mmap.mmap(-1, 8 * two, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = memoryview(region)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    aligned = (base + two - 1) & ~(two - 1)
    offset = aligned - base
    # Blocks 0-3 after the aligned start dense, blocks 4-5 one page each. Only under THP
    # "always" are the sparse ones madvised NOHUGEPAGE, or their first touch would fault them
    # in whole; elsewhere nothing but collapse()'s residency check keeps them sparse.
    if hugepages._thp_mode() == "always":
        region.madvise(mmap.MADV_NOHUGEPAGE, offset + 4 * two, 2 * two)
    for i in range(offset, offset + 4 * two, 4096):
        view[i] = 1
    view[offset + 4 * two] = view[offset + 5 * two] = 1
    if not hugepages.collapsible():
        assert hugepages.collapse()[0] == 0
        return
    dense_before = _mapping_kb(aligned)
    blocks, _ = hugepages.collapse()
    assert blocks >= 4
    dense = _mapping_kb(aligned)
    assert dense[1] >= dense_before[1] + 4 * two // 1024  # the dense blocks are huge pages now
    # The sparse blocks still hold their one page each: not collapsed (which would make all
    # 512 resident).
    assert [_resident_pages(aligned + k * two) for k in (4, 5)] == [1, 1]
    assert view[offset] == 1 and view[offset + 5 * two] == 1  # same contents
    view.release()
    region.close()


def test_default_server_moves_its_heap_to_huge_pages(rankd_server: ServerFactory) -> None:
    """A default rankd (pymalloc) collapses its heap after start and after each snapshot, so
    the snapshot's fork copies few page-table entries (loadtest/RESULTS.md "The fork")."""
    srv = rankd_server()
    assert srv.proc is not None
    pid = srv.proc.pid

    def huge_kb(at_least: int) -> int:
        """AnonHugePages of the server once it reaches ``at_least`` kB (the collapse runs in
        the background), or after 20 s."""
        deadline = time.monotonic() + 20
        while (kb := _smaps_rollup_kb(pid, "AnonHugePages")) < at_least:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return kb

    assert "PYTHONMALLOC" not in _environ(pid)
    if not hugepages.collapsible():
        assert huge_kb(1) == 0
        return
    after_start = huge_kb(4096)
    assert after_start >= 4096  # the heap loaded at start (imports, recovery)
    with srv.client() as c:
        for _ in range(200):
            assert c.post("/v1/sessions", json={"data": {"k": "x" * 2000}}).status_code == 201
        assert c.post("/v1/admin/snapshot").status_code == 200
    # What the snapshot child's copy-on-write split is put back together.
    assert huge_kb(after_start) >= after_start


def test_collapse_after_copy_on_write_split() -> None:
    if not SUPPORTED:
        return  # the glibc heap is not available here: test_environment_decision checks that
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


def test_collapse_stops_when_asked() -> None:
    """A server shutting down sets ``stop``: the collapse ends after the block in hand."""
    stop = threading.Event()
    stop.set()
    blocks, seconds = hugepages.collapse(stop=stop)
    assert blocks <= 1
    assert seconds < 1.0


def test_warm_up_gives_its_page_back() -> None:
    """collapse() first faults each block's destination page into a scratch mapping and
    unmaps it (hugepages._warm: on a VM the copy then skips the host's first-touch faults):
    no mapping is left behind, however often it runs."""

    def vm_kb() -> int:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                    if x.startswith("VmSize:"))  # fmt: skip
        return int(line.split()[1])

    libc = hugepages._libc()
    before = vm_kb()
    for _ in range(50):
        hugepages._warm(libc)
    assert vm_kb() - before < 4096  # one leaked scratch mapping would be 4 MiB; 50, 200 MiB


_TWO = 2 << 20


@contextlib.contextmanager
def _dense_blocks(n: int) -> Iterator[int]:
    """A private anonymous mapping with ``n`` fully written 2 MiB-aligned blocks: yields the
    first block's address; unmapped on exit."""
    region = mmap.mmap(-1, (n + 1) * _TWO, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = memoryview(region)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    aligned = (base + _TWO - 1) & ~(_TWO - 1)
    for i in range(aligned - base, aligned - base + n * _TWO, 4096):
        view[i] = 1
    try:
        yield aligned
    finally:
        view.release()
        region.close()


def test_collapse_waits_while_held() -> None:
    """While ``hold()`` says a snapshot child is alive, collapse() copies nothing (the pages
    are the child's too) and gives up at ``max_seconds``; released, it does the work."""
    with _dense_blocks(4) as aligned:
        if not hugepages.collapsible():
            assert hugepages.collapse(hold=lambda: True)[0] == 0
            return
        before = _mapping_kb(aligned)[1]
        blocks, seconds = hugepages.collapse(max_seconds=0.5, hold=lambda: True)
        assert blocks == 0 and seconds >= 0.5
        assert _mapping_kb(aligned)[1] == before
        released = time.monotonic() + 0.3
        blocks, _ = hugepages.collapse(hold=lambda: time.monotonic() < released)
        assert blocks >= 4
        assert _mapping_kb(aligned)[1] >= before + 4 * _TWO // 1024


def test_collapse_copies_only_holding_the_gate() -> None:
    """Each block is copied holding ``gate``: a snapshot that holds it through its fork (as
    Persistence._pause_collapse does) knows no copy runs meanwhile."""
    with _dense_blocks(4) as aligned:
        gate = threading.Lock()
        gate.acquire()
        result: list[tuple[int, float]] = []
        worker = threading.Thread(target=lambda: result.append(hugepages.collapse(gate=gate)))
        before = _mapping_kb(aligned)[1]
        worker.start()
        try:
            time.sleep(0.5)
            assert worker.is_alive() == hugepages.collapsible()  # waiting for the gate
            assert _mapping_kb(aligned)[1] == before  # and nothing copied meanwhile
        finally:
            gate.release()
            worker.join(60)
        if hugepages.collapsible():
            assert result[0][0] >= 4
            assert _mapping_kb(aligned)[1] >= before + 4 * _TWO // 1024


def test_background_lowers_only_the_calling_thread() -> None:
    """The collapse's thread runs at nice 19 (hugepages.background); the thread that set it
    up and every other thread keep their priority."""

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = nice()
    seen: list[int] = []

    def worker() -> None:
        hugepages.background()
        seen.append(nice())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert seen == [hugepages.BACKGROUND_NICE]
    assert nice() == mine
