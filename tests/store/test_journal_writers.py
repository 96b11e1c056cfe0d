"""Journal v4: who wrote each board change (store/writers.py), and version 3 still loads.

The fixture ``fixtures/journal-00000000000000000001.rkj`` is a version-3 segment written by
the journal code of commit 3395710 (the last v3 writer), from ``scenario`` below: run with
that checkout on ``sys.path``, a ``Keyspace(clock=ManualClock(T0))`` whose observer was
``journal.append_event(buf, event)``, then ``journal.header(1, 0) + buf`` written out.
"""

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from store.clock import ManualClock
from store.disk import datadir, frames, journal
from store.disk.frames import CorruptData
from store.disk.recovery import recover
from store.keyspace import Keyspace
from store.sessions import SessionStore
from store.writers import KEY, KINDS, OPEN, UNKNOWN, Writer
from tests.store.test_journal import write_segment
from tests.store.test_snapshot import T0, digest, fresh

FIXTURES = Path(__file__).parent / "fixtures"
V3_SEGMENT = FIXTURES / "journal-00000000000000000001.rkj"


def scenario(ks: Keyspace, writers: list[Writer] | None = None) -> list[Writer]:
    """Every board-write record kind: bset, bdel, bbatch (window "all") and bmulti (a week).
    With ``writers``, each write is made as the next one (the embedded backend's job: it sets
    the journal's author around each store call). Returns the writer of each board record."""
    out: list[Writer] = []
    steps: list[Any] = [
        lambda: ks.write("plain", "a", 5),
        lambda: ks.write("plain", "b", 7, {"c": 1}),
        lambda: ks.write_many("plain", [("c", 1, None), ("d", 2, None)]),
        lambda: ks.get("plain").remove("a"),
        lambda: ks.configure("seasons", {"windows": ["all", "week"]}),
        lambda: ks.write("seasons", "x", 3),
        lambda: ks.write_many("seasons", [("y", 4, None), ("z", 9, {"k": "v"})]),
        lambda: ks.get("seasons").remove("x"),
    ]
    ks.configure("plain", {})
    author = writers[:] if writers is not None else None
    for i, step in enumerate(steps):
        if i == 4:  # a config change: not a board write, no writer
            step()
            continue
        writer = author.pop(0) if author is not None else UNKNOWN
        out.append(writer)
        _AUTHOR[0] = writer.row() if author is not None else ()
        step()
        _AUTHOR[0] = ()
    return out


_AUTHOR: list[Any] = [()]  # what JournalFlusher.author holds during a store call


def _recording(ks: Keyspace) -> bytearray:
    buf = bytearray()

    def record(event: tuple[Any, ...]) -> None:
        journal.append_event(buf, event, _AUTHOR[0])

    ks.observers.append(record)
    return buf


def _records(data: bytes) -> list[tuple[int, bytes]]:
    out, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "little")
        body = data[at + frames.HEADER_SIZE : at + frames.HEADER_SIZE + size]
        out.append((body[0], body[1:]))
        at += frames.HEADER_SIZE + size
    return out


WRITERS = [
    KEY,
    Writer.player("alice"),
    OPEN,
    KEY,
    Writer.player("bob"),
    Writer.player("alice"),
    KEY,
]


def test_each_board_record_round_trips_its_writer_and_the_same_state(tmp_path: Path) -> None:
    ks = Keyspace(clock=ManualClock(T0))
    buf = _recording(ks)
    expected = scenario(ks, WRITERS)
    data = bytes(buf)
    # Replay one record at a time: every board write gives back its writer, in order; the
    # config records give None. The state is exactly the original.
    ks2, ss2 = Keyspace(clock=ManualClock(T0)), SessionStore(ManualClock(T0))
    got = [journal.apply_record(code, body, ks2, ss2) for code, body in _records(data)]
    assert [w for w in got if w is not None] == expected
    assert [c for c, _ in _records(data)].count(journal.BMULTI) == 3  # the week board's
    assert digest(ks2, ss2) == digest(ks, SessionStore(ManualClock(T0)))
    # Compact: one small integer, plus the user id for a player; never anything else.
    bodies = [orjson.loads(b) for c, b in _records(data) if c != journal.BCFG]
    assert bodies[0][-1] == 1 and bodies[1][-2:] == [2, "alice"] and bodies[2][-1] == 3


def test_recovery_counts_writers_and_replay_ignores_them(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ks = Keyspace(clock=clock)
    buf = _recording(ks)
    scenario(ks, WRITERS)
    write_segment(tmp_path, 1, bytes(buf))
    ks2, ss2 = fresh(clock)
    ks2.clock = clock
    report = recover(tmp_path, ks2, ss2)
    assert report.journal_writers == {"unknown": 0, "key": 3, "player": 3, "open": 1}
    # The same writes made by nobody in particular replay to the very same state.
    ks3 = Keyspace(clock=ManualClock(T0))
    scenario(ks3)
    assert digest(ks2, ss2) == digest(ks3, SessionStore(clock))


def test_a_version_3_segment_from_the_old_writer_still_loads(tmp_path: Path) -> None:
    assert V3_SEGMENT.read_bytes()[8] == 3  # the header's version, as the old code wrote it
    shutil.copy(V3_SEGMENT, tmp_path / V3_SEGMENT.name)
    clock = ManualClock(T0)
    ks, ss = fresh(clock)
    ks.clock = clock
    report = recover(tmp_path, ks, ss)
    ks._check()
    expected = Keyspace(clock=ManualClock(T0))
    scenario(expected)
    assert digest(ks, ss) == digest(expected, SessionStore(clock))
    assert report.journal_records == 9
    assert report.journal_writers == dict.fromkeys(KINDS, 0) | {"unknown": 7}


@pytest.mark.parametrize(
    "tail",
    [["x"], [9], [1, "alice"], [2], [2, 7], [True], [0, "alice"], [2, "a", "b"]],
)
def test_a_malformed_writer_is_corruption_not_a_guess(tmp_path: Path, tail: list[Any]) -> None:
    buf = bytearray()
    frames.append(buf, journal.BCFG, orjson.dumps(["b", {"order": "desc"}, T0]))
    frames.append(buf, journal.BSET, orjson.dumps(["b", "m", 1, 1, None, *tail]))
    write_segment(tmp_path, 1, bytes(buf))
    ks, ss = fresh(ManualClock(T0))
    with pytest.raises(CorruptData, match="writer"):
        journal.replay(datadir.segment_path(tmp_path, 1), 1, ks, ss)


def test_writer_rows_are_one_code_and_a_user_only_for_players() -> None:
    assert KEY.row() == (1,) and OPEN.row() == (3,) and UNKNOWN.row() == (0,)
    assert Writer.player("alice").row() == (2, "alice")
    for w in (KEY, OPEN, UNKNOWN, Writer.player("ü/ß")):
        assert Writer.from_row(list(w.row())) == w
