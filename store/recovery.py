"""Start-up recovery: the snapshot, then the journal segments after it, in order.

History on disk is one sequence: ``snapshot.rkd`` (the state at the start of segment ``base``),
then segments base, base+1, ... each continuing the previous one. Recovery replays it:

1. Remove snapshot temp files a crash left behind (never complete, never referenced).
2. Load the snapshot, if any. Without one, history starts at segment 1 from empty.
3. Replay segments >= base in number order; they must be contiguous. Segments below base are
   obsolete (a crash between the snapshot's rename and their deletion) and are deleted.
4. A torn tail (store/frames.py) of the last segment is truncated to the last whole record,
   durably, and logged with the bytes cut. A torn segment that is not the last is allowed only
   when the next one carries FLAG_AFTER_GAP (store/journal.py): the writer stopped there after
   a failure.
5. A FLAG_AFTER_GAP segment other than the base is an orphan: it continued in-memory state of
   a snapshot that never completed, and holds no acknowledged write. It and all later segments
   are moved aside (renamed ``*.bad-<time>``, never deleted) with a warning.
6. Sessions still expired after the replay are dropped and counted (``expired_at_load``).

Bad data -- a checksum mismatch, mid-file damage, a malformed record, a missing segment --
raises CorruptData naming the file and byte offset (``on_bad_data="refuse"``, the default).
With ``on_bad_data="move-aside"`` recovery keeps the longest valid prefix of history and
renames the rest aside:

    bad snapshot        -> the snapshot and every segment are moved aside; start empty (the
                           segments are deltas on that snapshot: replaying them onto nothing
                           would serve silently partial boards)
    bad record in seg k -> the records before it are kept (a state that really existed);
                           segment k and every later one are moved aside

and then takes a fresh snapshot before serving (``report.needs_snapshot``), so new records
never follow a hole. A FutureVersion file always refuses to start: it is not bad data, it
belongs to a newer rankd, and moving it aside would lose it for that version.
"""

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from store import datadir, journal, snapshot
from store.frames import CorruptData
from store.keyspace import Keyspace
from store.sessions import SessionStore

log = logging.getLogger("rankd.recovery")

OnBadData = Literal["refuse", "move-aside"]
PROGRESS_EVERY = 2.0  # seconds between progress lines of a big load


@dataclass(slots=True)
class RecoveryReport:
    snapshot_entries: int = 0
    snapshot_sessions: int = 0
    snapshot_base: int = 1
    snapshot_created_at: float | None = None
    journal_segments: int = 0
    journal_records: int = 0
    truncated_bytes: int = 0
    expired_at_load: int = 0
    moved_aside: list[str] = field(default_factory=list)
    removed_temp_files: int = 0
    next_segment: int = 1  # the number the new process's first segment must take
    needs_snapshot: bool = False  # move-aside dropped history: snapshot before serving
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Progress:
    """Logs 'loaded N entries, M sessions (rate/s)' at most every PROGRESS_EVERY seconds."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._began = clock()
        self._next = self._began + PROGRESS_EVERY

    def snapshot(self, entries: int, sessions: int) -> None:
        t = self._clock()
        if t >= self._next:
            self._next = t + PROGRESS_EVERY
            rate = (entries + sessions) / max(t - self._began, 1e-9)
            log.info("loading snapshot: %d entries, %d sessions (%.0f/s)", entries, sessions, rate)

    def journal(self, name: str) -> Callable[[int], None]:
        def report(records: int) -> None:
            t = self._clock()
            if t >= self._next:
                self._next = t + PROGRESS_EVERY
                log.info("replaying %s: %d records", name, records)

        return report


def recover(
    directory: Path,
    keyspace: Keyspace,
    sessions: SessionStore,
    *,
    on_bad_data: OnBadData = "refuse",
    now: Callable[[], float] = time.time,
) -> RecoveryReport:
    """Load ``directory`` into empty stores (see the module docstring). Synchronous."""
    began = time.perf_counter()
    report = RecoveryReport()
    progress = _Progress()
    report.removed_temp_files = len(datadir.remove_temp_files(directory))
    all_segments = datadir.segments(directory)
    highest = all_segments[-1][0] if all_segments else 0

    snap = datadir.snapshot_path(directory)
    base = 1
    if snap.exists():
        try:
            stats = snapshot.load(snap, keyspace, sessions, progress.snapshot)
        except CorruptData as exc:
            if on_bad_data != "move-aside":
                raise
            log.error("%s; moving it and every journal segment aside, starting empty", exc)
            _reset(keyspace, sessions)
            report.moved_aside.append(str(datadir.move_aside(snap, now())))
            for _, path in all_segments:
                report.moved_aside.append(str(datadir.move_aside(path, now())))
            report.needs_snapshot = True
            all_segments = []
        else:
            base = stats.base_segment
            report.snapshot_created_at = stats.created_at
            report.snapshot_entries = stats.entries
            report.snapshot_sessions = stats.sessions
            rate = (stats.entries + stats.sessions) / max(time.perf_counter() - began, 1e-9)
            log.info(
                "loaded %s: %d boards, %d entries, %d sessions (%.0f/s)",
                snap,
                stats.boards,
                stats.entries,
                stats.sessions,
                rate,
            )
    report.snapshot_base = base

    obsolete = [path for n, path in all_segments if n < base]
    live = [(n, path) for n, path in all_segments if n >= base]
    _replay(live, base, keyspace, sessions, on_bad_data, now, report, progress)

    sessions.finish_load()
    report.expired_at_load = sessions.counters.get("expired_at_load", 0)
    for path in obsolete:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if obsolete:
        datadir.fsync_dir(directory)
    report.next_segment = max(highest + 1, base)
    report.seconds = time.perf_counter() - began
    return report


def _replay(
    live: list[tuple[int, Path]],
    base: int,
    keyspace: Keyspace,
    sessions: SessionStore,
    on_bad_data: OnBadData,
    now: Callable[[], float],
    report: RecoveryReport,
    progress: _Progress,
) -> None:
    expected = base
    previous: journal.SegmentReplay | None = None
    for i, (number, path) in enumerate(live):
        try:
            if number != expected:
                missing = datadir.segment_path(path.parent, expected)
                raise CorruptData(str(missing), 0, "journal segment is missing")
            flags = journal.read_flags(path, number)
            if flags is not None and flags & journal.FLAG_AFTER_GAP and number != base:
                log.warning(
                    "%s continues a snapshot that never completed (no acknowledged writes); "
                    "moving it and later segments aside",
                    path,
                )
                for _, p in live[i:]:
                    report.moved_aside.append(str(datadir.move_aside(p, now())))
                return
            # A tear at 0 (the header itself) holds no record: nothing was lost before this.
            if previous is not None and previous.torn and previous.end > 0:
                raise CorruptData(
                    str(live[i - 1][1]), previous.end, "torn record in the middle of the journal"
                )
            done = journal.replay(path, number, keyspace, sessions, progress.journal(path.name))
        except CorruptData as exc:
            if on_bad_data != "move-aside":
                raise
            log.error("%s; keeping the records before it, moving the rest aside", exc)
            for _, p in live[i:]:
                if p.exists():
                    report.moved_aside.append(str(datadir.move_aside(p, now())))
            report.needs_snapshot = True
            return
        report.journal_segments += 1
        report.journal_records += done.records
        if done.torn:
            # Truncate now, even if a later segment makes this a mid-journal tear (then the
            # next loop turn refuses or moves aside): a cut tail never comes back either way.
            log.warning(
                "%s: torn tail of %d bytes after byte offset %d (a crash or failed write); "
                "truncating to the last whole record",
                path,
                done.torn_bytes,
                done.end,
            )
            journal.truncate(path, done.end)
            report.truncated_bytes += done.torn_bytes
        previous = done
        expected = number + 1


def _reset(keyspace: Keyspace, sessions: SessionStore) -> None:
    """Forget a partly loaded snapshot."""
    keyspace.boards.clear()
    for s in sessions.sessions():
        sessions.apply_delete(s.id)
    sessions.finish_load()
