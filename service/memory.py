"""The memory bound: Redis's ``maxmemory`` with the ``noeviction`` policy.

    used   resident set size, sampled every SAMPLE_INTERVAL by one task (/proc/self/statm:
           one small read, ~10 us) -- never per request, so the hot path pays one attribute
           load (``guard.over``)
    limit  --max-memory / RANKD_MAX_MEMORY (bytes; k, m, g suffixes; 0 = no limit), or by
           default DEFAULT_SHARE of the smaller of the container's memory limit (cgroup v2
           memory.max, v1 memory.limit_in_bytes) and the machine's physical memory

While ``used >= limit``, writes that would grow the data (score writes, board creation,
session creation and data changes) raise ``InsufficientStorage`` (507); reads, deletes,
touches and rotations go on, so a client can always free memory. Nothing is evicted.

Why half by default: a snapshot forks, and every page the parent writes while the child
saves is copied; under a write-heavy load the fork can approach the parent's size. The other
half also covers the allocator's fragmentation and the journal's buffers.

A real allocation failure (MemoryError) is the backstop: ``on_memory_error`` frees a reserve
allocated at start-up, so the error answer, the log line and the journal can still allocate,
and keeps growth refused until a sample shows room again and the reserve could be re-taken.
A MemoryError can cut a store mutation half-way, so the write path hands over the ``_check``
of the structure it was changing; the sampler runs it once the reserve is back. If it fails,
memory is not to be trusted: ``on_corrupt`` (the runtime: not ready, every /v1 route 503) asks
for a restart, which rebuilds from the journal -- it only holds completed mutations.
The sample interval bounds the overshoot: writes admitted in one interval (~0.1 s of the
fastest load, a few MB) can pass the limit before the next sample sees it.
"""

import asyncio
import logging
import os
import re
import resource
from collections.abc import Callable
from pathlib import Path

from store.errors import InsufficientStorage

log = logging.getLogger("rankd.memory")

SAMPLE_INTERVAL = 0.1
DEFAULT_SHARE = 0.5
RESERVE_BYTES = 8 * 1024 * 1024
# cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages); anything above this is
# no limit in practice.
_NO_LIMIT = 1 << 60

_SIZE = re.compile(r"(\d+)\s*([kmgt]?)i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

_CGROUP_FILES = (
    Path("/sys/fs/cgroup/memory.max"),  # v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # v1
)


def parse_size(raw: str) -> int:
    """``"512m"`` -> 536870912. Binary units (k = 1024); ValueError for anything else."""
    match = _SIZE.fullmatch(raw.strip())
    if match is None:
        raise ValueError(f"expected bytes with an optional k, m, g or t suffix, but got {raw!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def cgroup_limit(files: tuple[Path, ...] = _CGROUP_FILES) -> int | None:
    """The container's memory limit in bytes, or None when there is none (or no cgroup)."""
    for path in files:
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        try:
            value = int(raw)
        except ValueError:
            continue
        return value if 0 < value < _NO_LIMIT else None
    return None


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_limit() -> int:
    """DEFAULT_SHARE of min(cgroup limit, physical memory); 0 (no limit) if neither is known."""
    known = [v for v in (cgroup_limit(), physical_memory()) if v]
    return int(min(known) * DEFAULT_SHARE) if known else 0


def _nothing() -> None:
    pass


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's RSS now (Linux); the peak RSS where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemoryGuard:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit
        self.used = resident_bytes()
        self.over = False
        self.refused = 0  # growing writes answered 507
        self.memory_errors = 0  # MemoryErrors caught in requests
        self._reserve: bytearray | None = None
        self._starved = False  # a MemoryError happened and the reserve is not back yet
        self._verify: list[Callable[[], None]] = []  # _check()s of structures a MemoryError cut
        self.corrupt = False
        self.on_corrupt: Callable[[], None] = _nothing

    def start_reserve(self) -> None:
        try:
            self._reserve = bytearray(RESERVE_BYTES)
        except MemoryError:
            self._reserve = None

    def sample(self) -> None:
        self.used = used = resident_bytes()
        if self._starved:
            try:
                self._reserve = bytearray(RESERVE_BYTES)
                self._starved = False
            except MemoryError:
                pass
        if self._verify and not self._starved:
            self._run_checks()
        self.over = self._starved or self.corrupt or (self.limit > 0 and used >= self.limit)

    def _run_checks(self) -> None:
        checks, self._verify = self._verify, []
        for check in dict.fromkeys(checks):  # the same board cut twice is checked once
            try:
                check()
            except MemoryError:
                self._verify.append(check)  # not yet: try again at the next sample
            except Exception:
                log.critical(
                    "in-memory data failed verification after an allocation failure; "
                    "refusing requests until restart (the journal holds only complete writes)",
                    exc_info=True,
                )
                self.corrupt = True
                self.on_corrupt()
                return
        if not self._verify:
            log.warning("in-memory data verified after an allocation failure: consistent")

    def check(self) -> None:
        """Raise InsufficientStorage while over the limit (call before growing the data)."""
        if self.over:
            self.refused += 1
            if self.corrupt:
                raise InsufficientStorage("in-memory data needs a restart; see the server log")
            if self._starved:
                raise InsufficientStorage(
                    "out of memory: an allocation failed; writes that add data are refused "
                    "until memory is freed (reads, deletes and touches still work)"
                )
            raise InsufficientStorage(
                f"memory limit reached ({self.used >> 20} MiB used of {self.limit >> 20} MiB): "
                "writes that add data are refused; delete data or raise --max-memory"
            )

    def on_memory_error(self) -> None:
        """An allocation failed (the request's error handler calls this once): free the
        reserve so the answer can be built, and refuse growth until memory is back."""
        self._reserve = None
        self._starved = True
        self.over = True
        self.memory_errors += 1

    def verify_later(self, check: Callable[[], None]) -> None:
        """A MemoryError cut a mutation of the structure ``check`` verifies: run it once the
        reserve is back (a failure means a restart, see the module docstring)."""
        self._reserve = None  # the error answer must be buildable right now
        self._starved = True
        self.over = True
        self._verify.append(check)

    async def run(self) -> None:
        """Sample forever (the app's lifespan cancels it)."""
        while True:
            try:
                self.sample()
            except MemoryError:
                self.on_memory_error()
            await asyncio.sleep(SAMPLE_INTERVAL)
