"""The journal: one record per mutation, carrying the resulting state, in numbered segments.

File model (integers little-endian; frames as in store/disk/frames.py)::

    journal-00000000000000000007.rkj
    offset 0   MAGIC "RANKDJNL" (8) | version u32 | flags u32 | segment number u64 | crc32 (u32)
    offset 28  frame, frame, ...          one per mutation, in the order the store made them

    record    code  payload (orjson)                                      replay
    bcfg      0x01  [board, {option: value, ...}, now (v3)]               create / reconfigure
                                                                          (trim to keep at now)
    bdrop     0x02  [board]                                               drop if present
    bset      0x03  [board, member, score, seq, metadata | null]          set entry to this state
    bdel      0x04  [board, member, seq]                                  delete if present
    bbatch    0x05  [board, [[member, score, seq, metadata | null], ...]] every bset of one
                                                                          scores:batch (v2)
    bmulti    0x06  [board, [["s", member, score, seq, metadata | null,   every change of one
                      window, period] | ["d", member, seq, window,        write, delete or
                      period], ...]]                                      batch that names a
                                                                          window other than
                                                                          "all" (v3)
    sput      0x11  [id, user, data, created_at, ttl, idle_deadline,      set session to this
                     max_expires_at, version]                             state
    stouch    0x12  [id, idle_deadline]                                   set the idle deadline
    sdel      0x13  [id, reason]                                          delete if present

Who wrote (v4): the four board-write records (``bset``, ``bdel``, ``bbatch``, ``bmulti``) end
with the writer (store/writers.py): one small integer -- 1 an API key, 3 no credential (a
server without keys) -- or, for a player, 2 and then the player's user id, never the session
id: ``["b", "alice", 42, 17, null, 1]``, ``["b", "alice", 42, 17, null, 2, "alice"]``. A
record without it (versions 1-3, or a change rankd made itself) has writer "unknown". The
writer is metadata: replay ignores it, so a record means the same state whoever wrote it;
``rankd check`` counts records per writer kind.

``bset``, ``bdel`` and ``bbatch`` mean window "all", period "all" (the only one before v3).
A change to any other window is a ``bmulti`` record naming the window and the period it went
to: replay puts it exactly there, whatever the clock says at replay (periods.py names them), so
a restart neither loses nor re-applies a rollover. One write to several windows is one record.

A batch is one record so that it is all or nothing across a crash: the frame's checksum
covers every item, and a torn or missing frame applies none of them. Version 2 introduced
``bbatch``; a version-1 rankd meeting a version-2 segment refuses it as a newer format instead
of calling a batch record corruption. Version-1 segments are read as ever.

Every record states a result, never a delta ("alice has 42, seq 17", not "alice +5"), so
replaying a record twice, or over a snapshot that already contains it, is harmless. That is
what lets a snapshot and the segment that starts at its fork instant add up to an exact state.

Segments: a new one starts whenever a snapshot starts (the snapshot's ``base_segment``) and
when a process starts -- a process never appends to a file an earlier process wrote, so a torn
tail it truncated stays the end of that file. Segments below the snapshot's base are obsolete
and are deleted once that snapshot is durable.

FLAG_AFTER_GAP: set on a segment created while the journal had lost records (a write or fsync
failed, so persistence refused writes). Its records continue the *in-memory* state, which no
older file describes, so it is only valid on top of the snapshot whose base it is. Recovery
that meets such a segment after any other base stops there: it and the later segments are
orphans of a snapshot that never completed, and hold no acknowledged write, because writes
are refused from the failure until such a snapshot is durable (service/backend/persistence.py).

Torn tails (store/disk/frames.py defines them, including the policy for non-zero garbage: a bad
frame with no valid frame after it, where a power cut can leave stale blocks) are truncated at
recovery, with the bytes cut logged; a segment other than the last may end torn only when the
next one has FLAG_AFTER_GAP (the writer stopped there after a failure). Anything else is
corruption and refuses to start -- unless an older snapshot generation and its segments cover
it (store/disk/recovery.py). Segments are created 0600: they hold session ids.
"""

import contextlib
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from store.disk import datadir, frames, rows
from store.disk.frames import CorruptData, FutureVersion
from store.keyspace import Keyspace
from store.sessions import SessionStore
from store.writers import KINDS, UNKNOWN, Writer

MAGIC = b"RANKDJNL"
VERSION = 4  # 2: bbatch; 3: bmulti, bcfg's instant; 4: the writer on board writes
_HEAD = struct.Struct("<8sIIQ")
HEADER_SIZE = _HEAD.size + 4  # 28
FLAG_AFTER_GAP = 0x1
_KNOWN_FLAGS = FLAG_AFTER_GAP

# On-disk record codes (never reuse or renumber).
BCFG = 0x01
BDROP = 0x02
BSET = 0x03
BDEL = 0x04
BBATCH = 0x05
BMULTI = 0x06
SPUT = 0x11
STOUCH = 0x12
SDEL = 0x13

_dumps = orjson.dumps


# -- encoding (the hot path: runs inside every write, synchronously) --------------------------


# Each encoder takes the event and the writer's row (store/writers.py; () for none), which
# board writes append to their payload and the other records ignore.
Row = tuple[Any, ...]


def _bset(e: tuple[Any, ...], w: Row) -> bytes:
    return _dumps((e[1], e[2], e[3], e[4], e[5], *w))


def _bdel(e: tuple[Any, ...], w: Row) -> bytes:
    return _dumps((e[1], e[2], e[3], *w))


def _bbatch(e: tuple[Any, ...], w: Row) -> bytes:
    return _dumps((e[1], [(c[2], c[3], c[4], c[5]) for c in e[2]], *w))


def _bcfg(e: tuple[Any, ...], w: Row) -> bytes:
    return _dumps((e[1], e[2], e[4]))


def _row(w: tuple[Any, ...]) -> tuple[Any, ...]:
    if w[0] == "bset":
        return ("s", w[2], w[3], w[4], w[5], w[10], w[11])
    return ("d", w[2], w[3], w[7], w[8])


def _bmulti(e: tuple[Any, ...], w: Row) -> bytes:
    if e[0] == "bbatch":
        return _dumps((e[1], [_row(c) for c in e[2]], *w))
    return _dumps((e[1], [_row(e)], *w))


def _plain_batch(e: tuple[Any, ...]) -> bool:
    return all(w[0] == "bset" and w[10] == "all" for w in e[2])


def _bdrop(e: tuple[Any, ...], w: Row) -> bytes:
    return _dumps((e[1],))


def _sput(e: tuple[Any, ...], w: Row) -> bytes:
    # Encoded now: the Session object is the store's own and changes after this returns.
    return _dumps(rows.session_row(e[1]))


def _stouch(e: tuple[Any, ...], w: Row) -> bytes:
    return _dumps((e[1], e[2]))


def _sdel(e: tuple[Any, ...], w: Row) -> bytes:
    return _dumps((e[1], e[2]))


ENCODERS: dict[str, tuple[int, Callable[[tuple[Any, ...], Row], bytes]]] = {
    "bset": (BSET, _bset),
    "bdel": (BDEL, _bdel),
    "bbatch": (BBATCH, _bbatch),
    "bcfg": (BCFG, _bcfg),
    "bdrop": (BDROP, _bdrop),
    "sput": (SPUT, _sput),
    "stouch": (STOUCH, _stouch),
    "sdel": (SDEL, _sdel),
}


def append_event(buf: bytearray, event: tuple[Any, ...], writer: Row = ()) -> int:
    """Encode one store event as a frame at the end of ``buf``; returns the frame's size
    (0 for a ``broll``: a rollover follows from the clock and the records' periods).
    ``writer``: ``Writer.row()`` of who made the change, recorded on board writes."""
    op = event[0]
    if op == "broll":
        return 0
    code, encode = ENCODERS[op]
    if (
        (code == BSET and event[10] != "all")
        or (code == BDEL and event[7] != "all")
        or (code == BBATCH and not _plain_batch(event))
    ):
        code, encode = BMULTI, _bmulti
    return frames.append(buf, code, encode(event, writer))


# -- replay ------------------------------------------------------------------------------------


def writer_of(tail: list[Any]) -> Writer:
    """The writer of a board-write record whose payload ends with ``tail`` (after its fixed
    fields): "unknown" when empty (versions 1-3). ValueError if malformed."""
    return Writer.from_row(tail) if tail else UNKNOWN


def apply_record(
    code: int, payload: bytes, keyspace: Keyspace, sessions: SessionStore
) -> Writer | None:
    """Apply one record (idempotent); returns the writer of a board write, else None.
    Malformed content raises ValueError/TypeError/KeyError.

    Board records go through the keyspace's replay methods, the same ones ``Keyspace.apply``
    uses for live events: one replay path, whatever the record came from. The writer is
    checked and returned, never applied: replay means the same whoever wrote.
    """
    v = orjson.loads(payload)
    if code == BSET:
        board, member, score, seq, meta = v[:5]
        writer = writer_of(v[5:])
        keyspace.replay_set(board, member, score, seq, meta)
        return writer
    elif code == SPUT:
        sessions.load(rows.session_from_row(v))
    elif code == STOUCH:
        sid, idle = v
        sessions.apply_touch(sid, idle)
    elif code == SDEL:
        sessions.apply_delete(v[0])
    elif code == BDEL:
        board, member, seq = v[:3]
        writer = writer_of(v[3:])
        keyspace.replay_delete(board, member, seq)
        return writer
    elif code == BBATCH:
        board, writes = v[:2]
        writer = writer_of(v[2:])
        for member, score, seq, meta in writes:
            keyspace.replay_set(board, member, score, seq, meta)
        return writer
    elif code == BMULTI:
        board, changes = v[:2]
        writer = writer_of(v[2:])
        for row in changes:
            if row[0] == "s":
                _, member, score, seq, meta, window, period = row
                keyspace.replay_set(board, member, score, seq, meta, window, period)
            elif row[0] == "d":
                _, member, seq, window, period = row
                keyspace.replay_delete(board, member, seq, window, period)
            else:
                raise ValueError(f"unknown bmulti row kind {row[0]!r}")
        return writer
    elif code == BCFG:
        board, options = v[0], v[1]
        now = v[2] if len(v) > 2 else None
        if len(v) > 3 or not (now is None or type(now) in (int, float)):
            raise ValueError("malformed bcfg record")
        keyspace.replay_config(board, rows.config_from_row(options), now)
    elif code == BDROP:
        keyspace.replay_drop(v[0])
    else:
        raise ValueError(f"unknown record code {code}")
    return None


@dataclass(slots=True)
class SegmentReplay:
    number: int
    flags: int
    records: int
    end: int  # offset just past the last whole record
    size: int  # file size before any truncation
    torn: bool  # bytes after ``end`` are a torn tail
    blank: bool = False  # torn at 0 and every byte zero: a creation that never reached the disk
    writers: dict[str, int] = field(default_factory=dict)  # board-write records by writer kind

    @property
    def torn_bytes(self) -> int:
        return self.size - self.end


def header(number: int, flags: int) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, flags, number)
    return head + zlib.crc32(head).to_bytes(4, "little")


def _check_header(name: str, head: bytes, number: int) -> int:
    """The segment's flags; raises for anything but a complete, valid header of ``number``."""
    if head[:8] != MAGIC:
        raise CorruptData(name, 0, "not a rankd journal segment (bad magic)")
    if zlib.crc32(head[:24]) != int.from_bytes(head[24:28], "little"):
        raise CorruptData(name, 0, "journal header checksum mismatch")
    _, version, flags, found = _HEAD.unpack(head[:24])
    if version > VERSION:
        raise FutureVersion(
            name, 8, f"journal format version {version} is newer than this rankd's ({VERSION})"
        )
    if version < 1:
        raise CorruptData(name, 8, f"unknown journal format version {version}")
    if flags & ~_KNOWN_FLAGS:
        raise CorruptData(name, 12, f"unknown journal flags {flags:#x}")
    if found != number:
        raise CorruptData(name, 16, f"header says segment {found}, file name says {number}")
    flags_out: int = flags
    return flags_out


def read_flags(path: Path, number: int) -> int | None:
    """The segment's header flags, or None if the header itself is torn (short or zeros)."""
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE or head.count(0) == HEADER_SIZE:
        return None
    return _check_header(str(path), head, number)


def replay(
    path: Path,
    number: int,
    keyspace: Keyspace,
    sessions: SessionStore,
    progress: Callable[[int, int], None] | None = None,
) -> SegmentReplay:
    """Apply every whole record of one segment, in order; the caller handles a torn tail.

    A header shorter than 28 bytes, or a file of nothing but zeros, is a torn tail at 0.
    Runtime complexity: O(records).
    """
    name = str(path)
    size = path.stat().st_size
    with open(path, "rb", buffering=1 << 20) as f:
        head = f.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE or _all_zero(head, f):
            # Created but its header never reached the disk (a crash or power cut during
            # creation): it cannot hold a record, since records follow the header's fsync.
            # Only a blank one may sit mid-journal: a non-zero fragment of a header followed
            # by a later segment is a damaged (truncated) segment whose records are gone.
            blank = head.count(0) == len(head)
            return SegmentReplay(number, 0, 0, 0, size, size > 0, blank)
        flags = _check_header(name, head, number)
        reader = frames.Reader(f, name, HEADER_SIZE)
        records = 0
        writers: dict[str, int] = dict.fromkeys(KINDS, 0)
        for offset, code, payload in reader.frames():
            try:
                writer = apply_record(code, payload, keyspace, sessions)
            except orjson.JSONDecodeError as exc:  # maybe out of memory: frames.malformed
                raise frames.malformed(name, offset, exc, payload) from None
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                raise CorruptData(name, offset, f"record does not apply: {exc!r:.200}") from None
            records += 1
            if writer is not None:
                writers[writer.kind] += 1
            if progress is not None and not records & 0xFFFF:
                progress(records, offset)  # (records applied, byte offset reached)
        return SegmentReplay(number, flags, records, reader.end, size, reader.torn, writers=writers)


def _all_zero(head: bytes, f: BinaryIO) -> bool:
    """True if ``head`` and the rest of ``f`` are zero bytes (leaves ``f`` at the end if so)."""
    if head.count(0) != len(head):
        return False
    while chunk := f.read(1 << 20):
        if chunk.count(0) != len(chunk):
            return False
    return True


def truncate(path: Path, length: int) -> None:
    """Cut a torn tail off, durably (fsync), so new records never follow garbage."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, length)
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the writing side (one thread owns it: the persistence flusher) ---------------------------


class SegmentWriter:
    """The open segment file. Not thread-safe: exactly one thread calls it, in order.

    Every method raises OSError on failure and leaves the writer unusable for the segment it
    was writing (the caller marks persistence unhealthy and starts over with a snapshot).
    """

    def __init__(self, directory: Path, *, sync: bool, created: int) -> None:
        self.directory = directory
        self.sync_enabled = sync  # False for fsync=no: never fsync the journal
        self.created = created  # highest segment number created successfully so far
        self.number: int | None = None
        self.fd: int | None = None
        self.dirty = False  # written since the last fsync

    def open(self, number: int, flags: int) -> None:
        """Finish the current segment (fsync unless fsync=no) and create segment ``number``."""
        self.close()
        path = datadir.segment_path(self.directory, number)
        # O_TRUNC, not O_EXCL: a file of this number can only be a creation that failed half-way
        # (numbers advance only after a successful creation) and holds nothing durable.
        mode = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(path, mode, datadir.FILE_MODE)
        try:
            datadir.write_all(fd, header(number, flags))
            # Always durable, even with fsync=no: a missing segment in the middle of the
            # numbering would make every later one unreadable.
            os.fsync(fd)
            datadir.fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.number = number
        self.created = max(self.created, number)
        self.dirty = False

    def write(self, data: bytes | bytearray) -> None:
        assert self.fd is not None
        datadir.write_all(self.fd, data)
        self.dirty = True

    def fsync(self) -> None:
        if self.fd is not None and self.dirty and self.sync_enabled:
            os.fsync(self.fd)
        self.dirty = False

    def close(self) -> None:
        """fsync (per policy) and close; after a failure, close without claiming anything."""
        fd, self.fd, self.number = self.fd, None, None
        if fd is None:
            return
        try:
            if self.dirty and self.sync_enabled:
                os.fsync(fd)
        finally:
            self.dirty = False
            os.close(fd)

    def abandon(self) -> None:
        """Drop the segment after a failed write or fsync: close, never fsync again."""
        fd, self.fd, self.number = self.fd, None, None
        self.dirty = False
        if fd is not None:
            with contextlib.suppress(OSError):  # already failed; that error was raised
                os.close(fd)
