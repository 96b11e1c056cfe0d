"""kill -9 of the real server under concurrent writes: nothing acknowledged is ever lost.

The oracle: every writer thread owns its members and sessions and keeps exactly one request
in flight, with strictly increasing scores. After each crash and restart, a member's score
must be its last acknowledged one or the one that was in flight (unacknowledged writes may
land or not); a member never written must not exist; an acknowledged session must exist with
its acknowledged (or in-flight) data. Snapshots run every 0.2 s, so kills also land while a
snapshot child is writing.
"""

import contextlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.disk import datadir

SEED = 20240611
ROUNDS = 20
WRITERS = 4
MEMBERS_PER_WRITER = 25
BOARD = "crash"


@dataclass
class Writer:
    n: int
    allowed: dict[str, set[int]] = field(default_factory=dict)  # member -> scores it may show
    present: set[str] = field(default_factory=set)  # members that must exist
    sessions: dict[str, set[str]] = field(default_factory=dict)  # sid -> data["v"] it may show
    next_value: int = 1
    acked: int = 0

    def run(self, url: str, stop: threading.Event, rng: random.Random) -> None:
        with httpx.Client(base_url=url, timeout=5.0, trust_env=False) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 6 == 0:
                        self._session(c, rng)
                    else:
                        self._score(c, f"w{self.n}-{i % MEMBERS_PER_WRITER}")
                except httpx.TransportError:
                    return  # the server died: this request stays "in flight" forever

    def _score(self, c: httpx.Client, member: str) -> None:
        score = self.next_value
        self.next_value += 1
        self.allowed.setdefault(member, set()).add(score)  # in flight: may land or not
        r = c.post(f"/v1/boards/{BOARD}/scores", json={"member": member, "score": score})
        assert r.status_code == 200, r.text
        self.allowed[member] = {score}  # acknowledged: nothing older may show any more
        self.present.add(member)
        self.acked += 1

    def _session(self, c: httpx.Client, rng: random.Random) -> None:
        value = f"{self.n}-{self.next_value}"
        self.next_value += 1
        if self.sessions and rng.random() < 0.5:
            sid = rng.choice(sorted(self.sessions))
            self.sessions[sid].add(value)
            r = c.patch(f"/v1/sessions/{sid}", json={"data": {"v": value}})
            assert r.status_code == 200, r.text
            self.sessions[sid] = {value}
        else:
            r = c.post("/v1/sessions", json={"user": f"w{self.n}", "data": {"v": value}})
            assert r.status_code == 201, r.text
            self.sessions[r.json()["id"]] = {value}
        self.acked += 1

    def verify(self, seen: dict[str, int], c: httpx.Client) -> None:
        """Check what the restarted server holds, then take it as the truth for next round."""
        for member, scores in self.allowed.items():
            got = seen.get(member)
            if got is None:
                assert member not in self.present, f"acknowledged {member} is gone"
                self.allowed[member] = set()
            else:
                assert got in scores, (member, got, scores)
                self.allowed[member] = {got}
                self.present.add(member)
        for sid, values in self.sessions.items():
            r = c.get(f"/v1/sessions/{sid}", params={"touch": "false"})
            assert r.status_code == 200, r.text  # (no id in the message: it is a credential)
            got_v = r.json()["data"]["v"]
            assert got_v in values, (got_v, values)
            self.sessions[sid] = {got_v}


def _verify(c: httpx.Client, writers: list[Writer]) -> None:
    r = c.get(f"/v1/boards/{BOARD}/top", params={"limit": 1000})
    assert r.status_code == 200, r.text
    seen = {e["member"]: e["score"] for e in r.json()["entries"]}
    written = {m for w in writers for m in w.allowed}
    assert set(seen) <= written, f"never written: {set(seen) - written}"
    for w in writers:
        w.verify(seen, c)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill_9_under_write_load_loses_no_acknowledged_write(rankd_server: Any) -> None:
    rng = random.Random(SEED)
    srv = rankd_server(fsync="always", snapshot_interval=0.2)
    with srv.client() as c:
        assert c.put(f"/v1/boards/{BOARD}", json={"update": "latest"}).status_code in (200, 201)
    writers = [Writer(n) for n in range(WRITERS)]
    began = time.monotonic()
    total = 0
    for _ in range(ROUNDS):
        stop = threading.Event()
        threads = [
            threading.Thread(target=w.run, args=(srv.url, stop, random.Random(rng.random())))
            for w in writers
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.05, 0.5))
        # On a loaded machine the random pause may end before much was acknowledged: wait
        # (bounded) until this round's load is real, so every kill lands under writes.
        deadline = time.monotonic() + 3
        while sum(w.acked for w in writers) < total + 25 and time.monotonic() < deadline:
            time.sleep(0.01)
        srv.stop(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(10)
            assert not t.is_alive()
        srv.start()
        with srv.client() as c:
            _verify(c, writers)
        total = sum(w.acked for w in writers)
    assert total > ROUNDS * 20, total  # the load was real
    assert time.monotonic() - began < 150


@pytest.mark.timeout(120)
def test_kill_9_in_the_middle_of_a_snapshot_keeps_the_previous_one(rankd_server: Any) -> None:
    srv = rankd_server(fsync="always", snapshot_interval=0)
    batch = [{"member": f"m{i}", "score": i} for i in range(1000)]
    with srv.client(timeout=60) as c:
        for b in range(150):  # 150,000 entries: the child writes for tens of milliseconds
            r = c.post(f"/v1/boards/b{b % 3}/scores:batch", json=batch)
            assert r.status_code == 200, r.text
        assert c.post("/v1/admin/snapshot").status_code == 200
        r = c.post("/v1/boards/late/scores", json={"member": "x", "score": 1})
        assert r.status_code == 200
    outcome: list[object] = []

    def snap() -> None:
        with srv.client(timeout=60) as c2:
            try:
                outcome.append(c2.post("/v1/admin/snapshot").status_code)
            except httpx.TransportError as exc:
                outcome.append(exc)

    # Freeze the child the moment its temp file appears, so the kill lands mid-write however
    # fast snapshots get. A child that renamed first (the temp file is gone) is let go and
    # the attempt repeated.
    for _ in range(5):
        previous = datadir.snapshot_path(srv.data_dir).read_bytes()
        outcome.clear()
        t = threading.Thread(target=snap)
        t.start()
        deadline = time.monotonic() + 30
        temp: list[Path] = []
        while not temp:
            assert time.monotonic() < deadline, "the snapshot never started"
            temp = [p for p in srv.data_dir.iterdir() if ".tmp-" in p.name]
        child = int(temp[0].name.rsplit("-", 1)[1])
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGSTOP)
        if temp[0].exists():
            break  # stopped before its rename: the snapshot on disk is still the previous one
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGCONT)
        t.join(30)
        assert outcome == [200]
    else:
        pytest.fail("every snapshot child renamed its file before it could be stopped")
    srv.stop(signal.SIGKILL)
    t.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError)
    # The child dies with its parent (PR_SET_PDEATHSIG) instead of finishing behind its back
    # (a stopped child would otherwise stay stopped forever, and this loop would notice).
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and _state(child) != "Z":
        assert time.monotonic() < deadline, "snapshot child outlived the killed server"
        time.sleep(0.01)
    assert datadir.snapshot_path(srv.data_dir).read_bytes() == previous
    srv.start()
    with srv.client() as c:
        assert c.get("/v1/boards/b0").json()["size"] == 1000
        assert c.get("/v1/boards/late/members/x").status_code == 200
    assert [p for p in srv.data_dir.iterdir() if ".tmp-" in p.name] == []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def test_rankd_refuses_a_corrupt_journal_by_file_and_offset(rankd_server: Any) -> None:
    srv = rankd_server(fsync="always")
    with srv.client() as c:
        assert c.post("/v1/boards/b/scores", json={"member": "m", "score": 1}).status_code == 200
    srv.stop(signal.SIGKILL)
    seg = datadir.segments(srv.data_dir)[-1][1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="exited"):
        srv.start()
    assert f"{seg}: frame checksum mismatch at byte offset" in srv.logs()
    srv.env["RANKD_ON_BAD_DATA"] = "move-aside"
    srv.start()
    with srv.client() as c:
        assert c.get("/v1/boards/b/members/m").status_code == 404  # moved aside with its record
        assert c.post("/v1/boards/b/scores", json={"member": "m", "score": 2}).status_code == 200
    assert any(".bad-" in p.name for p in srv.data_dir.iterdir())
