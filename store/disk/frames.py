"""Length-prefixed, checksummed frames: the record layout shared by snapshots and journals.

Every record on disk is one frame::

    offset  size  field
    0       4     length    u32 LE, bytes in body (1 .. MAX_BODY)
    4       4     crc       u32 LE, crc32(body)
    8       4     hcrc      u32 LE, crc32(bytes 0..8): guards the length field itself
    12      n     body      code (1 byte, an on-disk record code) + payload (orjson)

Why CRC-32 (zlib) and not a cryptographic hash: the threat is a torn write, a flipped bit or a
misdirected block, not an adversary who can write our data directory. CRC-32 catches every
burst of up to 32 bits and every 1-3 bit error at our frame sizes, and misses random damage
with probability 2^-32 per frame; zlib's implementation runs at several GB/s, so a checksum
costs ~100 ns on a journal record. A hash would only matter against deliberate forgery.

Why a header checksum: without it a damaged length in the last frame of a journal would look
exactly like a torn tail ("the file ends before the frame does") and recovery would silently
drop a committed record. With ``hcrc`` the two are distinguishable:

    torn tail   the file ends inside a frame: fewer than 12 header bytes are left, or the
                header verifies but fewer than ``length`` body bytes follow; or a bad frame
                (hcrc or body crc fails) that a power cut can produce (below) and after which
                **no valid frame starts at any later byte offset**
    corruption  a bad frame followed, anywhere after it, by a valid frame; a length outside
                1..MAX_BODY under a valid hcrc; or damage no power cut can produce: a non-zero
                header that fails hcrc inside a 512-byte sector it shares with the valid frame
                before it, or a body crc failure in a frame that lies within one sector

Why garbage with nothing valid after it is a torn tail: after a power cut a file's size can
reach the disk before its data blocks do, and the blocks past the last one written then read
back as zeros or as *stale data* of an earlier file (filesystems that do not zero extents);
a frame half-written when the power went leaves a valid header with a body that ends in such
a block. Every one of those is the end of what was written, so nothing after it can be a
valid frame. Damage in the middle of a journal has the writer's later frames after it, and
those are found. Sectors narrow it further: a disk writes a 512-byte sector whole, so a sector
that holds valid bytes of ours holds, after them, either our later bytes or the zeros it had --
never stale data. A non-zero bad header in such a sector, or a bad body in a frame that fits in
one sector, is therefore damage to written data, not a tear: most journal records are that
small, so a flipped byte in the last record is refused, not cut. The price that remains:
damage at the start of a sector in the last record(s) of the last segment reads as a torn tail
and is cut (recovery logs the bytes cut, loudly). The scan for a valid frame after the bad one
costs one length test (and rarely a crc32 of 8 bytes) per byte of tail, only in this case.
Stale blocks recycled from an older journal may hold valid old frames: that is refused as
corruption, the conservative side.

A torn tail is what a crash (or a failed write) leaves at the end of a journal segment;
corruption never is. Snapshots are renamed into place only when complete, so a snapshot
treats a torn tail as corruption too.

Out of memory is not corruption: orjson reports an allocation failure as a JSONDecodeError
(a ValueError), so ``malformed`` decodes the payload again with the standard library before
calling a record malformed; if that succeeds or runs out of memory itself, MemoryError.
"""

import json
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import orjson

HEADER = struct.Struct("<III")
HEADER_SIZE = HEADER.size  # 12
_LEN_CRC = struct.Struct("<II")

# A journal record is a few KiB at most (a 16 KiB session); a snapshot chunk a few MiB. A
# length beyond this can only be damage, and refusing it keeps a bad length from allocating.
MAX_BODY = 1 << 26  # 64 MiB
SECTOR = 512  # the unit a disk writes whole; 4 KiB-sector disks are covered by it too

_crc32 = zlib.crc32


class DataError(Exception):
    """A data file rankd will not load. ``path`` and ``offset`` say where the trouble starts.

    DataError
    ├── CorruptData      damaged or not ours: bad checksum, impossible length, bad record
    └── FutureVersion    written by a newer rankd: a format this version cannot read
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: {reason} at byte offset {offset}")
        self.path = path
        self.offset = offset
        self.reason = reason


class CorruptData(DataError):
    pass


class FutureVersion(DataError):
    pass


def encode(code: int, payload: bytes) -> bytes:
    """One frame holding ``code`` and ``payload``."""
    body = bytes((code,)) + payload
    head = _LEN_CRC.pack(len(body), _crc32(body))
    return head + _crc32(head).to_bytes(4, "little") + body


def append(buf: bytearray, code: int, payload: bytes) -> int:
    """Append one frame to ``buf`` without building intermediate copies; returns its size.

    The journal's hot path: two crc32 calls, one pack, three buffer appends.
    """
    n = len(payload) + 1
    crc = _crc32(payload, _CODE_CRC[code])
    head = _LEN_CRC.pack(n, crc)
    buf += head
    buf += _crc32(head).to_bytes(4, "little")
    buf.append(code)
    buf += payload
    return n + HEADER_SIZE


# crc32 of the one-byte code prefix, so append() can continue the checksum over the payload.
_CODE_CRC = [_crc32(bytes((c,))) for c in range(256)]


class Reader:
    """Frames read in order from a binary file, starting at ``start``.

    ``frames()`` yields ``(offset, code, payload)`` and stops at a clean end of file or at a
    torn tail; after it stops, ``end`` is the offset just past the last whole frame and
    ``torn`` tells whether bytes after ``end`` were a torn tail. Corruption raises CorruptData.
    """

    def __init__(self, f: BinaryIO, path: str, start: int) -> None:
        self._f = f
        self.path = path
        self.end = start
        self.torn = False

    def frames(self) -> Iterator[tuple[int, int, bytes]]:
        read = self._f.read
        unpack = HEADER.unpack
        path = self.path
        while True:
            offset = self.end
            head = read(HEADER_SIZE)
            if not head:
                return
            if len(head) < HEADER_SIZE:
                self.torn = True
                return
            length, crc, hcrc = unpack(head)
            if hcrc != _crc32(head[:8]):
                shared = offset % SECTOR and offset % SECTOR + HEADER_SIZE <= SECTOR
                if shared and any(head):  # not a power cut's doing: see the module docstring
                    raise CorruptData(path, offset, "frame header checksum mismatch")
                self._bad(offset, head, "frame header checksum mismatch")
                return
            if not 0 < length <= MAX_BODY:
                raise CorruptData(path, offset, f"impossible frame length {length}")
            body = read(length)
            if len(body) < length:
                self.torn = True
                return
            if _crc32(body) != crc:
                if offset // SECTOR == (offset + HEADER_SIZE + length - 1) // SECTOR:
                    raise CorruptData(path, offset, "frame checksum mismatch")
                self._bad(offset, head + body, "frame checksum mismatch")
                return
            self.end = offset + HEADER_SIZE + length
            yield offset, body[0], body[1:]

    def _bad(self, offset: int, read_so_far: bytes, reason: str) -> None:
        """A bad frame at ``offset``: a torn tail if no valid frame starts after it (the
        module docstring says why), else CorruptData."""
        rest = read_so_far + self._f.read()
        if valid_frame_after(rest, 1) is not None:
            raise CorruptData(self.path, offset, reason)
        self.torn = True


def valid_frame_after(data: bytes, start: int) -> int | None:
    """The first offset >= ``start`` in ``data`` where a whole, valid frame begins, or None."""
    crc32 = _crc32
    unpack = HEADER.unpack_from
    for i in range(start, len(data) - HEADER_SIZE):
        length, crc, hcrc = unpack(data, i)
        if (
            0 < length <= len(data) - i - HEADER_SIZE
            and hcrc == crc32(data[i : i + 8])
            and crc == crc32(data[i + HEADER_SIZE : i + HEADER_SIZE + length])
        ):
            return i
    return None


def malformed(path: str, offset: int, exc: BaseException, payload: bytes) -> Exception:
    """What a record that failed to decode or apply means: CorruptData, or MemoryError when
    the failure was orjson running out of memory (reported as a JSONDecodeError)."""
    if isinstance(exc, orjson.JSONDecodeError):
        try:
            json.loads(payload)
        except MemoryError:
            return MemoryError(f"out of memory decoding {path} at byte offset {offset}")
        except (ValueError, RecursionError):
            pass
        else:
            return MemoryError(
                f"out of memory decoding {path} at byte offset {offset} ({exc}); "
                "the record itself is intact"
            )
    return CorruptData(path, offset, f"malformed record: {exc}")
