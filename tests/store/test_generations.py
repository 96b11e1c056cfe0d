"""Snapshot generations (store/disk/datadir.py): verified before installed, crash-safe to install,
and the files only a fallback reads are checked and repaired offline (store/disk/check.py)."""

import os
import random
from pathlib import Path

import pytest

from store.clock import ManualClock
from store.disk import check, datadir, recovery, snapshot
from store.disk.frames import CorruptData
from tests.store.test_journal import Recorder, recovered, write_segment
from tests.store.test_snapshot import digest, drive, put, random_state


def _two_generations(tmp_path: Path) -> tuple[ManualClock, dict[str, object]]:
    """snapshot.prev.rkd (base 2) + journal 2, 3; snapshot.rkd (base 4) + journal 4."""
    ks, ss, clock = random_state(5, ops=300)
    rec = Recorder(ks, ss)
    snapshot.save(tmp_path, ks, ss, base_segment=2, now=clock.now())
    for n in (2, 3):
        drive(ks, ss, clock, random.Random(n), 100)
        write_segment(tmp_path, n, rec.take())
    snapshot.save(tmp_path, ks, ss, base_segment=4, now=clock.now())
    drive(ks, ss, clock, random.Random(4), 100)
    write_segment(tmp_path, 4, rec.take())
    return clock, digest(ks, ss, clock.now())


def test_a_snapshot_the_loader_refuses_is_never_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock, _ = _two_generations(tmp_path)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def refuse(path: Path) -> snapshot.SnapshotStats:
        raise CorruptData(str(path), 16, "what the loader would say")

    monkeypatch.setattr(snapshot, "verify", refuse)
    ks, ss, _ = recovered(tmp_path, clock)
    with pytest.raises(CorruptData):
        snapshot.save(tmp_path, ks, ss, base_segment=5, now=clock.now())
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


def test_a_crash_between_the_two_renames_of_an_install_loses_nothing(tmp_path: Path) -> None:
    """After the newest is linked over snapshot.prev.rkd and before the new file is renamed
    over snapshot.rkd, both names hold the same file and the new one is a leftover temp."""
    clock, expected = _two_generations(tmp_path)
    newest = datadir.snapshot_path(tmp_path)
    os.replace(newest, tmp_path / "same")
    os.link(tmp_path / "same", newest)
    os.replace(tmp_path / "same", datadir.previous_snapshot_path(tmp_path))
    put(datadir.temp_snapshot_path(tmp_path), b"half a new snapshot")
    put(tmp_path / (datadir.PREVIOUS + ".tmp"), b"a link that was never renamed")
    ks, ss, report = recovered(tmp_path, clock)
    assert digest(ks, ss) == expected and report.removed_temp_files == 2
    # Both generations have base 4 now: segments 2 and 3 are obsolete and went.
    assert [n for n, _ in datadir.segments(tmp_path)] == [4]


@pytest.mark.parametrize("victim", ["snapshot.prev.rkd", "journal-00000000000000000002.rkj"])
def test_check_finds_damage_only_a_fallback_would_read_and_repair_retires_it(
    tmp_path: Path, victim: str
) -> None:
    clock, expected = _two_generations(tmp_path)
    path = tmp_path / victim
    data = bytearray(path.read_bytes())
    data[40] ^= 0x08
    put(path, bytes(data))
    ks, ss, _ = recovered(tmp_path, clock)  # start-up does not need the file: exact state
    assert digest(ks, ss) == expected

    found = check.check(tmp_path)
    assert not found.ok and found.first_bad is not None and found.first_bad.path == str(path)
    assert found.startup is not None and not found.startup.fell_back

    done = check.repair(tmp_path, now=clock.now())
    assert [Path(p).name.split(".bad-")[0] for p in done.moved_aside] == [victim]
    assert Path(done.moved_aside[0]).read_bytes() == bytes(data)  # moved, never deleted
    assert check.check(tmp_path).ok
    ks2, ss2, _ = recovered(tmp_path, clock)
    assert digest(ks2, ss2) == expected


def test_recovery_pins_a_fallback_as_two_generations(tmp_path: Path) -> None:
    clock, expected = _two_generations(tmp_path)
    newest = datadir.snapshot_path(tmp_path)
    put(newest, newest.read_bytes()[:-1])
    ks, ss, report = recovered(tmp_path, clock)
    assert report.fell_back and report.needs_snapshot and digest(ks, ss) == expected
    recovery.pin(tmp_path, ks, ss, base=report.next_segment, now=clock.now())
    for path in (newest, datadir.previous_snapshot_path(tmp_path)):
        assert snapshot.verify(path).base_segment == report.next_segment
    assert datadir.segments(tmp_path) == []  # every segment is below both bases now
