"""A real disk filling up under the real server, fsync=always: every 503 means nothing happened.

The data directory is a small tmpfs (mounted here; the tests run as root), nearly filled by a
ballast file once the server is up, so the journal hits ENOSPC in the middle of concurrent
writes of every kind. Each writer owns its members and sessions and stops at its first 503:

* a 503'd score write is invisible on the very next read (its member keeps its acknowledged
  total on a ``sum`` board, or stays absent) -- also for batches, item by item;
* a 503'd session rotate leaves the old id working with its data; a 503'd patch leaves the
  acknowledged data;
* a WebSocket subscriber to the board's top 25 (hub tick 1 ms, so it is usually shown writes
  whose commit then fails) ends up showing exactly what GET top shows;
* after kill -9 and a restart with room on the disk (ballast removed), every ``sum`` total is
  exactly the sum of the acknowledged increments and every session is as acknowledged: a write
  answered 503 came back neither from memory (a snapshot) nor from the journal.
"""

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(120)

ROOM = 24 << 10  # what the ballast leaves free: a few hundred journal records
SCORERS = 4
BATCHERS = 2
PATCHERS = 2
ROTATORS = 2


@dataclass
class Writer:
    """One client thread's acknowledged history and what it saw right after its 503."""

    kind: str
    n: int
    acked: dict[str, int] = field(default_factory=dict)  # member -> acknowledged total
    session: tuple[str, dict[str, int]] | None = None  # (id, data) as acknowledged
    refused: int = 0
    errors: list[str] = field(default_factory=list)

    def run(self, srv: Any) -> None:
        with srv.client(timeout=30.0) as c:
            try:
                getattr(self, "_" + self.kind)(c)
            except Exception as exc:  # reported by the test, never swallowed
                self.errors.append(repr(exc))

    def _member(self, i: int) -> str:
        return f"{self.kind}{self.n}-{i % 5}"

    def _check_refused(self, c: httpx.Client, r: httpx.Response, members: list[str]) -> None:
        assert r.status_code == 503, (r.status_code, r.text)
        self.refused += 1
        for m in members:  # the very next read shows no trace of the refused write
            got = c.get(f"/v1/boards/sum/members/{m}")
            if m in self.acked:
                assert got.status_code == 200 and got.json()["score"] == self.acked[m], (
                    m,
                    got.text,
                    self.acked[m],
                )
            else:
                assert got.status_code == 404, (m, got.text)

    def _score(self, c: httpx.Client) -> None:
        for i in range(100_000):
            m = self._member(i)
            r = c.post("/v1/boards/sum/scores", json={"member": m, "score": 1})
            if r.status_code != 200:
                return self._check_refused(c, r, [m])
            self.acked[m] = self.acked.get(m, 0) + 1
        raise AssertionError("the disk never filled")

    def _batch(self, c: httpx.Client) -> None:
        for i in range(100_000):
            members = [self._member(i + k) for k in range(3)]
            items = [{"member": m, "score": 2} for m in members]
            r = c.post("/v1/boards/sum/scores:batch", json=items)
            if r.status_code != 200:
                return self._check_refused(c, r, sorted(set(members)))
            for m in members:
                self.acked[m] = self.acked.get(m, 0) + 2
        raise AssertionError("the disk never filled")

    def setup(self, c: httpx.Client) -> None:
        """Before the disk fills: the session a patch or rotate writer works on."""
        if self.kind == "patch":
            data: dict[str, int] = {"v": 0}
        elif self.kind == "rotate":
            data = {"who": self.n}
        else:
            return
        r = c.post("/v1/sessions", json={"user": f"{self.kind[0]}{self.n}", "data": data})
        assert r.status_code == 201, r.text
        self.session = (r.json()["id"], data)

    def _patch(self, c: httpx.Client) -> None:
        assert self.session is not None
        sid = self.session[0]
        for i in range(1, 100_000):
            r = c.patch(f"/v1/sessions/{sid}", json={"data": {"v": i}})
            if r.status_code != 200:
                assert r.status_code == 503, r.text
                self.refused += 1
                got = c.get(f"/v1/sessions/{sid}", params={"touch": "false"})
                assert got.status_code == 200 and got.json()["data"] == {"v": i - 1}, got.text
                return
            self.session = (sid, {"v": i})
        raise AssertionError("the disk never filled")

    def _rotate(self, c: httpx.Client) -> None:
        assert self.session is not None
        sid = self.session[0]
        for _ in range(100_000):
            r = c.post(f"/v1/sessions/{sid}/rotate")
            if r.status_code != 200:
                assert r.status_code == 503, r.text
                self.refused += 1
                # The old id still works: a failed rotate must not log the user out.
                got = c.get(f"/v1/sessions/{sid}", params={"touch": "false"})
                assert got.status_code == 200 and got.json()["data"] == {"who": self.n}, got.text
                listed = c.get(f"/v1/users/r{self.n}/sessions").json()["sessions"]
                assert [s["id"] for s in listed] == [sid]  # and no second id exists
                return
            sid = r.json()["id"]
            self.session = (sid, {"who": self.n})
        raise AssertionError("the disk never filled")


def _expected_totals(writers: list[Writer]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for w in writers:
        for m, v in w.acked.items():
            totals[m] = totals.get(m, 0) + v
    return totals


def _verify(srv: Any, writers: list[Writer], when: str) -> None:
    expected = _expected_totals(writers)
    with srv.client() as c:
        top = c.get("/v1/boards/sum/top", params={"limit": 1000})
        assert top.status_code == 200, top.text
        board = {e["member"]: e["score"] for e in top.json()["entries"]}
        assert board == expected, f"{when}: sum totals differ from the acknowledged increments"
        for w in writers:
            if w.session is None:
                continue
            sid, data = w.session
            got = c.get(f"/v1/sessions/{sid}", params={"touch": "false"})
            assert got.status_code == 200, (when, w.kind, got.text)
            assert got.json()["data"] == data, (when, w.kind)
            user = f"{w.kind[0]}{w.n}"
            listed = c.get(f"/v1/users/{user}/sessions").json()["sessions"]
            assert [s["id"] for s in listed] == [sid], (when, w.kind)


class Watcher:
    """A WebSocket client subscribed to the board's top N for the whole scenario."""

    def __init__(self, srv: Any, n: int) -> None:
        self.frames: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._exit = contextlib.ExitStack()
        self._conn = self._exit.enter_context(
            connect(f"ws://127.0.0.1:{srv.port}/v1/ws", proxy=None, max_size=None)
        )
        self._conn.send(
            orjson.dumps({"op": "subscribe", "id": "t", "board": "sum", "top": n}).decode()
        )
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._conn.recv(timeout=0.1)
            except TimeoutError:
                continue
            except Exception as exc:
                self.errors.append(repr(exc))
                return
            frame = orjson.loads(msg)
            if frame.get("type") == "top":
                self.frames.append(frame)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._exit.close()


def test_disk_full_under_concurrent_writes_every_503_changed_nothing(
    rankd_server: Any, tmpfs: Path
) -> None:
    # ws_tick 1 ms: the hub pushes nearly every loop turn, so a subscriber is likely to be shown
    # a write before its commit fails (the undo must then show it the restored state).
    srv = rankd_server(data_dir=tmpfs / "data", fsync="always", ws_tick=0.001)
    writers = (
        [Writer("score", n) for n in range(SCORERS)]
        + [Writer("batch", n) for n in range(BATCHERS)]
        + [Writer("patch", n) for n in range(PATCHERS)]
        + [Writer("rotate", n) for n in range(ROTATORS)]
    )
    with srv.client() as c:
        assert c.put("/v1/boards/sum", json={"update": "sum"}).status_code == 201
        for w in writers:
            w.setup(c)
    ballast = tmpfs / "ballast"
    with ballast.open("wb") as f:  # leave ROOM bytes: the journal fills the rest
        fs = os.statvfs(tmpfs)
        free = fs.f_bavail * fs.f_frsize
        f.write(b"\0" * max(0, free - ROOM))
    watcher = Watcher(srv, 25)
    threads = [threading.Thread(target=w.run, args=(srv,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "a writer never got its 503"
    assert [e for w in writers for e in w.errors] == []
    assert all(w.refused == 1 for w in writers)
    assert sum(len(w.acked) for w in writers) > 0
    assert "No space left on device" in srv.logs() or "ENOSPC" in srv.logs()
    _verify(srv, writers, "right after the failures")
    # A subscriber that may have been shown an undone write ends up showing the truth.
    time.sleep(0.5)  # a few hub ticks
    watcher.close()
    assert watcher.errors == [] and watcher.frames
    with srv.client() as c:
        truth = c.get("/v1/boards/sum/top", params={"limit": 25}).json()["entries"]
    assert watcher.frames[-1]["entries"] == truth

    assert srv.stop(signal.SIGKILL) == -signal.SIGKILL
    ballast.unlink()  # the operator makes room; the next start may snapshot and serve
    srv.start()
    _verify(srv, writers, "after kill -9 and restart")
    with contextlib.suppress(RuntimeError):
        srv.stop(signal.SIGTERM)
