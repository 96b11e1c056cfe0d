"""Seeded corruption of any one file of a data directory that has two snapshot generations.

The directory (store/disk/datadir.py's file model), built by the real writers:

    snapshot.prev.rkd  base 2     journal 2, 3   covered by the newest snapshot too
    snapshot.rkd       base 4     journal 4, 5   the live journal: its only copy

Each case damages one file -- flips 1-3 bytes, truncates, or zeroes a range -- and recovers.
What must hold (issue 10, "with one damaged file, lose nothing"):

- a damaged snapshot (either generation) or a damaged covered segment: the exact state, in
  every on_bad_data mode -- the newest loads, or the fallback replays the longer journal;
- a damaged live segment (the only copy of its records): the exact state, or a refusal that
  names the file and changed no file, or (move-aside; or a torn tail of the last segment, see
  store/disk/frames.py) the exact state before the first damaged record. Never any other state.
"""

import os
import random
from pathlib import Path
from typing import Any

import pytest

from store.clock import ManualClock
from store.disk import datadir, frames, journal, recovery, snapshot
from store.disk.frames import CorruptData
from tests.store.test_journal import Recorder, write_segment
from tests.store.test_snapshot import digest, drive, fresh, put, random_state

CASES = 640
COVERED = ("snapshot.rkd", "snapshot.prev.rkd", "journal-2", "journal-3")


def _build(directory: Path) -> tuple[ManualClock, dict[str, bytes], Any, dict[str, list[Any]]]:
    """The directory above; returns the clock, every file's bytes, the final digest, and for
    each live segment the digests after each of its records (from the newest snapshot)."""
    ks, ss, clock = random_state(77, ops=400)
    rec = Recorder(ks, ss)
    snapshot.save(directory, ks, ss, base_segment=2, now=clock.now())
    ends: dict[int, list[int]] = {}
    for n in (2, 3):
        drive(ks, ss, clock, random.Random(n), 120)
        ends[n] = list(rec.ends)
        write_segment(directory, n, rec.take())
    snapshot.save(directory, ks, ss, base_segment=4, now=clock.now())
    for n in (4, 5):
        drive(ks, ss, clock, random.Random(n), 120)
        ends[n] = list(rec.ends)
        write_segment(directory, n, rec.take())
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.name != datadir.LOCK}
    assert sorted(files) == sorted(
        [
            "snapshot.rkd",
            "snapshot.prev.rkd",
            *(datadir.segment_path(directory, n).name for n in (2, 3, 4, 5)),
        ]
    )
    # Prefix states of the live journal, record by record, over the newest snapshot.
    prefixes: dict[str, list[Any]] = {}
    ks2, ss2 = fresh(clock)
    snapshot.load(datadir.snapshot_path(directory), ks2, ss2)
    for n in (4, 5):
        data = files[datadir.segment_path(directory, n).name][journal.HEADER_SIZE :]
        states = [digest(ks2, ss2, clock.now())]
        at = 0
        for end in ends[n]:
            body = data[at + frames.HEADER_SIZE : end]
            journal.apply_record(body[0], body[1:], ks2, ss2)
            at = end
            states.append(digest(ks2, ss2, clock.now()))
        prefixes[datadir.segment_path(directory, n).name] = [ends[n], states]
    return clock, files, digest(ks, ss, clock.now()), prefixes


def _restore(directory: Path, files: dict[str, bytes]) -> None:
    for entry in os.scandir(directory):
        if entry.name not in files and entry.name != datadir.LOCK:
            os.unlink(entry.path)
    for name, data in files.items():
        put(directory / name, data)


def _damage(data: bytes, rng: random.Random) -> tuple[bytes, int, str]:
    """(damaged bytes, offset of the first changed byte, how)."""
    how = rng.choice(("flip", "truncate", "zero"))
    if how == "flip":
        out = bytearray(data)
        offsets = [rng.randrange(len(data)) for _ in range(rng.randint(1, 3))]
        for i in offsets:
            out[i] ^= rng.randint(1, 255)
        return bytes(out), min(offsets), how
    if how == "truncate":
        cut = rng.randrange(len(data))
        return data[:cut], cut, how
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 600))
    out = data[:start] + bytes(end - start) + data[end:]  # type: ignore[assignment]
    if out == data:  # zeroes over zeroes changed nothing: flip one byte instead
        return _damage(data, rng)
    return out, start, how  # type: ignore[return-value]


@pytest.mark.slow
def test_one_damaged_file_loses_no_acknowledged_write(tmp_path: Path) -> None:
    clock, files, expected, prefixes = _build(tmp_path)
    names = sorted(files)
    rng = random.Random(20261202)
    outcomes: dict[str, int] = {}
    for case in range(CASES):
        _restore(tmp_path, files)
        name = names[case % len(names)]
        mode = "refuse" if case % 2 == 0 else "move-aside"
        damaged, first, how = _damage(files[name], rng)
        put(tmp_path / name, damaged)
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        ks, ss = fresh(clock)
        label = f"case {case}: {how} {name} at {first} ({mode})"
        try:
            report = recovery.recover(tmp_path, ks, ss, on_bad_data=mode, now=clock.now)  # type: ignore[arg-type]
        except CorruptData as exc:
            assert not name.startswith(COVERED), f"{label}: refused ({exc}) though a copy exists"
            assert mode == "refuse" and "byte offset" in str(exc), label
            after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
            assert after == before, f"{label}: a refusal changed files"
            outcomes["refused"] = outcomes.get("refused", 0) + 1
            continue
        got = digest(ks, ss)
        ks._check()
        ss._check()
        if name.startswith(COVERED):
            assert got == expected, f"{label}: lost data though another generation covers it"
            kind = "fallback" if report.fell_back else "exact"
            if report.fell_back:
                # The fallback is pinned as both generations; the next start is exact too.
                recovery.pin(tmp_path, ks, ss, base=report.next_segment, now=clock.now())
                ks3, ss3 = fresh(clock)
                recovery.recover(tmp_path, ks3, ss3, now=clock.now)
                assert digest(ks3, ss3) == expected, label
        elif got == expected:
            kind = "exact"
        else:
            ends, states = prefixes[name]
            body_first = first - journal.HEADER_SIZE
            kept = sum(1 for e in ends if e <= body_first)
            assert got == states[kept], f"{label}: a state that never existed"
            assert mode == "move-aside" or report.truncated_bytes > 0, label
            kind = "prefix"
        # Nothing is ever deleted: every damaged byte is still in some file.
        assert (
            any(p.read_bytes() == damaged for p in tmp_path.iterdir() if p.name.startswith(name))
            or how == "truncate"
            or report.truncated_bytes > 0
        ), label
        outcomes[kind] = outcomes.get(kind, 0) + 1
    print(f"{CASES} cases: {outcomes}")
    assert outcomes.get("fallback", 0) >= 50 and outcomes.get("refused", 0) >= 20
