"""Recovery policy: which history is replayed, what is truncated, refused or moved aside."""

import errno
import logging
import os
import random
from pathlib import Path

import orjson
import pytest

from store.clock import ManualClock
from store.disk import datadir, frames, journal, recovery, snapshot
from store.disk.frames import CorruptData
from store.errors import SessionNotFound
from tests.store.test_journal import Recorder, recovered, write_segment
from tests.store.test_snapshot import T0, digest, drive, fresh, put, random_state


def _corrupt(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    put(path, bytes(data))


def _history(tmp_path: Path) -> tuple[ManualClock, list[dict[str, object]]]:
    """snapshot (base 2) + segments 2, 3, 4; returns the digest after each segment."""
    ks, ss, clock = random_state(21, ops=300)
    rec = Recorder(ks, ss)
    snapshot.save(tmp_path, ks, ss, base_segment=2, now=clock.now())
    states = []
    for n in (2, 3, 4):
        drive(ks, ss, clock, random.Random(n), 200)
        write_segment(tmp_path, n, rec.take())
        states.append(digest(ks, ss, clock.now()))
    return clock, states


def test_expired_at_load_counts_each_session_once(tmp_path: Path) -> None:
    """One session in the snapshot and in two journal records, expired at restart: 1, not 3.
    One deleted by the journal (purged before the crash) did not expire while down: 0."""
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    patched = ss.create(ttl=10)
    purged = ss.create(ttl=10)
    kept = ss.create(ttl=1000)
    rec = Recorder(ks, ss)
    snapshot.save(tmp_path, ks, ss, base_segment=1, now=clock.now())
    clock.advance(1)
    ss.patch(patched.id, {"step": 1})  # "sput"
    ss.patch(patched.id, {"step": 2})  # "sput"
    clock.advance(9.5)
    with pytest.raises(SessionNotFound):
        ss.get(purged.id)  # found expired before the crash: "sdel expired" is journalled
    assert patched.id in ss
    write_segment(tmp_path, 1, rec.take())
    clock.advance(60)  # down long enough for the patched session to expire too
    _, ss2, report = recovered(tmp_path, clock)
    assert patched.id not in ss2 and purged.id not in ss2 and kept.id in ss2
    assert report.expired_at_load == ss2.counters["expired_at_load"] == 1
    ss2._check()


def test_refuse_names_the_file_and_offset(tmp_path: Path) -> None:
    clock, _ = _history(tmp_path)
    seg = datadir.segment_path(tmp_path, 3)
    _corrupt(seg, 200)
    with pytest.raises(CorruptData) as info:
        recovered(tmp_path, clock)
    message = str(info.value)
    assert message.startswith(f"{seg}: frame") and "at byte offset" in message
    assert info.value.offset <= 200
    assert sorted(p.name for p in tmp_path.iterdir() if ".bad-" in p.name) == []


def test_move_aside_keeps_the_valid_prefix_of_a_damaged_segment(tmp_path: Path) -> None:
    clock, states = _history(tmp_path)
    seg3 = datadir.segment_path(tmp_path, 3)
    _corrupt(seg3, seg3.stat().st_size - 5)  # the last record of segment 3
    ks, ss, report = recovered(tmp_path, clock, on_bad_data="move-aside")
    # Segment 2 whole, segment 3 but its last record: a state that really existed.
    assert digest(ks, ss) not in (states[1], states[2])
    assert report.needs_snapshot and report.journal_segments == 1
    moved = sorted(Path(p).name.split(".bad-")[0] for p in report.moved_aside)
    assert moved == [seg3.name, datadir.segment_path(tmp_path, 4).name]
    assert [n for n, _ in datadir.segments(tmp_path)] == [2]
    assert report.next_segment == 5  # never reuse the numbers moved aside
    # Its prefix: everything of segment 3 but the damaged last record.
    ks_ref, ss_ref = fresh(clock)
    snapshot.load(datadir.snapshot_path(tmp_path), ks_ref, ss_ref)
    journal.replay(datadir.segment_path(tmp_path, 2), 2, ks_ref, ss_ref)
    bad = next(Path(p) for p in report.moved_aside if seg3.name in p)
    with pytest.raises(CorruptData):
        journal.replay(bad, 3, ks_ref, ss_ref)  # applies the prefix, then stops
    ss_ref.finish_load()
    assert digest(ks, ss) == digest(ks_ref, ss_ref)


def test_move_aside_of_a_bad_snapshot_starts_empty(tmp_path: Path) -> None:
    clock, _ = _history(tmp_path)
    _corrupt(datadir.snapshot_path(tmp_path), 100)
    ks, ss, report = recovered(tmp_path, clock, on_bad_data="move-aside")
    assert len(ks) == 0 and len(ss) == 0
    assert report.needs_snapshot and len(report.moved_aside) == 4
    assert datadir.segments(tmp_path) == [] and not datadir.snapshot_path(tmp_path).exists()
    assert all(Path(p).exists() for p in report.moved_aside)  # moved, never deleted
    assert report.next_segment == 5


def test_session_extended_by_the_journal_survives_a_stale_snapshot_deadline(
    tmp_path: Path,
) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    kept = ss.create(ttl=10)
    dropped = ss.create(ttl=10)
    rec = Recorder(ks, ss)
    snapshot.save(tmp_path, ks, ss, base_segment=1, now=clock.now())
    clock.advance(8)
    ss.get(kept.id)  # touch: now idle until T0 + 18
    write_segment(tmp_path, 1, rec.take())
    clock.advance(4)  # T0 + 12: the snapshot says both expired, the journal says one lives
    _, ss2, report = recovered(tmp_path, clock)
    assert kept.id in ss2 and dropped.id not in ss2
    assert report.expired_at_load == 1
    ss2._check()


def test_orphan_segments_after_a_failure_are_moved_aside(tmp_path: Path) -> None:
    """Segment 2 tore (a failed write), 3 was started for a snapshot that never completed."""
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    ks.write("b", "kept", 1)
    write_segment(tmp_path, 1, rec.take())
    ks.write("b", "torn", 2)
    write_segment(tmp_path, 2, rec.take()[:-3])
    ks.write("b", "orphan", 3)
    write_segment(tmp_path, 3, rec.take(), flags=journal.FLAG_AFTER_GAP)
    write_segment(tmp_path, 4, b"")
    ks2, _, report = recovered(tmp_path, clock)
    assert [e["member"] for e in ks2.get("b").top()] == ["kept"]
    assert len(report.moved_aside) == 2 and report.next_segment == 5


def test_a_tear_in_the_middle_without_a_gap_mark_is_refused(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    ks.write("b", "a", 1)
    write_segment(tmp_path, 1, rec.take()[:-3])
    ks.write("b", "b", 2)
    write_segment(tmp_path, 2, rec.take())
    with pytest.raises(CorruptData, match="torn record in the middle of the journal"):
        recovered(tmp_path, clock)


def test_a_gap_segment_that_is_the_snapshot_base_is_replayed(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    ks.write("b", "a", 1)
    rec.take()
    snapshot.save(tmp_path, ks, ss, base_segment=3, now=T0)
    ks.write("b", "b", 2)
    write_segment(tmp_path, 3, rec.take(), flags=journal.FLAG_AFTER_GAP)
    ks2, ss2, _ = recovered(tmp_path, clock)
    assert digest(ks2, ss2) == digest(ks, ss)


def test_history_must_start_somewhere(tmp_path: Path) -> None:
    write_segment(tmp_path, 5, b"")  # no snapshot holds segments 1..4
    with pytest.raises(CorruptData, match="missing"):
        recovered(tmp_path, ManualClock(T0))


def test_big_loads_log_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    for b in range(30):
        ks.board_for_write(f"b{b}").write_many([(f"m{i}", i, None) for i in range(100)])
    snapshot.save(tmp_path, ks, ss, base_segment=1, now=T0)
    size = datadir.snapshot_path(tmp_path).stat().st_size
    monkeypatch.setattr(recovery, "PROGRESS_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="rankd.recovery"):
        recovered(tmp_path, clock)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("loading snapshot: ") and "/s)" in line for line in lines)
    assert any("3000 entries" in line for line in lines)
    tail = f"% of {size / 1024:.1f} KiB done"
    percents = [int(line.rsplit("recovery ", 1)[1][: -len(tail)]) for line in lines if tail in line]
    assert len(percents) > 10 and percents == sorted(percents) and 90 <= percents[-1] < 100


def _sampling(samples: list[tuple[str, int, int, int]]) -> recovery.RecoveryProgress:
    """A progress whose clock records its state each time it is read, i.e. at every report."""

    made: list[recovery.RecoveryProgress] = []

    def clock() -> float:
        for p in made:
            samples.append((p.phase, p.bytes_done, p.bytes_total, p.records))
        return 0.0

    made.append(recovery.RecoveryProgress(clock))
    return made[0]


def test_progress_counts_bytes_while_replaying(tmp_path: Path) -> None:
    """Snapshot + a journal of 200k records: the bytes done move inside the segment (the
    reports every 65,536 records), never pass the total, and end equal to the files' size."""
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    for k in range(20):
        ks.board_for_write("a").write_many([(f"m{k}.{i}", i, None) for i in range(1000)])
    snapshot.save(tmp_path, ks, ss, base_segment=1, now=T0)
    rec = Recorder(ks, ss)
    for i in range(200_000):
        ks.write("b", f"p{i % 5000}", i)
    seg = write_segment(tmp_path, 1, rec.take())
    snap = datadir.snapshot_path(tmp_path)
    files = snap.stat().st_size + seg.stat().st_size
    samples: list[tuple[str, int, int, int]] = []
    progress = _sampling(samples)
    ks2, ss2 = fresh(clock)
    recovery.recover(tmp_path, ks2, ss2, progress=progress)
    in_journal = [s for s in samples if s[0] == "journal"]
    assert len(in_journal) == 3  # records 65,536, 131,072 and 196,608
    assert [s[3] for s in in_journal] == [65_536, 131_072, 196_608]
    done = [s[1] for s in samples]
    assert done == sorted(done)  # never goes back
    assert all(s[2] == files for s in samples if s[0] != "idle")  # planned up front, exactly
    assert snap.stat().st_size < in_journal[0][1] < in_journal[-1][1] < files
    assert progress.bytes_done == progress.bytes_total == files
    assert (progress.phase, progress.running, progress.percent()) == ("done", False, 100.0)
    assert progress.records == 200_001  # the writes and the creation of board "b"
    assert len(ks2.get("b")) == 5000


def test_progress_total_grows_on_fallback(tmp_path: Path) -> None:
    """A damaged newest snapshot: the previous generation and its longer journal are added
    to the plan, so the total is every byte recovery read, and it still ends at 100%."""
    clock, _ = _history(tmp_path)
    newest = datadir.snapshot_path(tmp_path)
    os.replace(newest, datadir.previous_snapshot_path(tmp_path))
    ks, ss, _ = random_state(21, ops=300)  # any valid state: it is damaged below
    snapshot.save(tmp_path, ks, ss, base_segment=3, now=clock.now())
    _corrupt(newest, newest.stat().st_size - 3)
    read = sum(p.stat().st_size for p in tmp_path.iterdir())
    progress = recovery.RecoveryProgress()
    ks2, ss2 = fresh(clock)
    report = recovery.recover(tmp_path, ks2, ss2, on_bad_data="refuse", progress=progress)
    assert report.fell_back
    assert progress.bytes_total == progress.bytes_done == read
    assert progress.percent() == 100.0


def test_the_data_directory_has_one_owner(tmp_path: Path) -> None:
    fd = datadir.open_dir(tmp_path)
    try:
        with pytest.raises(datadir.DataDirLocked, match="in use by another rankd"):
            datadir.open_dir(tmp_path)
    finally:
        os.close(fd)
    os.close(datadir.open_dir(tmp_path))  # released with the descriptor


# -- the tail policy (store/disk/frames.py) ----------------------------------------------


def _one_segment(tmp_path: Path) -> tuple[ManualClock, Path, bytes, dict[str, object]]:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    for i in range(30):
        ks.write("b", f"m{i}", i)
    path = write_segment(tmp_path, 1, rec.take())
    return clock, path, path.read_bytes(), digest(ks, ss, clock.now())


def test_stale_non_zero_blocks_after_the_last_record_are_a_torn_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A power cut can leave the file longer than what reached the disk, the rest stale data
    of an earlier file: nothing valid follows, so it is cut -- loudly, with the byte count."""
    clock, path, data, expected = _one_segment(tmp_path)
    # The block holding the last record was written whole (zeros after the record); the next
    # blocks were allocated but never written: they read back as whatever they held before.
    stale = bytes(-len(data) % 4096) + random.Random(7).randbytes(2 * 4096)
    put(path, data + stale)
    with caplog.at_level(logging.WARNING, logger="rankd.recovery"):
        ks, ss, report = recovered(tmp_path, clock)
    assert digest(ks, ss) == expected and report.truncated_bytes == len(stale)
    assert path.read_bytes() == data
    assert f"torn tail of {len(stale)} bytes after byte offset {len(data)}" in caplog.text


def test_garbage_followed_by_a_valid_frame_is_corruption(tmp_path: Path) -> None:
    clock, path, data, _ = _one_segment(tmp_path)
    valid = frames.encode(journal.BDROP, b'["zz"]')
    put(path, data + b"\x01" * 40 + valid)
    with pytest.raises(CorruptData, match="frame header checksum mismatch") as info:
        recovered(tmp_path, clock)
    assert info.value.offset == len(data)
    assert path.read_bytes() == data + b"\x01" * 40 + valid  # a refusal changes nothing


def test_damage_no_power_cut_can_leave_is_corruption_even_at_the_end(tmp_path: Path) -> None:
    """The last record's body damaged inside one 512-byte sector: the disk wrote that sector
    whole, with our valid header in it, so the body is damage -- refused, not cut."""
    clock, path, data, _ = _one_segment(tmp_path)
    damaged = bytearray(data)
    damaged[-2] ^= 0x01
    put(path, bytes(damaged))
    with pytest.raises(CorruptData, match="frame checksum mismatch"):
        recovered(tmp_path, clock)
    assert path.read_bytes() == bytes(damaged)


# -- failures that are not damage --------------------------------------------------------------


def test_an_io_error_while_loading_moves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock, _ = _history(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())

    def eio(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(snapshot, "open", eio, raising=False)
    with pytest.raises(OSError, match="Input/output error"):
        recovered(tmp_path, clock, on_bad_data="move-aside")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_out_of_memory_inside_the_json_decoder_is_not_corruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orjson reports a failed allocation as a JSONDecodeError; the record decodes fine once
    memory is back, so it is MemoryError, never a reason to move the snapshot aside."""
    clock, _ = _history(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    real = orjson.loads
    calls = 0

    def starved(data: bytes) -> object:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise orjson.JSONDecodeError("Not enough memory to allocate buffer for parsing", "", 0)
        return real(data)

    monkeypatch.setattr(snapshot.orjson, "loads", starved)  # type: ignore[attr-defined]
    with pytest.raises(MemoryError, match="out of memory decoding"):
        recovered(tmp_path, clock, on_bad_data="move-aside")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
