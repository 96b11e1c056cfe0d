"""The data directory: file names, the process lock and the durable file operations.

    data/
      LOCK                              flock()ed by the one process that owns the directory
      snapshot.rkd                      the latest complete snapshot (store/snapshot.py)
      snapshot.rkd.tmp-<pid>            a snapshot being written; a leftover is removed at start
      journal-00000000000000000007.rkj  journal segments (store/journal.py), replayed in number
                                        order from the snapshot's base segment
      <name>.bad-<unix time>            a file moved aside by on_bad_data="move-aside"

Durability rules (the same as Redis's rdb.c and every database that survives power loss):
a file's contents are durable after fsync(file); its *name* (creation, rename, unlink) is
durable only after fsync(directory). A new file is written under a temporary name, fsynced,
renamed over the old one with os.replace (atomic on POSIX), then the directory is fsynced.

Every operation here goes through ``os.open/os.write/os.fsync/os.replace`` so that a test that
makes one of them fail (ENOSPC, EIO) reaches every write path, including a forked child's.
"""

import errno
import fcntl
import os
import re
import time
from pathlib import Path

SNAPSHOT = "snapshot.rkd"
LOCK = "LOCK"
_TMP_PREFIX = SNAPSHOT + ".tmp-"
_SEGMENT = re.compile(r"journal-(\d{20})\.rkj")


class DataDirLocked(Exception):
    """Another live process owns the data directory."""


def snapshot_path(directory: Path) -> Path:
    return directory / SNAPSHOT


def temp_snapshot_path(directory: Path) -> Path:
    return directory / f"{_TMP_PREFIX}{os.getpid()}"


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"journal-{number:020d}.rkj"


def segments(directory: Path) -> list[tuple[int, Path]]:
    """Journal segments as (number, path), in number order."""
    found = []
    for entry in os.scandir(directory):
        m = _SEGMENT.fullmatch(entry.name)
        if m:
            found.append((int(m.group(1)), Path(entry.path)))
    found.sort()
    return found


def open_dir(directory: Path) -> int:
    """Create ``directory`` if needed and take its lock; returns the lock's fd (keep it open).

    flock() and not a pid file: the kernel drops the lock when the process dies (even by
    kill -9), so a crash never leaves a stale lock behind. A forked snapshot child inherits
    the descriptor; it closes its copy at once (store/bgsave.py) so a lingering child cannot
    keep a restarted server out.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirLocked(
            f"data directory {str(directory)!r} is in use by another rankd process"
        ) from None
    return fd


def remove_temp_files(directory: Path) -> list[str]:
    """Delete snapshot temp files a crash left behind; returns their names."""
    removed = []
    for entry in os.scandir(directory):
        if entry.name.startswith(_TMP_PREFIX):
            os.unlink(entry.path)
            removed.append(entry.name)
    if removed:
        fsync_dir(directory)
    return removed


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """os.write until every byte is written (a write may be partial, e.g. near ENOSPC)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # POSIX says a regular file write returns >0 or fails; be sure anyway
            raise OSError(errno.EIO, "write returned 0")
        view = view[n:]


def move_aside(path: Path, now: float | None = None) -> Path:
    """Rename a file rankd will not load to ``<name>.bad-<unix time>``; never deletes it."""
    stamp = int(time.time() if now is None else now)
    target = path.with_name(f"{path.name}.bad-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.bad-{stamp}-{n}")
        n += 1
    os.replace(path, target)
    fsync_dir(path.parent)
    return target
