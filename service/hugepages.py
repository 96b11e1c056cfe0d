"""Transparent huge pages for the heap, so that a snapshot's fork stays short as the heap grows.

Why. A background snapshot forks (store/disk/bgsave.py), and fork() copies the parent's page
tables with the event loop stopped: one entry per 4 KiB page, ~20 ms per GB resident on the
2-core dev VM when it is quiet and 50-100 ms at 1.5 GB when it is not (loadtest/RESULTS.md,
"The fork"). With the heap on 2 MiB transparent huge pages one entry covers 512 pages, and the
same fork takes 1-4 ms. Python (3.11) and glibc can give us that without any C code:

    PYTHONMALLOC=malloc                 objects come from glibc malloc, not from pymalloc's
                                        1 MiB mmap arenas (a 1 MiB mapping can never hold a
                                        2 MiB page)
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1
                                        glibc (>= 2.35) madvise(MADV_HUGEPAGE)s the heap it
                                        grows, which THP mode "madvise" (the common default,
                                        and this box's) honours

Both are read once at process start, so the ``rankd`` server command re-executes itself with
them (``reexec``: the same argv, pid and descriptors) before it imports anything heavy. Opt
in with ``RANKD_HUGEPAGES=1`` (off by default: under an address-space limit the glibc heap once
stopped answering, cause not found, and it costs CPU below); an explicit ``PYTHONMALLOC`` is
respected as it is. Price:
glibc malloc is slower than pymalloc for small objects (a session create measured ~30 %
more CPU in process, 14.9 vs 11.4 us; a full collection ~2x slower per object:
loadtest/RESULTS.md "The fork"), and the heap holds ~3 % more resident memory.

Copy-on-write splits them. While a snapshot child is alive, the parent's first write to a
shared huge page splits it back into 4 KiB entries (the kernel copies 4 KiB, not 2 MiB), so a
heap whose old objects are touched during a snapshot (refcounts, session touches) would creep
back to a 4 KiB fork. ``collapse()`` undoes that after each snapshot: MADV_COLLAPSE (Linux >=
6.1) over the heap's huge-page ranges, in a worker thread (ctypes drops the GIL; ~0.6 ms of
kernel time per 2 MiB copied, 250 ms for a split 780 MB heap), so the next fork is short again.

The default heap (pymalloc) gets most of it without the price. MADV_COLLAPSE does not need the
range to be madvised, only 2 MiB of it inside one mapping: pymalloc's 1 MiB arenas are mmapped
next to each other and the kernel merges them into large mappings, so ``collapse()`` also
works on the default heap -- every private anonymous mapping (arenas, glibc's heap, its large
blocks) whose 2 MiB blocks are at least 7/8 resident (``mincore``; a sparse block, a thread
stack, is left alone: collapsing it would make its holes resident). Measured on the dev VM, a
1M-session heap (800 MB): fork 18-28 ms before, 1.7-1.9 ms after, at +1 % resident memory;
collapsing memory that was never huge costs ~13 ms of CPU per 2 MiB on a fresh VM (with the
warm-up below), so the server does it after recovery, after each snapshot and as the heap
grows, off the event loop (not under an address-space limit: ``collapsible``). Objects stay
pymalloc's: creating and collecting them costs what it did.

The copy holds the mmap lock for writing, so every page fault of the event loop waits for the
block in hand. Two things keep that short: each block's destination page is faulted in first
in a scratch mapping and given back (``_warm``: on a fresh VM the copy otherwise pays the
host's first-touch faults under the lock, ~20 ms a block instead of ~0.6), and a pause of
PAUSE x the copy after it. A collapse waits while a fork is made or a snapshot child is
alive (``hold``, ``gate``).
"""

import contextlib
import ctypes
import logging
import mmap
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

log = logging.getLogger("rankd.hugepages")

OPT_IN = "RANKD_HUGEPAGES"  # "1": glibc malloc on huge pages; otherwise pymalloc, 4 KiB pages
TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
_MADV_COLLAPSE = 25  # Linux 6.1, include/uapi/asm-generic/mman-common.h
_MADV_HUGEPAGE = 14
_HUGE = 2 << 20  # x86-64 and arm64 (4 KiB base pages) PMD size
MAX_SECONDS = 30.0  # collapse(): one call's bound (~2.5 GB of heap never huge, with the pauses)
PAUSE = 3.0  # collapse(): sleep this many times a block's copy after it (<= 25 % of the time)
_REAL_WORK = 0.0005  # seconds: a block that took longer was copied (not already huge)
HOLD_CHECK = 0.1  # collapse(): seconds between looks at hold() while it holds
MIN_RESIDENT = 7 / 8  # default heap: share of a 2 MiB block resident before it is collapsed
BACKGROUND_NICE = 19  # background(): the collapse thread's nice value, the lowest priority


def _glibc_at_least(major: int, minor: int) -> bool:
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    except (ValueError, OSError):
        return False
    name, _, number = version.partition(" ")
    parts = number.split(".")
    if name != "glibc" or len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        return False
    return (int(parts[0]), int(parts[1])) >= (major, minor)


def _thp_mode() -> str | None:
    """The kernel's THP mode ("always", "madvise", "never"), or None if it has none."""
    try:
        with open(THP_SETTING) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def environment(environ: Mapping[str, str], args: Sequence[str]) -> dict[str, str] | None:
    """The environment to re-execute ``rankd args`` with, or None to run as it is.

    Only the server (no subcommand: ``check``, ``repair`` and ``healthcheck`` are short-lived
    and fork nothing), only on Linux with glibc >= 2.35, THP not "never" and no RLIMIT_AS, and
    never when the caller chose PYTHONMALLOC (which is also what stops a second re-execution).
    """
    if args and not args[0].startswith("-"):
        return None
    if environ.get(OPT_IN) != "1" or "PYTHONMALLOC" in environ:
        return None
    if not sys.platform.startswith("linux") or not _glibc_at_least(2, 35):
        return None
    if resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        # Under an address-space limit the glibc heap stopped answering in 2 of ~10 runs of
        # tests/service/test_memory_limit.py (pymalloc: 0 of 10); cause not found yet, so
        # such a process keeps pymalloc.
        return None
    if _thp_mode() not in ("always", "madvise"):
        return None
    env = dict(environ)
    env["PYTHONMALLOC"] = "malloc"
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" not in tunables:
        env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def reexec(args: Sequence[str]) -> None:
    """Replace this process by the same command with huge pages on, if ``environment`` says
    so; return if not (or if exec itself failed: then run as we are)."""
    env = environment(os.environ, args)
    if env is None:
        return
    argv = [sys.executable, *sys.orig_argv[1:]]
    with contextlib.suppress(OSError):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)  # noqa: S606 (argv is our own, as started)


def active() -> bool:
    """True when this process's objects come from glibc malloc with huge pages asked for."""
    return os.environ.get("PYTHONMALLOC") == "malloc" and "glibc.malloc.hugetlb=1" in (
        os.environ.get("GLIBC_TUNABLES", "")
    )


def background() -> None:
    """Lower the calling thread to nice 19 (Linux: the nice value is per thread): a collapse
    is a speed-up for the next fork, and on a busy box it takes only CPU nobody else wants.
    Meant as the initializer of the collapse's own thread; the priority cannot be raised back
    without privilege, so it must never run on a shared pool's thread.

    The trade: the copy holds the mmap lock for writing (~0.6 ms a block). On a kernel that
    preempts kernel code (PREEMPT=full or lazy; this VM's and most servers' kernels run
    none or voluntary, which do not preempt inside the copy), a nice-19 thread preempted
    there by a busier process would keep the loop's next page fault waiting until it runs
    again. Measured here (loadtest/RESULTS.md): the stall benchmark missed its 50 ms bar as
    rarely as before (1 of 32 phases, the unexplained on-CPU kind), and the 10,000-subscriber
    fan-out delivered 9-28 % more frames per second."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def collapsible() -> bool:
    """Whether ``collapse()`` has work here: Linux with THP not "never" (the huge-page heap of
    ``active()`` or, by default, pymalloc's), and no address-space limit: there the worker
    thread's stack and malloc arena (tens of MB of address space) would come out of what the
    data may use, and a thread that cannot start is one more failure at the worst moment."""
    return (
        sys.platform.startswith("linux")
        and _thp_mode() in ("always", "madvise")
        and resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY
    )


def _anonymous_ranges() -> list[tuple[int, int]]:
    """Private anonymous read-write mappings of at least 2 MiB: pymalloc's arenas (merged by
    the kernel), glibc's ``[heap]`` and its mmapped blocks, thread stacks."""
    ranges: list[tuple[int, int]] = []
    with open("/proc/self/maps", "rb") as f:
        for line in f:
            fields = line.split()
            if fields[1] != b"rw-p" or fields[4] != b"0" or fields[5:] not in ([], [b"[heap]"]):
                continue
            lo, _, hi = fields[0].partition(b"-")
            if int(hi, 16) - int(lo, 16) >= _HUGE:
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def _huge_ranges() -> list[tuple[int, int]]:
    """Address ranges madvised MADV_HUGEPAGE ("hg" in smaps' VmFlags): glibc's heaps."""
    ranges: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    with open("/proc/self/smaps", "rb") as f:
        for line in f:
            if line[:1] in b"0123456789abcdef" and b"-" in line.split(b" ", 1)[0]:
                lo, _, hi = line.split(b" ", 1)[0].partition(b"-")
                current = (int(lo, 16), int(hi, 16))
            elif line.startswith(b"VmFlags:") and current is not None:
                if b" hg" in line:
                    ranges.append(current)
                current = None
    return ranges


def _eligible(ranges: list[tuple[int, int]], huge: bool, libc: ctypes.CDLL) -> Iterator[int]:
    """The 2 MiB-aligned blocks of ``ranges`` to collapse: all of them with ``huge``, else those
    at least MIN_RESIDENT resident (a sparse block, or one gone meanwhile, keeps its holes)."""
    pages = (ctypes.c_ubyte * (_HUGE // mmap.PAGESIZE))()
    for lo, hi in ranges:
        block = (lo + _HUGE - 1) & ~(_HUGE - 1)
        while block + _HUGE <= hi:
            if huge or (
                libc.mincore(block, _HUGE, pages) == 0
                and len(pages) - bytes(pages).count(0) >= MIN_RESIDENT * len(pages)
            ):
                yield block
            block += _HUGE


def _warm(libc: ctypes.CDLL) -> None:
    """Fault a huge page into a scratch mapping and unmap it, so that the next collapse copies
    into memory the hypervisor has already backed.

    Why: on a VM, the first touch of guest memory the host never backed costs a host fault per
    4 KiB. MADV_COLLAPSE copies into a fresh huge page while holding the mmap lock for writing,
    so on a fresh VM each block took ~20 ms (measured: p50 21.7 ms, with the event loop waiting
    at its next page fault the whole time; 0.6 ms once warm). A fault here locks only its own
    mapping (the mmap and munmap around it take the mmap lock for microseconds), and the
    allocator hands the freed huge page to this CPU's next huge allocation: the collapse. A
    block already huge leaves the page free for the next warm-up (0.1 ms). On bare metal it
    costs a memset."""
    size = 2 * _HUGE  # room for one aligned block
    addr = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)  # fmt: skip
    if addr in (None, ctypes.c_void_p(-1).value):
        return  # no room: collapse cold
    try:
        base = (addr + _HUGE - 1) & ~(_HUGE - 1)
        libc.madvise(base, _HUGE, _MADV_HUGEPAGE)
        ctypes.memset(base, 1, _HUGE)  # drops the GIL
    finally:
        libc.munmap(addr, size)


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.mincore.restype = ctypes.c_int
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]  # fmt: skip
    libc.mmap.restype = ctypes.c_void_p
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.munmap.restype = ctypes.c_int
    return libc


def collapse(
    max_seconds: float = MAX_SECONDS,
    stop: threading.Event | None = None,
    hold: Callable[[], bool] | None = None,
    gate: "threading.Lock | None" = None,
) -> tuple[int, float]:
    """MADV_COLLAPSE every 2 MiB-aligned block of the heap: the huge-page ranges with
    ``active()``, else every private anonymous block at least ``MIN_RESIDENT`` resident;
    blocks already huge cost next to nothing. Each block after a ``_warm``. Meant for a
    worker thread (each call drops the GIL). Returns (blocks collapsed, seconds).

    It waits while ``hold()`` says so (a fork is coming, or a snapshot child is alive:
    collapsing pages the child shares would copy them for nothing), then reads the heap's
    ranges again; each block is copied holding ``gate``, so whoever sets ``hold`` and then
    takes ``gate`` knows no copy is under way. Stops at ``max_seconds`` or once ``stop`` is
    set (a server shutting down does not wait for it); never raises for a block the kernel
    refuses (EAGAIN, ENOMEM, EINVAL on kernels before 6.1: then it stops at the first)."""
    if not collapsible():
        return 0, 0.0
    began = time.perf_counter()
    libc = _libc()
    huge = active()
    done = 0

    def over() -> bool:
        return time.perf_counter() - began > max_seconds or (stop is not None and stop.is_set())

    while True:
        try:
            ranges = _huge_ranges() if huge else _anonymous_ranges()
        except OSError:
            return done, time.perf_counter() - began
        for block in _eligible(ranges, huge, libc):
            with gate if gate is not None else contextlib.nullcontext():
                held = hold is not None and hold()
                if not held:
                    _warm(libc)
                    t = time.perf_counter()
                    result = libc.madvise(block, _HUGE, _MADV_COLLAPSE)
                    took = time.perf_counter() - t
            if held:
                while hold is not None and hold():
                    if over():
                        return done, time.perf_counter() - began
                    time.sleep(HOLD_CHECK)
                break  # the heap changed meanwhile: read its ranges again
            if result == 0:
                done += 1
            elif ctypes.get_errno() == 22 and not done:
                # EINVAL before any success: this kernel has no MADV_COLLAPSE (later, a block
                # the kernel will not collapse, as one madvised VM_NOHUGEPAGE)
                return done, time.perf_counter() - began
            if took > _REAL_WORK:
                # The kernel copies the block holding the mmap lock for writing: a page
                # fault of the event loop waits for it. Back to back, the loop would wait
                # at nearly every fault (measured: 30-145 ms gaps while 800 MB of fresh
                # heap collapsed); a pause of PAUSE x the copy leaves it room between.
                time.sleep(took * PAUSE)
            if over():
                return done, time.perf_counter() - began
        else:
            return done, time.perf_counter() - began
