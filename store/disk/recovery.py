"""Start-up recovery: a snapshot generation, then the journal segments after it, in order.

History on disk (store/disk/datadir.py draws the file model) is two snapshot generations and one
journal: ``snapshot.rkd`` (the state at the start of segment B1), ``snapshot.prev.rkd`` (the
state at the start of segment B0 <= B1), then segments B0, B0+1, ... each continuing the
previous one. Recovery replays it:

1. Remove snapshot temp files a crash left behind (never complete, never referenced).
2. Load the newest snapshot and replay segments >= its base, in number order; they must be
   contiguous. Without any snapshot, history starts at segment 1 from empty.
3. **Fallback.** If the newest snapshot is damaged (or missing while the previous exists),
   load the previous one and replay segments >= B0 to the end. When that replay is complete
   and clean it reaches exactly the state the newest snapshot plus its journal would have:
   nothing is lost, so it happens in every ``on_bad_data`` mode -- the damaged newest is moved
   aside (renamed, never deleted), logged as an error, and a snapshot is taken before serving.
   A damaged *previous* snapshot, or a damaged segment below B1, costs nothing while the newest
   loads: they are not read (``rankd check`` reports them; the next snapshot retires them).
4. A torn tail (store/disk/frames.py) of the last segment is truncated to the last whole record,
   durably, and logged with the bytes cut -- only once the history to keep is decided, so a
   refusal never changes a file. A torn segment that is not the last is allowed only when the
   next one carries FLAG_AFTER_GAP (journal.py): the writer stopped there after a failure.
5. A FLAG_AFTER_GAP segment other than the base is an orphan: it continued in-memory state of
   a snapshot that never completed, and holds no acknowledged write. It and all later segments
   are moved aside with a warning, and a snapshot is taken before serving
   (``report.needs_snapshot``): new segments must never follow the hole in the numbering (the
   bug where disk full, then two crashes, left a directory that would not start). A fallback
   that meets an orphan cannot tell it from the newest snapshot's own base, so it is lossy.
6. Sessions still expired after the replay are dropped and counted (``expired_at_load``).
7. Segments below the oldest snapshot generation's base are obsolete and deleted.

Bad data that no fallback repairs -- a damaged segment at or after the newest base, both
snapshots damaged, a missing segment -- raises CorruptData naming the file and byte offset
(``on_bad_data="refuse"``, the default) and changes no file. With ``on_bad_data="move-aside"``
recovery keeps the longest valid history and renames the rest aside:

    no snapshot loads   -> every snapshot and segment is moved aside; start empty (the
                           segments are deltas on a snapshot: replaying them onto nothing
                           would serve silently partial boards)
    bad record in seg k -> the records before it are kept (a state that really existed);
                           segment k and every later one are moved aside

and then takes a fresh snapshot before serving. Whenever history is left non-contiguous the
snapshot is required: ``needs_snapshot`` is the caller's contract (``pin`` does it).

Never corruption: MemoryError (out of memory, including orjson's) and OSError (a failing disk)
propagate as themselves, before anything is moved or truncated. A FutureVersion file always
refuses to start: it belongs to a newer rankd, and moving it aside would lose it for that one.

``dry_run=True`` (``rankd check``) decides the same way but changes no file: what would be
moved aside or truncated is reported, not done.
"""

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from store.disk import datadir, journal, snapshot
from store.disk.frames import CorruptData
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
    snapshot_file: str | None = None  # the generation loaded
    fell_back: bool = False  # the newest snapshot was damaged; the previous one was loaded
    journal_segments: int = 0
    journal_records: int = 0
    # Board-write records replayed, by writer kind (store/writers.py; "unknown" before v4).
    journal_writers: dict[str, int] = field(default_factory=dict)
    truncated_bytes: int = 0
    expired_at_load: int = 0
    moved_aside: list[str] = field(default_factory=list)  # in a dry run: what would be
    removed_temp_files: int = 0
    next_segment: int = 1  # the number the new process's first segment must take
    needs_snapshot: bool = False  # history was moved aside or fell back: snapshot before serving
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


class RecoveryProgress:
    """How far recovery is, readable from another thread while it runs (/metrics scrapes it).

    Bytes, because they are known before anything is parsed: ``bytes_total`` is the size of
    the snapshot to load plus the journal segments after its base, planned up front and
    raised if a damaged snapshot makes recovery fall back to the previous generation (the
    bytes read of the damaged one stay counted as done: that work was spent). ``bytes_done``
    is the files finished plus the offset reached in the current one, moved every snapshot
    record run and every 65,536 journal records. Each field is one int or str written by the
    recovering thread and read by the event loop's: a torn read cannot happen under the GIL,
    and a stale one is a scrape a moment old.

    A log line with the percent done goes out at most every PROGRESS_EVERY seconds. It names
    files and counts, nothing from inside a record (no member, no session id).
    """

    __slots__ = (
        "_began",
        "_clock",
        "_files_done",
        "_next",
        "_planned",
        "bytes_done",
        "bytes_total",
        "phase",
        "records",
        "running",
    )

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._began = clock()
        self._next = self._began + PROGRESS_EVERY
        self._files_done = 0
        self._planned: set[Path] = set()
        self.running = False
        self.phase = "idle"  # idle | snapshot | journal | done
        self.bytes_total = 0
        self.bytes_done = 0
        self.records = 0  # journal records replayed so far

    def plan(self, files: list[Path]) -> None:
        """Count ``files`` as still to read (their sizes now); a file planned before is not
        counted twice."""
        if not self.running:
            self.running = True
            self._began = self._clock()
            self._next = self._began + PROGRESS_EVERY
        fresh = [path for path in files if path not in self._planned]
        self._planned.update(fresh)
        self.bytes_total += sum(map(_file_size, fresh))

    def file_done(self, path: Path) -> None:
        self._files_done += _file_size(path)
        self.bytes_done = self._files_done

    def finish(self) -> None:
        self.phase = "done"
        self.running = False
        self.bytes_done = self.bytes_total = max(self.bytes_total, self._files_done)

    def percent(self) -> float:
        return 100.0 * min(self.bytes_done, self.bytes_total) / max(self.bytes_total, 1)

    def _at(self, offset: int) -> float | None:
        """Record ``offset`` in the current file; the seconds since start if a line is due."""
        self.bytes_done = self._files_done + offset
        t = self._clock()
        if t < self._next:
            return None
        self._next = t + PROGRESS_EVERY
        return max(t - self._began, 1e-9)

    def snapshot(self, entries: int, sessions: int, offset: int) -> None:
        self.phase = "snapshot"
        took = self._at(offset)
        if took is not None:
            log.info(
                "loading snapshot: %d entries, %d sessions (%.0f/s); recovery %.0f%% of %s done",
                entries,
                sessions,
                (entries + sessions) / took,
                self.percent(),
                _size(self.bytes_total),
            )

    def journal(self, name: str) -> Callable[[int, int], None]:
        self.phase = "journal"
        before = self.records

        def report(records: int, offset: int) -> None:
            self.records = before + records
            took = self._at(offset)
            if took is not None:
                log.info(
                    "replaying %s: %d records; recovery %.0f%% of %s done",
                    name,
                    records,
                    self.percent(),
                    _size(self.bytes_total),
                )

        return report


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass(slots=True)
class _Replayed:
    """What replaying segments found; nothing is changed on disk while replaying."""

    segments: int = 0
    records: int = 0
    writers: dict[str, int] = field(default_factory=dict)  # board writes by writer kind
    torn: list[tuple[Path, int, int]] = field(default_factory=list)  # (path, end, bytes cut)
    bad: CorruptData | None = None
    stop: int | None = None  # index of the first segment not kept (bad or orphan)
    orphan: bool = False


def recover(
    directory: Path,
    keyspace: Keyspace,
    sessions: SessionStore,
    *,
    on_bad_data: OnBadData = "refuse",
    now: Callable[[], float] = time.time,
    dry_run: bool = False,
    progress: RecoveryProgress | None = None,
) -> RecoveryReport:
    """Load ``directory`` into empty stores (see the module docstring). Synchronous.

    ``progress``, if given, is kept up to date while this runs (another thread may read it).
    """
    began = time.perf_counter()
    report = RecoveryReport()
    if progress is None:
        progress = RecoveryProgress()

    def move_aside(path: Path) -> None:
        report.moved_aside.append(str(path if dry_run else datadir.move_aside(path, now())))

    if not dry_run:
        report.removed_temp_files = len(datadir.remove_temp_files(directory))
    all_segments = datadir.segments(directory)
    highest = all_segments[-1][0] if all_segments else 0

    damaged: list[tuple[Path, CorruptData]] = []
    base: int | None = None
    live: list[tuple[int, Path]] = []
    replayed = _Replayed()
    newest = datadir.snapshot_path(directory)
    previous = datadir.previous_snapshot_path(directory)
    if not newest.exists() and not previous.exists():
        progress.plan([path for _, path in all_segments])
    for snap in (newest, previous):
        if not snap.exists():
            continue
        # What this generation will read: itself and the segments from its base (all of them
        # if the base cannot be read; the load then finds the damage).
        planned_base = snapshot.read_base(snap) or 0
        progress.plan([snap, *(path for n, path in all_segments if n >= planned_base)])
        try:
            stats = snapshot.load(snap, keyspace, sessions, progress.snapshot)
        except CorruptData as exc:
            log.error("%s", exc)
            damaged.append((snap, exc))
            _reset(keyspace, sessions)
            continue
        finally:
            progress.file_done(snap)
        base = stats.base_segment
        report.snapshot_file = str(snap)
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
        break
    if base is None and not damaged:
        base = 1  # no snapshot at all: history starts at segment 1 from empty
    if base is not None:
        live = [(n, path) for n, path in all_segments if n >= base]
        replayed = _replay(live, base, keyspace, sessions, progress)
    lossy = replayed.bad is not None or (bool(damaged) and replayed.orphan)

    if base is None or (lossy and on_bad_data != "move-aside"):
        # Nothing loads, or what loads is missing acknowledged history: the operator decides.
        first = damaged[0][1] if damaged else replayed.bad
        if on_bad_data != "move-aside" or base is not None:
            assert first is not None
            raise first
        log.error("no snapshot loads; moving every snapshot and journal segment aside")
        _reset(keyspace, sessions)
        for path in (newest, previous):
            if path.exists():
                move_aside(path)
        for _, path in all_segments:
            move_aside(path)
        report.needs_snapshot = True
        base = highest + 1
    else:
        if damaged:
            report.fell_back = True
            report.needs_snapshot = True
            for path, _ in damaged:
                move_aside(path)
            if lossy:
                log.error("fell back to %s; history after the damage is lost", previous)
            else:
                log.error(
                    "fell back to the previous snapshot %s and its longer journal: "
                    "nothing is lost; the damaged file was moved aside",
                    previous,
                )
        elif not newest.exists() and previous.exists():
            report.fell_back = True
            report.needs_snapshot = True
        if replayed.stop is not None:
            if replayed.bad is not None:
                log.error("%s; keeping the records before it, moving the rest aside", replayed.bad)
            else:
                log.warning(
                    "%s continues a snapshot that never completed (no acknowledged writes); "
                    "moving it and later segments aside",
                    live[replayed.stop][1],
                )
            for _, path in live[replayed.stop :]:
                if path.exists():
                    move_aside(path)
            report.needs_snapshot = True  # a hole in the numbering: never write after it
        kept = {path for _, path in live[: replayed.stop]}
        for path, end, cut in replayed.torn:
            if path not in kept:
                continue
            # Loud: with fsync=always a cut record may have been acknowledged if the damage
            # was not a crash (store/disk/frames.py: the tail policy and its price).
            log.warning(
                "%s: torn tail of %d bytes after byte offset %d (a crash, a failed write or "
                "stale blocks after a power cut); truncating to the last whole record",
                path,
                cut,
                end,
            )
            if not dry_run:
                journal.truncate(path, end)
            report.truncated_bytes += cut
    report.snapshot_base = base
    report.journal_segments = replayed.segments
    report.journal_records = replayed.records
    report.journal_writers = replayed.writers

    sessions.finish_load()
    report.expired_at_load = sessions.counters.get("expired_at_load", 0)
    if not dry_run and not report.needs_snapshot:
        remove_obsolete_segments(directory)
    report.next_segment = max(highest + 1, base)
    report.seconds = time.perf_counter() - began
    progress.records = report.journal_records
    progress.finish()
    return report


def _replay(
    live: list[tuple[int, Path]],
    base: int,
    keyspace: Keyspace,
    sessions: SessionStore,
    progress: RecoveryProgress,
) -> _Replayed:
    out = _Replayed()
    expected = base
    previous: journal.SegmentReplay | None = None
    for i, (number, path) in enumerate(live):
        try:
            if number != expected:
                missing = datadir.segment_path(path.parent, expected)
                raise CorruptData(str(missing), 0, "journal segment is missing")
            flags = journal.read_flags(path, number)
            if flags is not None and flags & journal.FLAG_AFTER_GAP and number != base:
                out.stop, out.orphan = i, True
                return out
            # A blank tear at 0 (a creation whose header never landed) holds no record: nothing
            # was lost before this. Any other torn segment followed by a later one is damage --
            # a header cut short included: replaying past it would skip its records and serve
            # a state that never existed.
            if previous is not None and previous.torn and not previous.blank:
                # The damage is in the previous segment: it is the first one not kept (its
                # records before the damage stay applied, as for any bad segment), and it is
                # moved aside whole rather than truncated, so no byte of it is lost.
                out.bad = CorruptData(
                    str(live[i - 1][1]), previous.end, "torn record in the middle of the journal"
                )
                out.stop = i - 1
                out.segments -= 1
                return out
            done = journal.replay(path, number, keyspace, sessions, progress.journal(path.name))
        except CorruptData as exc:
            out.bad, out.stop = exc, i
            return out
        progress.file_done(path)
        out.segments += 1
        out.records += done.records
        for kind, n in done.writers.items():
            out.writers[kind] = out.writers.get(kind, 0) + n
        if done.torn:
            out.torn.append((path, done.end, done.torn_bytes))
        previous = done
        expected = number + 1
    return out


def remove_obsolete_segments(directory: Path) -> int:
    """Delete segments below the oldest snapshot generation's base; returns how many.

    Nothing is deleted unless the newest snapshot's base can be read: in doubt, keep.
    """
    bases = []
    for path in (datadir.snapshot_path(directory), datadir.previous_snapshot_path(directory)):
        if path.exists():
            b = snapshot.read_base(path)
            if b is None and path.name == datadir.SNAPSHOT:
                return 0
            if b is not None:
                bases.append(b)
    if not bases:
        return 0
    removed = 0
    for number, path in datadir.segments(directory):
        if number < min(bases):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
    if removed:
        datadir.fsync_dir(directory)
    return removed


def pin(
    directory: Path, keyspace: Keyspace, sessions: SessionStore, *, base: int, now: float
) -> None:
    """Write the recovered state as *both* snapshot generations, then retire older segments.

    Called when recovery left a hole in history or fell back (``needs_snapshot``): no older
    snapshot can be replayed across the hole, so a single new file would have no fallback.
    Two copies, written and verified one after the other, restore the one-damaged-file rule.
    """
    snapshot.save(directory, keyspace, sessions, base_segment=base, now=now)
    snapshot.save(directory, keyspace, sessions, base_segment=base, now=now)
    remove_obsolete_segments(directory)


def _reset(keyspace: Keyspace, sessions: SessionStore) -> None:
    """Forget a partly loaded snapshot."""
    keyspace.clear()
    for s in sessions.sessions():
        sessions.apply_delete(s.id)
    sessions.finish_load()
    sessions.counters["expired_at_load"] = 0
