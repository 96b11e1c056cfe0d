"""The snapshot file: every board and session at one instant, written atomically.

File model (all integers little-endian; frames as in store/frames.py)::

    offset 0   MAGIC "RANKDSNP" (8) | format version u32 | crc32 of the 12 bytes before (u32)
    offset 16  META      {"created_at": unix time, "base_segment": n}
               BOARD     [name, {"order", "update", "ties"}, board seq, entry count]
               ENTRIES   [members, scores, seqs, [[i, metadata], ...]]   up to 4096 per frame,
                          ...                                            in rank order, until
                                                                         the BOARD's count
               ... more BOARD + ENTRIES groups ...
               SESSIONS  [[id, user, data, created_at, ttl, idle_deadline, max_expires_at,
                           version], ...]                                up to 1024 per frame
               END       {"boards": b, "entries": e, "sessions": s, "crc": crc32 of every byte
                          of the file before this frame}
    (end of file: nothing may follow END)

The 16-byte header layout is fixed forever: the checksum is verified before the version is
read, so a damaged version number reads as corruption, and a *valid* header with a larger
version is refused as FutureVersion. The codes below are on-disk constants: a code keeps its
meaning for good; a new record type gets a new code and a new format version.

``base_segment`` ties the snapshot to the journal: the snapshot holds exactly the effect of
every record in segments numbered below it, so recovery replays segments >= base_segment.

Entries are stored in rank order with their tie sequence numbers, so a board loads with
``Board.load`` -- one pass that builds its SkipList from sorted input in O(n), no re-sorting.
Columns (members, scores, seqs) rather than rows, because orjson decodes three flat lists far
faster than 4096 small ones. Sessions hold absolute wall-clock deadlines; expired ones are
handed to ``SessionStore.load`` anyway, which holds them until the journal has been replayed
(a journalled touch may have extended them) and counts those still expired.

Why a whole-file checksum on top of per-frame ones: per-frame checksums catch damage inside a
frame and name its offset; the END crc (and the counts) also catch whole frames that are
missing, duplicated or reordered -- the misdirected-write failures a frame cannot see itself.
"""

import contextlib
import itertools
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from store import datadir, frames
from store.boards import BoardConfig
from store.frames import CorruptData, FutureVersion
from store.keyspace import Keyspace
from store.sessions import Session, SessionStore

MAGIC = b"RANKDSNP"
VERSION = 1
_HEAD = struct.Struct("<8sI")
HEADER_SIZE = _HEAD.size + 4  # 16

# On-disk record codes (never reuse or renumber).
META = 0x01
BOARD = 0x02
ENTRIES = 0x03
SESSIONS = 0x04
END = 0x7F

ENTRIES_PER_FRAME = 4096
SESSIONS_PER_FRAME = 1024
_FLUSH_BYTES = 1 << 20

Progress = Callable[[int, int], None]  # (entries loaded, sessions loaded)


@dataclass(frozen=True, slots=True)
class SnapshotStats:
    bytes: int
    boards: int
    entries: int
    sessions: int
    base_segment: int
    created_at: float


def header() -> bytes:
    head = _HEAD.pack(MAGIC, VERSION)
    return head + zlib.crc32(head).to_bytes(4, "little")


# -- writing ---------------------------------------------------------------------------------


class _Out:
    """Frames buffered into ~1 MiB os.write calls, with a running crc32 of every byte."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.crc = 0
        self.size = 0

    def frame(self, code: int, payload: bytes) -> None:
        frames.append(self.buf, code, payload)
        if len(self.buf) >= _FLUSH_BYTES:
            self.flush()

    def raw(self, data: bytes) -> None:
        self.buf += data

    def flush(self) -> None:
        if self.buf:
            datadir.write_all(self.fd, self.buf)
            self.crc = zlib.crc32(self.buf, self.crc)
            self.size += len(self.buf)
            self.buf = bytearray()


def write(
    fd: int, keyspace: Keyspace, sessions: SessionStore, *, base_segment: int, now: float
) -> SnapshotStats:
    """Write a complete snapshot to ``fd`` (no fsync). Runtime complexity: O(entries + sessions).

    Meant for a forked child (store/bgsave.py) or a process that is not serving: it iterates
    live structures and must not be interleaved with writes.
    """
    out = _Out(fd)
    out.raw(header())
    out.frame(META, orjson.dumps({"created_at": now, "base_segment": base_segment}))
    n_entries = 0
    for board in keyspace:
        count = len(board)
        out.frame(BOARD, orjson.dumps([board.name, board.config.as_dict(), board.seq, count]))
        rows = board.dump()
        while chunk := list(itertools.islice(rows, ENTRIES_PER_FRAME)):
            members, scores, seqs, metas = zip(*chunk, strict=True)
            sparse = [[i, m] for i, m in enumerate(metas) if m is not None]
            out.frame(ENTRIES, orjson.dumps([members, scores, seqs, sparse]))
            n_entries += len(chunk)
        assert n_entries >= count
    n_sessions = 0
    every = sessions.sessions()
    while chunk_s := list(itertools.islice(every, SESSIONS_PER_FRAME)):
        out.frame(SESSIONS, orjson.dumps([_session_row(s) for s in chunk_s]))
        n_sessions += len(chunk_s)
    out.flush()
    end = {"boards": len(keyspace), "entries": n_entries, "sessions": n_sessions, "crc": out.crc}
    out.frame(END, orjson.dumps(end))
    out.flush()
    return SnapshotStats(out.size, len(keyspace), n_entries, n_sessions, base_segment, now)


def _session_row(s: Session) -> list[Any]:
    return [
        s.id,
        s.user,
        s.data,
        s.created_at,
        s.ttl,
        s.idle_deadline,
        s.max_expires_at,
        s.version,
    ]


def save(
    directory: Path,
    keyspace: Keyspace,
    sessions: SessionStore,
    *,
    base_segment: int,
    now: float,
) -> SnapshotStats:
    """Write, fsync, rename into place, fsync the directory. Raises OSError on any failure, in
    which case the previous snapshot is untouched and the temp file is gone (best effort).
    """
    tmp = datadir.temp_snapshot_path(directory)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            stats = write(fd, keyspace, sessions, base_segment=base_segment, now=now)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, datadir.snapshot_path(directory))
    except BaseException:
        with contextlib.suppress(OSError):  # the next start removes it; raise the real error
            os.unlink(tmp)
        raise
    datadir.fsync_dir(directory)
    return stats


# -- reading ---------------------------------------------------------------------------------


class _CrcFile:
    """A reader that keeps crc32 of everything read so far (for END's whole-file check)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.crc = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.crc = zlib.crc32(data, self.crc)
        return data


def load(
    path: Path,
    keyspace: Keyspace,
    sessions: SessionStore,
    progress: Progress | None = None,
) -> SnapshotStats:
    """Load a snapshot into an empty keyspace and session store.

    Raises CorruptData / FutureVersion naming the file and the byte offset; the stores may
    then hold part of the file and the caller must discard them.
    """
    name = str(path)
    with open(path, "rb", buffering=1 << 20) as raw:
        f = _CrcFile(raw)
        _check_header(name, f.read(HEADER_SIZE))
        reader = frames.Reader(f, name, HEADER_SIZE)  # type: ignore[arg-type]
        loader = _Loader(name, keyspace, sessions, progress)
        crc_before = f.crc  # crc of every byte before the frame being handled
        for offset, code, payload in reader.frames():
            if loader.done:
                raise CorruptData(name, offset, "data after the END record")
            try:
                loader.record(offset, code, payload, crc_before)
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                # CorruptData is a DataError, not a ValueError: only malformed content lands here.
                raise CorruptData(name, offset, f"malformed record: {exc}") from None
            crc_before = f.crc
        if reader.torn:
            what = "data after the END record" if loader.done else "file ends inside a record"
            raise CorruptData(name, reader.end, what)
        if not loader.done:
            raise CorruptData(name, reader.end, "file ends before the END record")
        assert loader.meta is not None
        return SnapshotStats(
            reader.end,
            len(keyspace),
            loader.entries,
            loader.sessions,
            loader.meta["base_segment"],
            loader.meta["created_at"],
        )


def _check_header(name: str, head: bytes) -> None:
    if len(head) < HEADER_SIZE or head[:8] != MAGIC:
        raise CorruptData(name, 0, "not a rankd snapshot (bad magic)")
    if zlib.crc32(head[:12]) != int.from_bytes(head[12:16], "little"):
        raise CorruptData(name, 0, "snapshot header checksum mismatch")
    (_, version) = _HEAD.unpack(head[:12])
    if version > VERSION:
        raise FutureVersion(
            name, 8, f"snapshot format version {version} is newer than this rankd's ({VERSION})"
        )
    if version < 1:
        raise CorruptData(name, 8, f"unknown snapshot format version {version}")


class _Loader:
    """Applies snapshot records in file order, checking the grammar META BOARD* SESSIONS* END."""

    def __init__(
        self, name: str, keyspace: Keyspace, sessions: SessionStore, progress: Progress | None
    ) -> None:
        self.name = name
        self.keyspace = keyspace
        self.store = sessions
        self.progress = progress
        self.meta: dict[str, Any] | None = None
        self.done = False
        self.entries = 0
        self.sessions = 0
        # The board being filled: name, config, seq, expected count and its columns.
        self._board: tuple[str, BoardConfig, int, int] | None = None
        self._cols: tuple[list[Any], list[Any], list[Any], dict[int, Any]] = ([], [], [], {})
        self._in_sessions = False

    def record(self, offset: int, code: int, payload: bytes, crc_before: int) -> None:
        name = self.name
        if self.meta is None:
            if code != META:
                raise CorruptData(name, offset, f"expected a META record, found code {code}")
            meta = orjson.loads(payload)
            if type(meta.get("base_segment")) is not int or not isinstance(
                meta.get("created_at"), int | float
            ):
                raise CorruptData(name, offset, "malformed META record")
            self.meta = meta
            return
        if code != ENTRIES and self._board is not None:
            raise CorruptData(name, offset, f"board {self._board[0]!r} ends before its entries")
        if code == BOARD:
            if self._in_sessions:
                raise CorruptData(name, offset, "BOARD record after SESSIONS")
            bname, options, seq, count = orjson.loads(payload)
            if bname in self.keyspace.boards:
                raise CorruptData(name, offset, f"board {bname!r} appears twice")
            config = BoardConfig.from_options(options)
            if type(seq) is not int or type(count) is not int or count < 0:
                raise CorruptData(name, offset, "malformed BOARD record")
            self._board = (bname, config, seq, count)
            self._cols = ([], [], [], {})
            self._finish_board()  # an empty board is complete at once
        elif code == ENTRIES:
            if self._board is None:
                raise CorruptData(name, offset, "ENTRIES record outside a board")
            members, scores, seqs, sparse = orjson.loads(payload)
            if not len(members) == len(scores) == len(seqs):
                raise CorruptData(name, offset, "ENTRIES columns differ in length")
            cols = self._cols
            base = len(cols[0])
            cols[0].extend(members)
            cols[1].extend(scores)
            cols[2].extend(seqs)
            for i, meta in sparse:
                cols[3][base + i] = meta
            if len(cols[0]) > self._board[3]:
                raise CorruptData(name, offset, "more entries than the BOARD record declares")
            self._finish_board()
        elif code == SESSIONS:
            self._in_sessions = True
            load = self.store.load
            rows = orjson.loads(payload)
            for row in rows:
                load(Session(*row))
            self.sessions += len(rows)
            if self.progress is not None:
                self.progress(self.entries, self.sessions)
        elif code == END:
            end = orjson.loads(payload)
            counts = (len(self.keyspace), self.entries, self.sessions)
            if (end["boards"], end["entries"], end["sessions"]) != counts:
                raise CorruptData(
                    name, offset, f"END counts {end} differ from the records read {counts}"
                )
            if end["crc"] != crc_before:
                raise CorruptData(name, offset, "whole-file checksum mismatch")
            self.done = True
        else:
            raise CorruptData(name, offset, f"unknown record code {code}")

    def _finish_board(self) -> None:
        if self._board is None:
            return
        bname, config, seq, count = self._board
        members, scores, seqs, metas = self._cols
        if len(members) < count:
            return
        board = self.keyspace.restore_board(bname, config)
        meta_col = [metas.get(i) for i in range(count)] if metas else itertools.repeat(None)
        board.load(zip(members, scores, seqs, meta_col, strict=False), seq)
        self.entries += count
        self._board = None
        self._cols = ([], [], [], {})
        if self.progress is not None:
            self.progress(self.entries, self.sessions)
