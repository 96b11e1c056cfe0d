"""Offline verification and repair of a data directory (``rankd check``, ``rankd repair``).

    check   every file on its own -- each snapshot generation is loaded back and verified
            (store/disk/snapshot.py ``verify``), each journal segment's header, frames and record
            encodings are read -- then a dry run of start-up recovery (store/disk/recovery.py,
            ``dry_run=True``) says what ``rankd`` would load, fall back to, truncate or move.
            Nothing is written (but LOCK, created if absent). ``ok`` is False when any file
            is damaged or start-up would refuse or fall back; a torn tail of the last segment
            and orphan segments are reported but are what a crash leaves, and start-up
            handles them by itself.
    repair  recovery with ``on_bad_data="move-aside"`` (the longest valid history is kept and
            the rest renamed ``*.bad-<time>``), then the files recovery did not need but that
            fail verification (a damaged previous generation, a damaged segment the newest
            snapshot covers) are moved aside too, and the state is written as both snapshot
            generations. Like ``redis-check-aof --fix``, minus the deleting: repair renames and
            truncates torn tails, it never deletes a file, so ``check`` passes after it and
            ``rankd`` starts.

Both take the directory's LOCK first and refuse (DataDirLocked) while a live rankd holds it: a
running server appends to the journal and rotates snapshots under a reader, so a check of a
live directory would report damage that is not there. Check a copy instead, or stop it.

Out of memory (MemoryError) and I/O errors (OSError) are raised as themselves: neither says
anything about the files, and repair moves nothing when they happen.
"""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from store.clock import ManualClock
from store.disk import datadir, frames, journal, recovery, snapshot
from store.disk.frames import DataError
from store.keyspace import Keyspace
from store.sessions import SessionStore


@dataclass(slots=True)
class FileCheck:
    path: Path
    error: DataError | None = None
    detail: str = ""  # counts, or what is notable (a torn tail)


@dataclass(slots=True)
class CheckReport:
    files: list[FileCheck] = field(default_factory=list)
    startup: recovery.RecoveryReport | None = None  # the dry run of start-up
    refusal: DataError | None = None  # what start-up would refuse with
    boards: int = 0
    entries: int = 0
    sessions: int = 0

    @property
    def first_bad(self) -> DataError | None:
        for f in self.files:
            if f.error is not None:
                return f.error
        return self.refusal

    @property
    def ok(self) -> bool:
        fell_back = self.startup is not None and self.startup.fell_back
        return self.first_bad is None and not fell_back


def check(directory: Path) -> CheckReport:
    """Verify ``directory`` without changing it (see the module docstring)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"no data directory at {str(directory)!r}")
    fd = datadir.lock(directory)
    try:
        return _check(directory)
    finally:
        os.close(fd)


def _check(directory: Path) -> CheckReport:
    report = CheckReport()
    for path in (datadir.snapshot_path(directory), datadir.previous_snapshot_path(directory)):
        if path.exists():
            report.files.append(_check_snapshot(path))
    for number, path in datadir.segments(directory):
        report.files.append(_check_segment(path, number))
    clock = ManualClock(time.time())
    ks, ss = Keyspace(), SessionStore(clock)
    try:
        report.startup = recovery.recover(directory, ks, ss, now=clock.now, dry_run=True)
    except DataError as exc:
        report.refusal = exc
    else:
        report.boards = len(ks)
        report.entries = sum(len(b) for b in ks)
        report.sessions = len(ss)
    return report


def _check_snapshot(path: Path) -> FileCheck:
    try:
        s = snapshot.verify(path)
    except DataError as exc:
        return FileCheck(path, exc)
    return FileCheck(
        path,
        detail=f"base segment {s.base_segment}, {s.boards} boards, {s.entries} entries, "
        f"{s.sessions} sessions, {s.bytes} bytes",
    )


def _check_segment(path: Path, number: int) -> FileCheck:
    """Header, frames and that every record decodes (records need state to be applied)."""
    name = str(path)
    try:
        flags = journal.read_flags(path, number)
        if flags is None:
            return FileCheck(path, detail="header never written (0 records)")
        records = 0
        with open(path, "rb", buffering=1 << 20) as f:
            f.seek(journal.HEADER_SIZE)
            reader = frames.Reader(f, name, journal.HEADER_SIZE)
            for offset, _, payload in reader.frames():
                try:
                    orjson.loads(payload)
                except orjson.JSONDecodeError as exc:
                    raise frames.malformed(name, offset, exc, payload) from None
                records += 1
        detail = f"{records} records"
        if flags & journal.FLAG_AFTER_GAP:
            detail += ", written after a journal failure (gap mark)"
        if reader.torn:
            size = path.stat().st_size
            detail += f", torn tail of {size - reader.end} bytes after byte offset {reader.end}"
        return FileCheck(path, detail=detail)
    except DataError as exc:
        return FileCheck(path, exc)


@dataclass(slots=True)
class RepairReport:
    moved_aside: list[str] = field(default_factory=list)
    truncated_bytes: int = 0
    fell_back: bool = False
    boards: int = 0
    entries: int = 0
    sessions: int = 0
    base: int = 1


def repair(directory: Path, now: float | None = None) -> RepairReport:
    """Keep the longest valid history, move the rest aside, pin it as both generations."""
    if not directory.is_dir():
        raise FileNotFoundError(f"no data directory at {str(directory)!r}")
    fd = datadir.lock(directory)
    try:
        datadir.restrict_modes(directory)
        at = time.time() if now is None else now
        clock = ManualClock(at)
        ks, ss = Keyspace(), SessionStore(clock)
        rec = recovery.recover(directory, ks, ss, on_bad_data="move-aside", now=clock.now)
        out = RepairReport(list(rec.moved_aside), rec.truncated_bytes, rec.fell_back)
        # Files recovery did not read but that are damaged: no fallback may use them later.
        loaded = rec.snapshot_file
        for f in _check(directory).files:
            if f.error is not None and str(f.path) != loaded and f.path.exists():
                out.moved_aside.append(str(datadir.move_aside(f.path, at)))
        # Both generations, each written, fsynced and verified; obsolete segments are left
        # for the server's next snapshot to retire (repair deletes nothing).
        for _ in range(2):
            snapshot.save(directory, ks, ss, base_segment=rec.next_segment, now=at)
        out.base = rec.next_segment
        out.boards, out.entries, out.sessions = len(ks), sum(len(b) for b in ks), len(ss)
        return out
    finally:
        os.close(fd)
