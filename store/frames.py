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
                header verifies but fewer than ``length`` body bytes follow; or every byte
                from a frame boundary to the end is zero (a crash after the file size grew
                but before the data blocks reached the disk, as ext4/XFS can leave)
    corruption  a complete header whose hcrc fails, a length outside 1..MAX_BODY, or a
                complete body whose crc fails

A torn tail is what a crash (or a failed write) leaves at the end of a journal segment;
corruption never is. Snapshots are renamed into place only when complete, so a snapshot
treats a torn tail as corruption too.
"""

import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

HEADER = struct.Struct("<III")
HEADER_SIZE = HEADER.size  # 12
_LEN_CRC = struct.Struct("<II")

# A journal record is a few KiB at most (a 16 KiB session); a snapshot chunk a few MiB. A
# length beyond this can only be damage, and refusing it keeps a bad length from allocating.
MAX_BODY = 1 << 26  # 64 MiB

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
                if head == bytes(HEADER_SIZE) and self._rest_is_zero():
                    self.torn = True
                    return
                raise CorruptData(path, offset, "frame header checksum mismatch")
            if not 0 < length <= MAX_BODY:
                raise CorruptData(path, offset, f"impossible frame length {length}")
            body = read(length)
            if len(body) < length:
                self.torn = True
                return
            if _crc32(body) != crc:
                raise CorruptData(path, offset, "frame checksum mismatch")
            self.end = offset + HEADER_SIZE + length
            yield offset, body[0], body[1:]

    def _rest_is_zero(self) -> bool:
        while True:
            chunk = self._f.read(1 << 20)
            if not chunk:
                return True
            if chunk.count(0) != len(chunk):
                return False
