"""The data directory: file names, the process lock and the durable file operations.

    data/                               0700; every file in it 0600 (session ids are credentials)
      LOCK                              flock()ed by the one process that owns the directory
      snapshot.rkd                      the newest snapshot (snapshot.py), base segment B1
      snapshot.prev.rkd                 the previous generation, base segment B0 <= B1
      snapshot.rkd.tmp-<pid>            a snapshot being written; a leftover is removed at start
      snapshot.prev.rkd.tmp             a link being put in place; a leftover is removed at start
      journal-00000000000000000007.rkj  journal segments (store/disk/journal.py), replayed in number
                                        order from a snapshot's base segment
      <name>.bad-<unix time>            a file moved aside (recovery, ``rankd repair``)

Generations. Two snapshots are kept, and every journal segment from the *previous* one's base:

    snapshot.prev.rkd (B0) + journal B0, B0+1, ..., B1-1, B1, ..., last   = the state
    snapshot.rkd      (B1) +                         journal B1, ..., last  = the same state

so one damaged snapshot never costs data: recovery falls back to the other and replays the
longer journal (store/disk/recovery.py). A new snapshot is written under a temporary name, fsynced,
**loaded back and verified** (store/disk/snapshot.py ``verify``), and only then installed by
``install_snapshot``: the current newest becomes the previous generation (a hard link renamed
over ``snapshot.prev.rkd``), the new file is renamed over ``snapshot.rkd``, the directory is
fsynced. Segments below the new previous generation's base are then obsolete and deleted by the
serving process. At every instant of that sequence ``snapshot.rkd`` exists and every snapshot
on disk has all the segments from its base, so a crash anywhere leaves a loadable directory.
The price: journal segments of up to two snapshot intervals and two snapshots on disk.

Durability rules (the same as Redis's rdb.c and every database that survives power loss):
a file's contents are durable after fsync(file); its *name* (creation, rename, unlink) is
durable only after fsync(directory). A new file is written under a temporary name, fsynced,
renamed over the old one with os.replace (atomic on POSIX), then the directory is fsynced.

Every operation here goes through ``os.open/os.write/os.fsync/os.replace`` so that a test that
makes one of them fail (ENOSPC, EIO) reaches every write path, including a forked child's.
"""

import contextlib
import errno
import fcntl
import os
import re
import time
from pathlib import Path

SNAPSHOT = "snapshot.rkd"
PREVIOUS = "snapshot.prev.rkd"
LOCK = "LOCK"
DIR_MODE = 0o700
FILE_MODE = 0o600
_TMP_PREFIX = SNAPSHOT + ".tmp-"
_PREV_TMP = PREVIOUS + ".tmp"
_SEGMENT = re.compile(r"journal-(\d{20})\.rkj")


class DataDirLocked(Exception):
    """Another live process owns the data directory."""


def snapshot_path(directory: Path) -> Path:
    return directory / SNAPSHOT


def previous_snapshot_path(directory: Path) -> Path:
    return directory / PREVIOUS


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
    the descriptor; it closes its copy at once (store/disk/bgsave.py) so a lingering child cannot
    keep a restarted server out.
    """
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = lock(directory)
    try:
        restrict_modes(directory)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock(directory: Path) -> int:
    """Take the directory's lock (creating LOCK, 0600); DataDirLocked if a live process has it."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirLocked(
            f"data directory {str(directory)!r} is in use by another rankd process"
        ) from None
    return fd


def restrict_modes(directory: Path) -> None:
    """Make the directory 0700 and every file in it 0600, fixing older data directories.

    Snapshots and journal segments hold session ids, which are credentials; rankd before this
    created them world-readable (segments even executable) under the usual umask.
    """
    os.chmod(directory, DIR_MODE)
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o7777 != FILE_MODE:
            # Someone else's file (copied in by another user): not ours to refuse a start over.
            with contextlib.suppress(PermissionError):
                os.chmod(entry.path, FILE_MODE)


def remove_temp_files(directory: Path) -> list[str]:
    """Delete snapshot temp files a crash left behind; returns their names."""
    removed = []
    for entry in os.scandir(directory):
        if entry.name.startswith(_TMP_PREFIX) or entry.name == _PREV_TMP:
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


def install_snapshot(directory: Path, new: Path) -> None:
    """Make the complete, fsynced, verified snapshot ``new`` the newest generation and the
    current newest the previous one (see the module docstring). Raises OSError.

    A hard link, not a rename, demotes the newest: ``snapshot.rkd`` never stops existing, so a
    crash between the two renames leaves both names on the same (good) file, never neither.
    """
    newest = snapshot_path(directory)
    if newest.exists():
        link = directory / _PREV_TMP
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.link(newest, link)
        try:
            os.replace(link, previous_snapshot_path(directory))
        except BaseException:
            with contextlib.suppress(OSError):  # the next start removes it; raise the real error
                os.unlink(link)
            raise
    os.replace(new, newest)
    fsync_dir(directory)
