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

import pytest

from store import datadir, snapshot
from store.clock import ManualClock
from store.frames import CorruptData, DataError, FutureVersion
from store.keyspace import Keyspace
from store.recovery import recover
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
            board = ks.boards.get(name)
            if board is not None and len(board):
                member = next(itertools.islice(board.dump(), rng.randrange(len(board)), None))[0]
                board.remove(member)
        elif r < 0.63:
            if name in ks.boards:
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
    n = snapshot.ENTRIES_PER_FRAME * 2 + 7
    board = ks.board_for_write("big")
    board.write_many([(f"p{i}", i % 97, {"i": i} if i % 1000 == 0 else None) for i in range(999)])
    for i in range(999, n):
        board.write(f"p{i}", i % 97)
    for _ in range(snapshot.SESSIONS_PER_FRAME + 3):
        ss.create(user="u", data={"x": 1})
    ks2, ss2 = load(save(tmp_path, ks, ss), clock)
    assert digest(ks2, ss2) == digest(ks, ss)
    assert len(ks2.get("big")) == n


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
    assert "version 2 is newer" in str(info.value)


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
    from store.frames import HEADER, HEADER_SIZE

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
