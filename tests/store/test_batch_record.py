"""A scores:batch is one journal record ("bbatch"): a crash leaves all of it or none.

The journal is cut at every byte offset from the record before the batch to the end of the
batch's record (what a crash during that write can leave), and recovery must load either the
state before the batch or the state after it -- never some of its items.
"""

import zlib
from pathlib import Path

from store.clock import ManualClock
from store.disk import journal
from tests.store.test_journal import Recorder, recovered, write_segment
from tests.store.test_snapshot import T0, digest, fresh


def test_a_batch_is_one_record(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    ks.configure("b", {"update": "sum"})
    ks.write_many("b", [("a", 1, None), ("b", 2, {"x": 1}), ("a", 3, None)])
    assert len(rec.ends) == 2  # bcfg + one bbatch, not three bsets
    write_segment(tmp_path, 1, rec.take())
    ks2, ss2, _ = recovered(tmp_path, clock)
    assert digest(ks2, ss2) == digest(ks, ss, clock.now())
    assert ks2.get("b").entry("a")["score"] == 4 and ks2.get("b").seq == ks.get("b").seq


def test_a_batch_cut_at_any_byte_is_all_or_nothing(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    ks.configure("sum", {"update": "sum"})
    ks.write("sum", "a", 10)
    before = digest(ks, ss, clock.now())
    start = rec.ends[-1]
    items: list[tuple[object, object, object]] = [
        ("a", 5, None),
        ("new", 7, {"level": 3}),
        ("a", -2, None),
        ("b" * 100, 1, None),
    ]
    ks.write_many("sum", items)
    after = digest(ks, ss, clock.now())
    end = rec.ends[-1]
    assert before != after
    data = rec.take()
    for cut in range(start, end + 1):
        directory = tmp_path / str(cut)
        directory.mkdir()
        write_segment(directory, 1, data[:cut])
        ks2, ss2, report = recovered(directory, clock)
        ks2._check()
        got = digest(ks2, ss2)
        assert got == (after if cut == end else before), cut
        assert report.truncated_bytes == (0 if cut == end else cut - start), cut


def test_older_versions_still_read(tmp_path: Path) -> None:
    """A version-1 segment (no bbatch) replays under version 2: the bump adds, changes nothing."""
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    rec = Recorder(ks, ss)
    ks.write("b", "m", 1)
    path = write_segment(tmp_path, 1, rec.take())
    head = bytearray(path.read_bytes())
    v1 = journal._HEAD.pack(journal.MAGIC, 1, 0, 1)
    head[: journal.HEADER_SIZE] = v1 + zlib.crc32(v1).to_bytes(4, "little")
    path.write_bytes(bytes(head))
    ks2, _, _ = recovered(tmp_path, clock)
    assert ks2.get("b").entry("m")["score"] == 1
