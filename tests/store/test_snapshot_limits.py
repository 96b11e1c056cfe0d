"""Snapshots at the largest sizes the settings allow load back (issue 10, defect 2).

rankd used to cut SESSIONS records by count (1024 a frame): 1024 sessions of 64 KiB+ data, or
four at the 16 MiB --session-data-bytes maximum, made one frame past frames.MAX_BODY, which
the snapshot answered 200 for and the next start called corrupt. Every limit here is the
maximum service/settings.py accepts.
"""

from pathlib import Path

import orjson
import pytest

from service import settings
from store.clock import ManualClock
from store.disk import datadir, frames, snapshot
from store.keyspace import Keyspace
from store.sessions import SessionStore
from store.values import Limits
from tests.store.test_snapshot import T0, digest

SESSION_DATA = int(settings._LIMIT_RANGES["session_data_bytes"][1])
METADATA = int(settings._LIMIT_RANGES["metadata_bytes"][1])
MEMBER = int(settings._LIMIT_RANGES["member_bytes"][1])


def _object_of(size: int, tag: str) -> dict[str, str]:
    """A JSON object whose compact encoding is exactly ``size`` bytes."""
    overhead = len(orjson.dumps({"k": ""}))
    data = {"k": tag + "x" * (size - overhead - len(tag))}
    assert len(orjson.dumps(data)) == size
    return data


@pytest.mark.slow
def test_the_largest_sessions_entries_and_metadata_round_trip(tmp_path: Path) -> None:
    assert SESSION_DATA >= 16 * 1024 * 1024 and METADATA >= 1 << 20 and MEMBER >= 1024
    clock = ManualClock(T0)
    ks = Keyspace(Limits(member_bytes=MEMBER, metadata_bytes=METADATA))
    ss = SessionStore(clock, max_data_bytes=SESSION_DATA)
    for i in range(5):  # 80 MiB of sessions: one count-cut frame would exceed MAX_BODY
        ss.create(user=f"u{i}", data=_object_of(SESSION_DATA, str(i)))
    for i in range(2000):  # small sessions after the big ones share frames again
        ss.create(user=f"v{i % 50}", data={"i": i})
    board = ks.board_for_write("meta")
    for i in range(70):  # 70 MiB of metadata
        member = f"{i:04d}" + "m" * (MEMBER - 4)
        board.write_many([(member, i, _object_of(METADATA, str(i)))])
    long = ks.board_for_write("members")
    for start in range(0, 9000, 1000):
        long.write_many(
            [(f"{i:06d}" + "é" * ((MEMBER - 6) // 2), i, None) for i in range(start, start + 1000)]
        )

    stats = snapshot.save(tmp_path, ks, ss, base_segment=1, now=T0)
    assert stats.sessions == 2005 and stats.entries == 9070
    ks2 = Keyspace(Limits(member_bytes=MEMBER, metadata_bytes=METADATA))
    ss2 = SessionStore(clock, max_data_bytes=SESSION_DATA)
    snapshot.load(datadir.snapshot_path(tmp_path), ks2, ss2)
    ss2.finish_load()
    assert digest(ks2, ss2) == digest(ks, ss)
    # Every frame of the file is within the loader's bound (the writer checks it as it goes).
    with open(datadir.snapshot_path(tmp_path), "rb") as f:
        f.seek(snapshot.HEADER_SIZE)
        sizes = [len(p) for _, _, p in frames.Reader(f, "s", snapshot.HEADER_SIZE).frames()]
    assert max(sizes) < frames.MAX_BODY and max(sizes) > SESSION_DATA


def test_the_writer_refuses_a_frame_the_loader_would_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound the save fails and the installed snapshot stays: never an unloadable file."""
    clock = ManualClock(T0)
    ks, ss = Keyspace(), SessionStore(clock)
    ss.create(data={"a": "b" * 5000})
    snapshot.save(tmp_path, ks, ss, base_segment=1, now=T0)
    before = datadir.snapshot_path(tmp_path).read_bytes()
    ss.create(data={"a": "c" * 5000})
    monkeypatch.setattr(frames, "MAX_BODY", 4096)
    with pytest.raises(ValueError, match="exceeds the frame limit"):
        snapshot.save(tmp_path, ks, ss, base_segment=2, now=T0)
    assert datadir.snapshot_path(tmp_path).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.rkd"]
