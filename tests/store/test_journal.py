"""Journal segments: exact replay, idempotence, torn tails at every offset, damage refused."""

import random
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from store.clock import ManualClock
from store.disk import datadir, frames, journal, snapshot
from store.disk.frames import CorruptData, DataError, FutureVersion
from store.disk.recovery import recover
from store.keyspace import Keyspace
from store.sessions import SessionStore
from tests.store.test_snapshot import T0, digest, drive, fresh, put, random_state


class Recorder:
    """What service/backend/persistence.py does with events, minus the I/O: frames in a buffer."""

    def __init__(self, ks: Keyspace, ss: SessionStore) -> None:
        self.buf = bytearray()
        self.ends: list[int] = []  # offset just past each record, relative to the buffer
        ks.observers.append(self.on_event)
        ss.observers.append(self.on_event)

    def on_event(self, event: tuple[Any, ...]) -> None:
        journal.append_event(self.buf, event)
        self.ends.append(len(self.buf))

    def take(self) -> bytes:
        data, self.buf, self.ends = bytes(self.buf), bytearray(), []
        return data


def write_segment(directory: Path, number: int, records: bytes, flags: int = 0) -> Path:
    path = datadir.segment_path(directory, number)
    put(path, journal.header(number, flags) + records)
    return path


def recovered(directory: Path, clock: ManualClock, **kwargs: Any) -> tuple[Any, Any, Any]:
    ks, ss = fresh(clock)
    report = recover(directory, ks, ss, **kwargs)
    return ks, ss, report


def test_replay_from_empty_is_exact(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    drive(ks, ss, clock, random.Random(1), 1500)
    write_segment(tmp_path, 1, rec.take())
    ks2, ss2, report = recovered(tmp_path, clock)
    ks2._check()
    ss2._check()
    assert digest(ks2, ss2) == digest(ks, ss, clock.now())
    assert report.journal_records > 1000 and report.next_segment == 2


def test_snapshot_plus_the_segment_after_it_is_exact(tmp_path: Path) -> None:
    ks, ss, clock = random_state(5, ops=800)
    rec = Recorder(ks, ss)
    snapshot.save(tmp_path, ks, ss, base_segment=4, now=clock.now())
    drive(ks, ss, clock, random.Random(6), 800)
    write_segment(tmp_path, 4, rec.take())
    write_segment(tmp_path, 3, b"")  # obsolete: below the snapshot's base
    ks2, ss2, report = recovered(tmp_path, clock)
    assert digest(ks2, ss2) == digest(ks, ss, clock.now())
    assert not datadir.segment_path(tmp_path, 3).exists()
    assert report.snapshot_base == 4 and report.next_segment == 5


def test_records_are_idempotent(tmp_path: Path) -> None:
    """The whole history replayed over a snapshot taken half-way still gives the exact state:
    a record states a result, so applying one the snapshot already holds changes nothing."""
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    drive(ks, ss, clock, random.Random(8), 700)
    snapshot.save(tmp_path, ks, ss, base_segment=1, now=clock.now())
    drive(ks, ss, clock, random.Random(9), 700)
    write_segment(tmp_path, 1, rec.take())
    ks2, ss2, _ = recovered(tmp_path, clock)
    assert digest(ks2, ss2) == digest(ks, ss, clock.now())


def _states_after_each_record(data: bytes, ends: list[int], clock: ManualClock) -> list[Any]:
    """digest after 0, 1, ... len(ends) records, by applying them one at a time."""
    ks, ss = fresh(clock)
    out = [digest(ks, ss, clock.now())]
    at = 0
    for end in ends:
        body = data[at + frames.HEADER_SIZE : end]
        journal.apply_record(body[0], body[1:], ks, ss)
        at = end
        out.append(digest(ks, ss, clock.now()))
    return out


def test_torn_tail_at_every_offset_loads_the_prefix_and_accepts_writes(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    drive(ks, ss, clock, random.Random(11), 120)
    ends = list(rec.ends)
    data = rec.take()
    states = _states_after_each_record(data, ends, clock)
    assert states[-1] == digest(ks, ss, clock.now())
    h = journal.HEADER_SIZE
    first_cut = ends[-4]  # every byte offset of the last three records
    path = datadir.segment_path(tmp_path, 1)
    for cut in range(first_cut, len(data) + 1):
        put(path, journal.header(1, 0) + data[:cut])
        for extra in datadir.segments(tmp_path):
            if extra[0] != 1:
                extra[1].unlink()
        ks2, ss2, report = recovered(tmp_path, clock)
        whole = sum(1 for e in ends if e <= cut)
        assert digest(ks2, ss2) == states[whole], cut
        assert report.truncated_bytes == cut - ([0, *ends][whole])
        assert path.stat().st_size == h + [0, *ends][whole]  # cut back to a record boundary
        # New writes go to a new segment and survive the next recovery.
        rec2 = Recorder(ks2, ss2)
        ks2.write("after", "tear", cut)
        write_segment(tmp_path, report.next_segment, rec2.take())
        ks3, ss3, _ = recovered(tmp_path, clock)
        assert digest(ks3, ss3) == digest(ks2, ss2, clock.now())


def test_torn_header_of_a_new_segment(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    for n in range(journal.HEADER_SIZE):
        put(datadir.segment_path(tmp_path, 1), journal.header(1, 0)[:n])
        ks, _, report = recovered(tmp_path, clock)
        assert len(ks) == 0 and report.truncated_bytes == n


def test_a_segment_whose_header_never_landed(tmp_path: Path) -> None:
    """Power cut while creating segment 2: its size grew, its bytes are zeros. It holds no
    record (records follow the header's fsync), so it is a torn tail at 0, even mid-journal."""
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    ks.write("b", "one", 1)
    write_segment(tmp_path, 1, rec.take())
    put(datadir.segment_path(tmp_path, 2), bytes(4096))
    ks2, _, report = recovered(tmp_path, clock)
    assert report.truncated_bytes == 4096 and report.next_segment == 3
    assert datadir.segment_path(tmp_path, 2).stat().st_size == 0
    ks.write("b", "two", 2)
    write_segment(tmp_path, 3, rec.take())
    put(datadir.segment_path(tmp_path, 2), bytes(100))
    ks2, ss2, report = recovered(tmp_path, clock)
    assert digest(ks2, ss2) == digest(ks, ss)
    put(datadir.segment_path(tmp_path, 2), bytes(100) + b"x")  # not all zeros: damage
    with pytest.raises(CorruptData, match="bad magic"):
        recovered(tmp_path, clock)


def test_a_header_cut_short_mid_journal_is_damage(tmp_path: Path) -> None:
    """Segment 1 truncated inside its header, segment 2 after it: segment 1's records are gone,
    so replaying segment 2 alone would serve a state that never existed. Only a blank header
    (test above) may sit mid-journal."""
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    ks.write("b", "one", 1)
    write_segment(tmp_path, 1, rec.take())
    ks.write("b", "two", 2)
    write_segment(tmp_path, 2, rec.take())
    first = datadir.segment_path(tmp_path, 1)
    for cut in (1, 8, 24, journal.HEADER_SIZE - 1):
        put(first, journal.header(1, 0)[:cut])
        with pytest.raises(CorruptData, match="torn record in the middle"):
            recovered(tmp_path, clock)
        assert first.stat().st_size == cut  # a refusal changes no file


def test_zero_filled_tail_is_torn(tmp_path: Path) -> None:
    """After a power cut a file can end in zeros (its size grew, its data never landed)."""
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    drive(ks, ss, clock, random.Random(12), 50)
    data = rec.take()
    path = write_segment(tmp_path, 1, data + bytes(5000))
    ks2, ss2, report = recovered(tmp_path, clock)
    assert digest(ks2, ss2) == digest(ks, ss, clock.now())
    assert report.truncated_bytes == 5000
    assert path.stat().st_size == journal.HEADER_SIZE + len(data)


def test_random_corruption_never_loads_wrong_data(tmp_path: Path) -> None:
    """2,000 seeded cases of 1-2 changed bytes in a segment: refused with file and offset, the
    exact state, or -- only when every changed byte lies in the last records, with no valid
    frame after the damage -- the state before those records (the torn-tail policy of
    store/disk/frames.py: stale blocks after a power cut look like that). Never any other state."""
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    drive(ks, ss, clock, random.Random(13), 60)
    relative = list(rec.ends)
    ends = [journal.HEADER_SIZE + e for e in relative]
    records = rec.take()
    data = journal.header(1, 0) + records
    prefixes = _states_after_each_record(records, relative, clock)  # [k]: after k records
    expected = digest(ks, ss, clock.now())
    rng = random.Random(2025)
    path = datadir.segment_path(tmp_path, 1)
    refused = cut = 0
    for _ in range(2000):
        damaged = bytearray(data)
        first = len(damaged)
        for _ in range(rng.choice((1, 2))):
            i = rng.randrange(len(damaged))
            damaged[i] = (damaged[i] + rng.randint(1, 255)) % 256
            first = min(first, i)
        put(path, bytes(damaged))
        try:
            ks2, ss2, report = recovered(tmp_path, clock)
        except DataError as exc:
            assert str(path) in str(exc) and "byte offset" in str(exc)
            refused += 1
        else:
            got = digest(ks2, ss2)
            if got != expected:
                kept = sum(1 for e in ends if e <= first)  # records wholly before the damage
                assert report.truncated_bytes > 0 and got == prefixes[kept]
                cut += 1
    assert refused + cut >= 1990 and refused >= 1500


def test_future_version_is_refused(tmp_path: Path) -> None:
    head = struct.pack("<8sIIQ", journal.MAGIC, journal.VERSION + 1, 0, 1)
    path = datadir.segment_path(tmp_path, 1)
    put(path, head + zlib.crc32(head).to_bytes(4, "little"))
    with pytest.raises(
        FutureVersion, match=f"journal format version {journal.VERSION + 1} is newer"
    ) as info:
        recovered(tmp_path, ManualClock(T0), on_bad_data="move-aside")
    assert str(path) in str(info.value) and path.exists()


def test_a_missing_segment_is_refused(tmp_path: Path) -> None:
    write_segment(tmp_path, 1, b"")
    write_segment(tmp_path, 3, b"")
    with pytest.raises(CorruptData, match="journal segment is missing") as info:
        recovered(tmp_path, ManualClock(T0))
    assert info.value.path == str(datadir.segment_path(tmp_path, 2))


def test_a_segment_under_the_wrong_name_is_refused(tmp_path: Path) -> None:
    put(datadir.segment_path(tmp_path, 1), journal.header(7, 0))
    with pytest.raises(CorruptData, match="header says segment 7"):
        recovered(tmp_path, ManualClock(T0))


def test_a_record_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    """Checksummed but impossible (a score for a board never created): not ours, refuse."""
    buf = bytearray()
    first = journal.append_event(
        buf, ("bcfg", "b", {"order": "desc", "update": "best", "ties": "first"})
    )
    journal.append_event(buf, ("bset", "nope", "m", 1, 1, None, 1, None))
    write_segment(tmp_path, 1, bytes(buf))
    with pytest.raises(CorruptData, match="record does not apply") as info:
        recovered(tmp_path, ManualClock(T0))
    assert info.value.offset == journal.HEADER_SIZE + first


def test_segment_writer_creates_durable_segments(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    w = journal.SegmentWriter(tmp_path, sync=True, created=0)
    w.open(1, 0)
    ks.write("b", "m", 1)
    w.write(rec.take())
    w.fsync()
    w.open(2, 0)  # closes 1
    ks.write("b", "m", 2)
    w.write(rec.take())
    w.close()
    assert w.created == 2
    ks2, ss2, report = recovered(tmp_path, clock)
    assert digest(ks2, ss2) == digest(ks, ss) and report.journal_records == 3
