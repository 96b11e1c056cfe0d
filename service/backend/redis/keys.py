"""Key layout of the redis backend: every key rankd touches, as pure functions.

One board = one hash tag, so every key of a board hashes to one cluster slot and one server-side
function call may touch all of them (SCALEOUT.md section 1.1). ``P`` is the configurable prefix
(default ``rk``); ``B`` a board name (``[A-Za-z0-9_.-]{1,64}``, store/values.py: it never holds
``{`` or ``}``, so the tag is always the whole name):

    P:{B}:z      ZSET    every score 0; member = store.sortkey key (NUM|SEQ|MEMBER|TYPE), so
                         ZRANK/ZRANGE order = byte order = rankd's order
    P:{B}:m      HASH    member -> its current sort key
    P:{B}:d      HASH    member -> metadata JSON (only entries that have metadata)
    P:{B}:cfg    HASH    order, update, ties, seq (the board's write counter), epoch
    P:{B}:cfg    ... and opts: JSON of ranking, windows, reset_offset, keep, grace, bounds
    P:{B}:{z,m,d,u,c}:<w>:<p>   one period p of window w (table_keys); u/c: dense boards
    P:{B}:r:<w>  ZSET    window w's stored period ids, scored by start (what trimming reads)
    P:{B}:ev     shard channel (SPUBLISH): "set <seq> <rank> <prev> <member>", "del ...", "drop",
                 "private" (public_read turned off)
    P:{B}:iz     ZSET    idempotency ids of recent writes -> when they may be forgotten (ms)
    P:{B}:ih     HASH    idempotency id -> request fingerprint + the write's first reply
    P:boards     ZSET    registry for GET /v1/boards: board names, score 0 (listed in byte order)

Sessions name their slot inside the id (service/backend/redis/session_ids.py): ``id = T.R``
with ``T`` four url-safe characters, so everything of one user lives in the slot of ``{T}``:

    P:s:{T}:<id> HASH    one session
    P:x:{T}      ZSET    the bucket's user index: "<id> <user>" -> expires_at (s)
    P:e:{T}:<d>  STRING  the id with digest d was used in T: refused by create-with-id (410)
                         until lifetime + --session-max-ttl after its creation
    P:sev:{T}    shard channel: "rotated|revoked|deleted|evicted <id>"
    P:c:{C}:<d>  STRING  a caller-chosen id's bucket T; C = chosen_bucket(id) (session_ids.py)
    P:secret     STRING  the HMAC secret that maps a user to T (set once with NX)
    P:anon       ZSET    ids of sessions without a user -> first idle deadline (the count of
                         --max-anonymous-sessions)

The registry and the secret have no tag of a board or bucket: they live in the slot of their
own name, so updating the registry is a second call, never part of a board's function call
(a stale registry entry is tolerated and repaired lazily; SCALEOUT.md section 8.4).
"""

import re
from typing import NamedTuple

from service.backend.redis.session_ids import chosen_bucket, session_bucket
from store.ended import digest
from store.errors import InvalidArgument
from store.show import show

DEFAULT_PREFIX = "rk"
SLOTS = 16384

# No braces (a prefix holding "{" would become the hash tag of every key) and no spaces.
_PREFIX = re.compile(r"[A-Za-z0-9_.:\-]{1,32}")


def check_prefix(prefix: str) -> str:
    if _PREFIX.fullmatch(prefix):
        return prefix
    raise InvalidArgument(
        f"key prefix must be 1-32 characters of A-Z a-z 0-9 _ . : -, but got {show(prefix)}"
    )


class BoardKeys(NamedTuple):
    """The keys of one board, in the order the server-side functions declare them."""

    z: str
    m: str
    d: str
    cfg: str
    ev: str


def board_keys(prefix: str, board: str) -> BoardKeys:
    tag = f"{prefix}:{{{board}}}:"
    return BoardKeys(tag + "z", tag + "m", tag + "d", tag + "cfg", tag + "ev")


def idem_keys(prefix: str, board: str) -> tuple[str, str]:
    """``P:{B}:iz`` (ZSET id -> forget-after ms) and ``P:{B}:ih`` (HASH id -> fingerprint +
    first reply): the board's idempotency records (rankd.lua "Idempotency")."""
    tag = f"{prefix}:{{{board}}}:"
    return tag + "iz", tag + "ih"


class TableKeys(NamedTuple):
    """One period of one window (rankd.lua "Windows, periods and rankings"): its ZSET, member
    hash and metadata hash, the distinct-score ZSET and counts (ranking=dense only), and the
    window's period registry."""

    z: str
    m: str
    d: str
    u: str
    c: str
    r: str


def table_keys(prefix: str, board: str, window: str, period: str) -> TableKeys:
    """The "all" window's one period is the board's own z/m/d (a plain board is one table);
    another window's period ``p`` is ``P:{B}:z:<window>:<p>`` and so on. Window names are
    ``[a-z][a-z0-9_]*`` and period ids ``[A-Za-z0-9_-]``: no ``:`` in either, no collision."""
    tag = f"{prefix}:{{{board}}}:"
    if window == "all":
        return TableKeys(tag + "z", tag + "m", tag + "d", tag + "u", tag + "c", tag + "r:all")
    s = f":{window}:{period}"
    return TableKeys(
        tag + "z" + s, tag + "m" + s, tag + "d" + s, tag + "u" + s, tag + "c" + s,
        tag + "r:" + window,
    )  # fmt: skip


def registry(prefix: str) -> str:
    return f"{prefix}:boards"


def anonymous(prefix: str) -> str:
    """``P:anon``: ZSET session id -> first idle deadline of the sessions without a user, the
    count --max-anonymous-sessions is enforced on (rankd.lua rankd_anon_admit)."""
    return f"{prefix}:anon"


def secret(prefix: str) -> str:
    return f"{prefix}:secret"


def session(prefix: str, session_id: str) -> str:
    bucket = session_bucket(session_id)
    if bucket is None:
        raise InvalidArgument(f"not a session id of the redis backend: {show(session_id)}")
    return f"{prefix}:s:{{{bucket}}}:{session_id}"


def session_index(prefix: str, bucket: str) -> str:
    return f"{prefix}:x:{{{bucket}}}"


def session_channel(prefix: str, bucket: str) -> str:
    return f"{prefix}:sev:{{{bucket}}}"


def session_used(prefix: str, bucket: str, session_id: str) -> str:
    """``P:e:{T}:<digest>``: the id was used in bucket T (rankd.lua "Sessions"); the digest,
    not the id: the key names no credential."""
    return f"{prefix}:e:{{{bucket}}}:{digest(session_id):016x}"


def chosen_pointer(prefix: str, session_id: str) -> str:
    """``P:c:{C}:<digest>`` -> the bucket T of a caller-chosen id (session_ids.py)."""
    return f"{prefix}:c:{{{chosen_bucket(session_id)}}}:{digest(session_id):016x}"


def hash_tag(key: bytes) -> bytes:
    """The part of a key that decides its slot (Redis Cluster spec, "hash tags")."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:  # "{}" is no tag: the whole key is hashed
            return key[start + 1 : end]
    return key


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def key_slot(key: str | bytes) -> int:
    """The cluster slot of a key (0..16383), as CLUSTER KEYSLOT computes it."""
    raw = key.encode() if isinstance(key, str) else key
    return crc16(hash_tag(raw)) % SLOTS
