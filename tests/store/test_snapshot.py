"""Snapshots: exact round trips of random state, atomic saves, and every kind of damage refused.

Also home of the state helpers the journal and recovery tests import (``random_state``,
``digest``, ``fresh``): one definition of "the same state" for every persistence test.
"""

import contextlib
import errno
import itertools
import os
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from store.clock import ManualClock
from store.disk import datadir, snapshot
from store.disk.frames import CorruptData, DataError, FutureVersion
from store.disk.recovery import recover
from store.keyspace import Keyspace
from store.sessions import SessionStore

COMBOS = list(itertools.product(("desc", "asc"), ("best", "latest", "sum"), ("first", "member")))
T0 = 1_700_000_000.0


def fresh(clock: ManualClock) -> tuple[Keyspace, SessionStore]:
    return Keyspace(), SessionStore(clock, max_sessions_per_user=10_000)


def _score(rng: random.Random) -> int | float:
    kind = rng.random()
    if kind < 0.5:
        return rng.randint(0, 20)  # many ties
    if kind < 0.7:
        return rng.choice([-1, 1]) * rng.randint(0, 2**63 - 1)  # the full exact-int range
    if kind < 0.95:
        return round(rng.uniform(-1e6, 1e6), rng.randint(0, 6))
    return rng.choice([0.1, 1e-300, -2.5e18, 2**53 + 1, -(2**53) - 1])


def _member(rng: random.Random, n: int) -> str:
    base = f"m{n}"
    return rng.choice([base, base + "é", "名" + base, base + " x", base.upper()])


def drive(ks: Keyspace, ss: SessionStore, clock: ManualClock, rng: random.Random, ops: int) -> None:
    """Random mutations of every kind (each emits the events a journal records)."""
    boards = [f"b{i}" for i in range(len(COMBOS))]
    sids: list[str] = []
    for _ in range(ops):
        r = rng.random()
        name = rng.choice(boards)
        if r < 0.55:
            meta = {"lvl": rng.randint(1, 9), "tag": "é"} if rng.random() < 0.3 else None
            with contextlib.suppress(ValueError):  # a sum past 2**63: refused, nothing changed
                ks.write(name, _member(rng, rng.randint(0, 60)), _score(rng), meta)
        elif r < 0.62:
            board = ks.find(name)
            if board is not None and len(board):
                member = next(itertools.islice(board.dump(), rng.randrange(len(board)), None))[0]
                board.remove(member)
        elif r < 0.63:
            if ks.find(name) is not None:
                ks.drop(name)
                options = zip(("order", "update", "ties"), COMBOS[int(name[1:])], strict=True)
                ks.configure(name, dict(options))
        elif r < 0.75:
            s = ss.create(
                user=rng.choice([None, "ann", "bob", "名"]),
                data={"n": rng.randint(0, 99), "f": rng.random()},
                ttl=rng.randint(1, 600),
                max_lifetime=rng.randint(60, 3600),
            )
            sids.append(s.id)
        elif sids:
            sid = rng.choice(sids)
            try:
                if r < 0.85:
                    ss.get(sid)
                elif r < 0.92:
                    ss.patch(sid, {"n": rng.randint(0, 99), "gone": None})
                elif r < 0.95:
                    sids.append(ss.rotate(sid).id)
                else:
                    ss.delete(sid)
            except KeyError:
                pass  # expired or deleted meanwhile
        if rng.random() < 0.05:
            clock.advance(rng.uniform(0, 30))


def random_state(seed: int, ops: int = 2000) -> tuple[Keyspace, SessionStore, ManualClock]:
    rng = random.Random(seed)
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    for i, (order, update, ties) in enumerate(COMBOS):
        ks.configure(f"b{i}", {"order": order, "update": update, "ties": ties})
    drive(ks, ss, clock, rng, ops)
    return ks, ss, clock


def digest(ks: Keyspace, ss: SessionStore, now: float | None = None) -> dict[str, Any]:
    """Everything observable, exactly: tie order (dump is rank order), seqs, floats bit-exact.

    ``now``: leave out sessions expired at that time (a load drops them).
    """
    boards = {
        b.name: (b.config.as_dict(), b.seq, [(m, repr(s), q, md) for m, s, q, md in b.dump()])
        for b in ks
    }
    sessions = sorted(
        (
            s.id,
            s.user,
            repr(s.data),
            repr(s.created_at),
            s.ttl,
            repr(s.idle_deadline),
            repr(s.max_expires_at),
            s.version,
        )
        for s in ss.sessions()
        if now is None or s.expires_at > now
    )
    return {"boards": boards, "sessions": sessions}


def save(directory: Path, ks: Keyspace, ss: SessionStore, base: int = 1) -> Path:
    snapshot.save(directory, ks, ss, base_segment=base, now=T0)
    return datadir.snapshot_path(directory)


def put(path: Path, data: bytes) -> None:
    """Replace a file's content fast: write_bytes' O_TRUNC makes ext4 flush (~3 ms a call),
    which thousands of damage cases cannot afford."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def load(path: Path, clock: ManualClock) -> tuple[Keyspace, SessionStore]:
    ks, ss = fresh(clock)
    snapshot.load(path, ks, ss)
    ss.finish_load()
    return ks, ss


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_is_exact(tmp_path: Path, seed: int) -> None:
    ks, ss, clock = random_state(seed)
    assert sum(len(b) for b in ks) > 300 and len(ss) > 50
    path = save(tmp_path, ks, ss)
    ks2, ss2 = load(path, clock)
    ks2._check()
    ss2._check()
    assert digest(ks2, ss2) == digest(ks, ss, clock.now())
    # Loaded boards keep working exactly like the originals (tie sequence continues).
    for b, b2 in zip(ks, ks2, strict=True):
        assert b.write("newcomer", 5) == b2.write("newcomer", 5)
        assert b.rank_for_score(5) == b2.rank_for_score(5)


def test_every_option_combination_and_metadata(tmp_path: Path) -> None:
    ks, ss, clock = random_state(42, ops=4000)
    assert {tuple(b.config.as_dict().values()) for b in ks} == set(COMBOS)
    assert any(md for b in ks for *_, md in b.dump())
    ks2, ss2 = load(save(tmp_path, ks, ss), clock)
    assert digest(ks2, ss2) == digest(ks, ss, clock.now())


def test_empty_state_and_empty_boards(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    ks2, ss2 = load(save(tmp_path, ks, ss), clock)
    assert digest(ks2, ss2) == digest(ks, ss)
    ks.configure("empty", {"order": "asc"})
    ks2, ss2 = load(save(tmp_path, ks, ss), clock)
    assert digest(ks2, ss2) == digest(ks, ss)


def test_multi_frame_boards(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    n = snapshot.KEYS_PER_FRAME * 2 + 7
    board = ks.board_for_write("big")
    board.write_many([(f"p{i}", i % 97, {"i": i} if i % 1000 == 0 else None) for i in range(999)])
    for i in range(999, n):
        board.write(f"p{i}", i % 97)
    for _ in range(snapshot.SESSIONS_PER_FRAME + 3):
        ss.create(user="u", data={"x": 1})
    ks2, ss2 = load(save(tmp_path, ks, ss), clock)
    assert digest(ks2, ss2) == digest(ks, ss)
    assert len(ks2.get("big")) == n


def test_metadata_frames_are_cut_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "METADATA_FRAME_BYTES", 200)
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    ks.write_many("m", [(f"p{i}", i, {"i": i, "pad": "x" * (i % 90)}) for i in range(300)])
    path = save(tmp_path, ks, ss)
    codes = [code for code, _ in _records(path.read_bytes())]
    assert codes.count(snapshot.METADATA) > 50
    ks2, ss2 = load(path, clock)
    ks2._check()
    assert digest(ks2, ss2) == digest(ks, ss)


def test_deadlines_are_absolute_and_exact(tmp_path: Path) -> None:
    clock = ManualClock(T0 + 0.123456)
    ks, ss = fresh(clock)
    short = ss.create(ttl=10)
    long = ss.create(ttl=100, max_lifetime=50)
    path = save(tmp_path, ks, ss)
    clock.advance(10.001)  # down for 10.001 s: the short session died while we were away
    ks2, ss2 = fresh(clock)
    snapshot.load(path, ks2, ss2)
    ss2.finish_load()
    assert short.id not in ss2 and long.id in ss2
    assert ss2.counters["expired_at_load"] == 1
    got = ss2.get(long.id, touch=False)
    assert (got.idle_deadline, got.max_expires_at) == (long.idle_deadline, long.max_expires_at)
    assert got.expires_at == T0 + 0.123456 + 50  # to the microsecond, not just the second


# -- atomic save -------------------------------------------------------------------------------


def _broken(name: str, err: int) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(err, os.strerror(err))

    return fail


@pytest.mark.parametrize(
    ("function", "err"),
    [("write", errno.ENOSPC), ("fsync", errno.EIO), ("replace", errno.EIO)],
)
def test_failed_save_keeps_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str, err: int
) -> None:
    ks, ss, clock = random_state(1, ops=300)
    save(tmp_path, ks, ss)
    before = digest(*load(datadir.snapshot_path(tmp_path), clock))
    ks.write("b0", "late", 1)
    with monkeypatch.context() as m:
        m.setattr(os, function, _broken(function, err))
        with pytest.raises(OSError) as info:
            save(tmp_path, ks, ss)
    assert info.value.errno == err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.rkd"]  # temp file gone
    assert digest(*load(datadir.snapshot_path(tmp_path), clock)) == before


def test_a_directory_in_the_way_fails_the_save(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    datadir.snapshot_path(tmp_path).mkdir()
    with pytest.raises(OSError):
        save(tmp_path, ks, ss)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.rkd"]


def test_leftover_temp_files_are_removed_at_start(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    save(tmp_path, ks, ss)
    (tmp_path / "snapshot.rkd.tmp-12345").write_bytes(b"half a snapshot")
    report = recover(tmp_path, *fresh(clock))
    assert report.removed_temp_files == 1
    assert not (tmp_path / "snapshot.rkd.tmp-12345").exists()


# -- damage ------------------------------------------------------------------------------------


def test_future_version_is_refused(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    path = save(tmp_path, *fresh(clock))
    data = bytearray(path.read_bytes())
    head = struct.pack("<8sI", snapshot.MAGIC, snapshot.VERSION + 1)
    data[:16] = head + zlib.crc32(head).to_bytes(4, "little")
    path.write_bytes(data)
    with pytest.raises(FutureVersion) as info:
        load(path, clock)
    assert str(path) in str(info.value) and "byte offset 8" in str(info.value)
    assert f"version {snapshot.VERSION + 1} is newer" in str(info.value)


def test_not_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.rkd"
    path.write_bytes(b'{"boards": []}\n')
    with pytest.raises(CorruptData, match="bad magic"):
        load(path, ManualClock(T0))


def test_every_truncation_is_refused(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rng = random.Random(3)
    for name in ("a", "b"):
        for i in range(15):
            ks.write(name, f"m{i}", _score(rng), {"i": i} if i % 4 == 0 else None)
    for i in range(8):
        ss.create(user="u", data={"i": i})
    data = save(tmp_path, ks, ss).read_bytes()
    cut = tmp_path / "cut.rkd"
    for n in range(len(data)):
        put(cut, data[:n])
        with pytest.raises(CorruptData):
            load(cut, clock)
    put(cut, data + b"\0")
    with pytest.raises(CorruptData, match="after the END record"):
        load(cut, clock)


def test_random_corruption_never_loads_wrong_data(tmp_path: Path) -> None:
    """2,000 seeded cases of 1-2 changed bytes: a clean DataError every time, or (if the
    change were somehow harmless) exactly the original state -- never a crash or wrong data.
    """
    ks, ss, clock = random_state(7, ops=250)
    data = save(tmp_path, ks, ss).read_bytes()
    expected = digest(ks, ss, clock.now())
    rng = random.Random(2024)
    bad = tmp_path / "bad.rkd"
    outcomes = {"refused": 0, "same": 0}
    for _ in range(2000):
        damaged = bytearray(data)
        for _ in range(rng.choice((1, 2))):
            i = rng.randrange(len(damaged))
            damaged[i] = (damaged[i] + rng.randint(1, 255)) % 256
        put(bad, bytes(damaged))
        try:
            got = digest(*load(bad, clock))
        except DataError as exc:
            assert str(bad) in str(exc) and "byte offset" in str(exc)
            outcomes["refused"] += 1
        else:
            assert got == expected
            outcomes["same"] += 1
    assert outcomes["refused"] >= 1990, outcomes


def test_a_reordered_frame_is_caught_by_the_file_checksum(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    for _ in range(snapshot.SESSIONS_PER_FRAME * 2):
        ss.create(data={"x": 1})
    data = save(tmp_path, ks, ss).read_bytes()
    # Swap the two SESSIONS frames: each frame is intact, only their order changed.
    from store.disk.frames import HEADER, HEADER_SIZE

    spans = []
    at = snapshot.HEADER_SIZE
    while at < len(data):
        length = HEADER.unpack_from(data, at)[0]
        spans.append((at, at + HEADER_SIZE + length, data[at + HEADER_SIZE]))
        at += HEADER_SIZE + length
    s1, s2 = [(a, b) for a, b, code in spans if code == snapshot.SESSIONS]
    swapped = data[: s1[0]] + data[s2[0] : s2[1]] + data[s1[0] : s1[1]] + data[s2[1] :]
    assert len(swapped) == len(data) and swapped != data
    path = tmp_path / "swapped.rkd"
    path.write_bytes(swapped)
    with pytest.raises(CorruptData, match="whole-file checksum"):
        load(path, clock)


# -- the on-disk key layout --------------------------------------------------------------------


def _pinned_state() -> Keyspace:
    ks = Keyspace()
    ks.configure("d1", {"order": "desc", "ties": "first"})
    ks.write("d1", "alice", 7)
    ks.write("d1", "bob", 2**53 + 1)
    ks.write("d1", "chloé", -2.5, {"lvl": 3})
    ks.configure("a2", {"order": "asc", "ties": "member"})
    ks.write("a2", "zed", 0.1)
    ks.write("a2", "amy", -7)
    return ks


def test_sort_keys_are_pinned_to_literal_bytes() -> None:
    """Snapshots store raw sort keys, so store/sortkey.py's layout is an on-disk format: if
    this fails, the encoding changed and old snapshots would load as wrong scores. Bump
    snapshot.VERSION (with a conversion on load) instead of editing these bytes.
    """
    ks = _pinned_state()
    assert [k.hex(" ", -2) for k in ks.get("d1").dump_keys()] == [
        # NUM: -(2**53 + 1) on a desc board; its float is -2**53, the correction -1 -> 7fff
        "3cbf ffff ffff ffff 7fff 0000 0000 0002 626f 6200",  # seq 2, "bob", int
        # NUM(-7) = 3fe3ffffffffffff 8000 (store/sortkey.py's worked example)
        "3fe3 ffff ffff ffff 8000 0000 0000 0001 616c 6963 6500",  # seq 1, "alice", int
        "c004 0000 0000 0000 8000 0000 0000 0003 6368 6c6f c3a9 01",  # 2.5, "chloé", float
    ]
    assert [k.hex(" ", -2) for k in ks.get("a2").dump_keys()] == [
        "3fe3 ffff ffff ffff 8000 616d 7900",  # -7 asc, no seq on ties=member, "amy", int
        "bfb9 9999 9999 999a 8000 7a65 6401",  # 0.1, "zed", float
    ]


# A version-1 file (before ENDED records): it must load as ever.
PINNED_V1 = bytes.fromhex(
    "52414e4b44534e50010000009592f06a"  # MAGIC, version 1, header crc
    "2d0000001d13563ae519af9101"  # frame header + META
    "7b22637265617465645f6174223a313730303030303030302e302c22626173655f7365676d656e74223a337d"
    "3d000000b6401d34ea9db1ed02"  # BOARD d1: config, seq 3, 3 keys, 1 metadata
    "5b226431222c7b226f72646572223a2264657363222c22757064617465223a2262657374222c2274696573"
    "223a226669727374227d2c332c332c315d"
    "17000000b4642490882f75cf06"  # METADATA [["chloé", {"lvl": 3}]]
    "5b5b2263686c6fc3a9222c7b226c766c223a337d5d5d"
    "4c000000ee8e129ac30235ae05"  # KEYS: count 3, lengths 20 22 23, the keys
    "030000001400160017003cbfffffffffffff7fff000000000002626f62003fe3ffffffffffff800000000000"
    "0001616c69636500c004000000000000800000000000000363686c6fc3a901"
    "3d000000e34dd43fa6445094025b226132222c7b226f72646572223a22617363222c22757064617465223a"
    "2262657374222c2274696573223a226d656d626572227d2c322c322c305d"  # BOARD a2
    "250000003c4bf84673195c5105020000000e000e003fe3ffffffffffff8000616d7900bfb999999999999a"
    "80007a656401"  # KEYS
    "3700000024caa6a3cf47c0ee7f7b22626f61726473223a322c22656e7472696573223a352c227365737369"
    "6f6e73223a302c22637263223a333735343433323038367d"  # END
)


def test_the_whole_file_format_is_pinned(tmp_path: Path) -> None:
    """A golden file: any change to header, frames, record layout or key encoding shows here.
    Version 2 differs from version 1 in the header and END's "ended" count only."""
    ks = _pinned_state()
    snapshot.save(tmp_path, ks, SessionStore(ManualClock(T0)), base_segment=3, now=T0)
    v1_end = PINNED_V1.rindex(bytes.fromhex("3700000024caa6a3cf47c0ee7f"))
    expected = (
        bytes.fromhex("52414e4b44534e50020000007b3d4578")  # MAGIC, version 2, header crc
        + PINNED_V1[16:v1_end]
        + bytes.fromhex(
            "41000000c34fabdcd26dbd5d7f7b22626f61726473223a322c22656e7472696573223a352c2273657373"
            "696f6e73223a302c22656e646564223a302c22637263223a333735343433323038367d"
        )  # END, with "ended": 0
    )
    assert datadir.snapshot_path(tmp_path).read_bytes() == expected


def test_a_version_1_file_still_loads(tmp_path: Path) -> None:
    datadir.snapshot_path(tmp_path).write_bytes(PINNED_V1)
    ks, ss = Keyspace(), SessionStore(ManualClock(T0))
    snapshot.load(datadir.snapshot_path(tmp_path), ks, ss)
    want = _pinned_state()
    for name in ("d1", "a2"):
        assert list(ks.get(name).dump_keys()) == list(want.get(name).dump_keys())
    assert len(ss) == 0 and len(ss.ended) == 0


# -- well-checksummed records that do not fit together -----------------------------------------


def _records(data: bytes) -> list[tuple[int, bytes]]:
    from store.disk.frames import HEADER

    out, at = [], snapshot.HEADER_SIZE
    while at < len(data):
        (length,) = HEADER.unpack_from(data, at)[:1]
        body = data[at + 12 : at + 12 + length]
        out.append((body[0], body[1:]))
        at += 12 + length
    return out


def _rebuild(records: list[tuple[int, bytes]]) -> bytes:
    """A file with valid frame checksums and a valid END crc around these records."""
    from store.disk.frames import encode

    data = snapshot.header() + b"".join(encode(c, p) for c, p in records[:-1])
    end = orjson.loads(records[-1][1])
    end["crc"] = zlib.crc32(data)
    return data + encode(snapshot.END, orjson.dumps(end))


def _keys_payload(*keys: bytes) -> bytes:
    return snapshot.encode_keys(list(keys))


ALICE = bytes.fromhex("3fe3ffffffffffff8000000000000001") + b"alice\x00"
BOB = bytes.fromhex("3cbfffffffffffff7fff000000000002") + b"bob\x00"
CHLOE = bytes.fromhex("c0040000000000008000000000000003") + "chloé".encode() + b"\x01"


@pytest.mark.parametrize(
    ("code", "payload", "reason"),
    [
        (snapshot.KEYS, _keys_payload(BOB, ALICE, BOB[:-4] + b"alice\x00"), "appears twice"),
        (snapshot.KEYS, _keys_payload(BOB, ALICE, CHLOE[:16] + b"\x01"), "too short"),
        (snapshot.KEYS, _keys_payload(BOB, ALICE, CHLOE[:16] + b"\xff\x01"), "utf-8"),
        (snapshot.KEYS, _keys_payload(BOB, ALICE, CHLOE) + b"x", "add up to"),
        (snapshot.KEYS, _keys_payload(BOB, ALICE, CHLOE)[:-1], "add up to"),
        (snapshot.KEYS, _keys_payload(BOB, ALICE, CHLOE, CHLOE), "more keys"),
        (snapshot.KEYS, b"\x05\x00\x00\x00\x01", "keys declared"),
        (snapshot.KEYS, b"\x01", "keys declared"),
        (snapshot.METADATA, b'[["nobody", {"lvl": 1}]]', "not on the board"),
        (snapshot.METADATA, b'[["chlo\xc3\xa9", 5]]', "not a JSON object"),
        (snapshot.METADATA, b'[["chlo\xc3\xa9", {}], ["alice", {}]]', "metadata count"),
        (snapshot.METADATA, b'{"chlo\xc3\xa9": {}}', "malformed METADATA"),
        (snapshot.BOARD, b'["d1", {"order": "desc"}, 3, 3, 0]', "expected board 'd1''s KEYS"),
        (snapshot.BOARD, b'["d1", {"order": "desc"}, 3, 3, 2]', "expected board 'd1''s METADATA"),
        (snapshot.BOARD, b'["d1", {"order": "desc"}, 3, -1, 1]', "malformed BOARD"),
    ],
)
def test_records_that_do_not_fit_together_are_refused(
    tmp_path: Path, code: int, payload: bytes, reason: str
) -> None:
    """What the checksums cannot catch (a writer bug, a hand-made file) is still refused."""
    path = save(tmp_path, _pinned_state(), SessionStore(ManualClock(T0)))
    records = _records(path.read_bytes())
    assert load(path, ManualClock(T0))  # intact, it loads
    at = next(i for i, (c, _) in enumerate(records) if c == code)
    records[at] = (code, payload)
    put(path, _rebuild(records))
    with pytest.raises(CorruptData) as info:
        load(path, ManualClock(T0))
    assert reason.lower() in str(info.value).lower()
    assert str(path) in str(info.value) and "byte offset" in str(info.value)


def test_ended_ids_survive_a_snapshot_and_stay_refused(tmp_path: Path) -> None:
    """Ended ids (store/ended.py) are saved as digests with their refused-until times, more
    than one ENDED frame's worth, and refused after a load; a live session is not."""
    from store.errors import SessionEnded

    clock = ManualClock(T0)
    ss = SessionStore(clock, max_ttl=3600)
    chosen = [f"framework-chosen-id-{i:020d}" for i in range(snapshot.ENDED_PER_FRAME + 5)]
    for sid in chosen:
        ss.delete(ss.create(sid=sid).id)
    alive = ss.create(sid="x" * 40)
    assert len(ss.ended) == len(chosen)
    snapshot.save(tmp_path, Keyspace(), ss, base_segment=1, now=clock.now())
    clock.advance(60)
    loaded = SessionStore(clock, max_ttl=3600)
    stats = snapshot.load(datadir.snapshot_path(tmp_path), Keyspace(), loaded)
    assert stats.sessions == 1 and len(loaded.ended) == len(chosen)
    for sid in (chosen[0], chosen[-1]):
        with pytest.raises(SessionEnded):
            loaded.create(sid=sid)
    assert loaded.get(alive.id).id == alive.id
    clock.advance(3600)  # the window is over: the id may be used again
    assert loaded.create(sid=chosen[0]).id == chosen[0]
    loaded._check()
