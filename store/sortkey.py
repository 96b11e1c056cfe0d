"""Order-preserving byte keys for leaderboard entries.

A board's SkipList holds one ``bytes`` object per entry, built so that plain byte comparison
(C ``memcmp``) sorts entries best first. One flat object instead of a ``(score, seq, member)``
tuple saves the tuple and two boxed ints — about 60 bytes per member — and compares faster.

    ties=first:   NUM(10) | SEQ(6) | MEMBER(utf-8) | TYPE(1)
    ties=member:  NUM(10) |          MEMBER(utf-8) | TYPE(1)

NUM encodes the score (negated on ``desc`` boards, so "better" always sorts first) exactly, ints
and floats mixed. Every score is an int or a finite float with magnitude below 2**63. Its nearest
float ``f = float(v)`` is monotonic in v, so the first 8 bytes are f's IEEE-754 bits made
sortable (sign bit flipped for positives, all bits flipped for negatives). Ints beyond 2**53 may
share f with neighbours, so 2 more bytes hold ``v - int(f)`` (|.| <= 2**9 below 2**63) biased to
unsigned. A float is its own f, so its correction is 0 and ``5 == 5.0`` encode the same NUM.

    v = 7          f = 7.0  bits 401c000000000000  -> c01c000000000000 8000
    v = -7 (desc of 7)      bits c01c000000000000  -> 3fe3ffffffffffff 8000
    v = 2**53 + 1  f = 2**53 (round to even)       -> c340000000000000 8001

SEQ is the board's write counter when the score was reached, big-endian, so equal scores sort
first-come first. MEMBER ends the key; it cannot contain bytes below 0x20 (store.values refuses
control characters), so TYPE (0 int, 1 float: how to hand the score back) sorts below any member
byte and a member that is a prefix of another still sorts first, as ``str`` comparison would.
UTF-8 byte order equals code point order, so ties=member matches Python's ``str`` order.

This layout is also on-disk format: snapshots store board entries as these keys (see
store/disk/snapshot.py), so any change here needs a snapshot VERSION bump; tests pin sample keys to
literal bytes so an accidental change fails loudly.
"""

import struct

from store.values import Score

SEQ_LIMIT = 2**48  # 6 bytes: 89 years of 100k writes/s on one board
NUM_BYTES = 10  # every key starts with its score's NUM: equal scores share these bytes

_F64 = struct.Struct(">d")
_U64 = struct.Struct(">Q")
_NUM = struct.Struct(">QH")
_SIGN = 1 << 63
_ALL = (1 << 64) - 1
_BIAS = 1 << 15
_INT, _FLOAT = b"\x00", b"\x01"


def encode_num(v: Score) -> bytes:
    """10 bytes whose byte order is the numeric order of v (exact for ints and floats)."""
    f = float(v) + 0.0  # -0.0 + 0.0 is +0.0: negating a 0.0 score must not split it from 0
    (u,) = _U64.unpack(_F64.pack(f))
    u = u ^ _ALL if u & _SIGN else u | _SIGN
    corr = v - int(f) if type(v) is int else 0
    return _NUM.pack(u, corr + _BIAS)


def next_num(num: bytes) -> bytes:
    """The smallest NUM above ``num``: ``bisect_left(next_num(n))`` counts the keys whose score
    sorts at or before n. Never overflows: no score encodes to all 0xff bytes (2**63 is refused)."""
    return (int.from_bytes(num, "big") + 1).to_bytes(NUM_BYTES, "big")


def decode_num(b: bytes, is_float: bool) -> Score:
    u, corr = _NUM.unpack_from(b)
    u = u ^ _SIGN if u & _SIGN else u ^ _ALL
    (f,) = _F64.unpack(_U64.pack(u))
    if is_float:
        return f  # type: ignore[no-any-return]
    return int(f) + corr - _BIAS  # type: ignore[no-any-return]


def make_key(num: bytes, seq: int | None, member: str, score: Score) -> bytes:
    """The full key; ``seq`` is None on ties=member boards."""
    tail = _FLOAT if type(score) is float else _INT
    if seq is None:
        return num + member.encode() + tail
    return num + seq.to_bytes(6, "big") + member.encode() + tail


def key_member(key: bytes, first: bool) -> str:
    return key[16 if first else 10 : -1].decode()


def key_seq(key: bytes) -> int:
    return int.from_bytes(key[10:16], "big")


def key_score(key: bytes, desc: bool) -> Score:
    s = decode_num(key, key[-1] == 1)
    return 0 - s if desc else s  # not -s: that turns a stored 0.0 into -0.0
