"""Issue #13 item 2, the journal's part: every journalled board write says who wrote it.

On the real server: key holders, a player over HTTP and over the WebSocket, and a server
without keys write; the process is killed (SIGKILL), ``rankd check`` counts the writes per
writer kind, the records name the player's user id and never its session id, and a restart
replays them (the writer is metadata) and keeps them.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import orjson

from store.disk import datadir, frames, journal
from tests.contract.test_ws import ws_client

ADMIN = "writers-admin-0123456789"
WRITER_KEY = "writers-write-0123456789"
KEYS = [f"{ADMIN}:admin", f"{WRITER_KEY}:write"]
A = {"authorization": f"Bearer {ADMIN}"}
W = {"authorization": f"Bearer {WRITER_KEY}"}
BOARD_WRITES = {journal.BSET, journal.BDEL, journal.BBATCH, journal.BMULTI}


def _rankd(args: list[str], rankd_argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*rankd_argv, *args], capture_output=True, text=True, timeout=60)


def _board_records(directory: Path) -> list[tuple[int, bytes]]:
    """(code, payload) of every board-write record in the data directory's segments."""
    out = []
    for _, path in datadir.segments(directory):
        data = path.read_bytes()[journal.HEADER_SIZE :]
        at = 0
        while at + frames.HEADER_SIZE <= len(data):
            size = int.from_bytes(data[at : at + 4], "little")
            body = data[at + frames.HEADER_SIZE : at + frames.HEADER_SIZE + size]
            if body and body[0] in BOARD_WRITES:
                out.append((body[0], body[1:]))
            at += frames.HEADER_SIZE + size
    return out


def _counts(stdout: str) -> str:
    lines = [ln for ln in stdout.splitlines() if "board writes in the journal" in ln]
    assert len(lines) == 1, stdout
    return lines[0].split(":", 1)[1].strip()


def test_who_wrote_survives_kill_9_and_rankd_check_counts_it(
    rankd_server: Any, rankd_argv: list[str]
) -> None:
    srv = rankd_server(api_key=KEYS, fsync="always", snapshot_interval=0)
    with srv.client() as c:
        assert c.put("/v1/boards/g", json={"player_writes": True}, headers=A).is_success
        r = c.post("/v1/sessions", json={"user": "alice"}, headers=A)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        me = {"authorization": f"Session {sid}"}
        for i in range(3):  # key: 3 records
            assert c.post("/v1/boards/g/scores", json={"member": f"k{i}", "score": i}, headers=W)
        batch = [{"member": "b0", "score": 1}, {"member": "b1", "score": 2}]
        assert c.post("/v1/boards/g/scores:batch", json=batch, headers=A).is_success  # key
        assert c.delete("/v1/boards/g/members/k0", headers=W).status_code == 204  # key
        r = c.post("/v1/boards/g/scores", json={"score": 10}, headers=me)  # player
        assert r.status_code == 200 and r.json()["member"] == "alice", r.text
        r = c.post("/v1/boards/g/scores", json={"member": "alice", "score": 11}, headers=me)
        assert r.status_code == 200, r.text
        r = c.post("/v1/boards/g/scores", json={"member": "k1", "score": 99}, headers=me)
        assert r.status_code == 403, r.text  # refused: no record

    async def over_the_websocket() -> None:
        async with ws_client(srv, f"?session={sid}") as ws:  # player: 1 record
            await ws.send(op="score", id="p", board="g", score=12)
            await ws.expect("ack", "p")
        async with ws_client(srv, "", W) as ws:  # key: 1 record
            await ws.send(op="score", id="k", board="g", member="k9", score=5)
            await ws.expect("ack", "k")

    asyncio.run(over_the_websocket())
    srv.stop(signal.SIGKILL)

    records = _board_records(srv.data_dir)
    assert len(records) == 9, records
    player = [orjson.loads(p) for _, p in records if b'"alice"' in p]
    assert len(player) == 3 and all(p[-2:] == [2, "alice"] for p in player), player
    for _, payload in records:
        assert sid.encode() not in payload  # the user id, never the session id
    check = _rankd(["check", "--data-dir", str(srv.data_dir)], rankd_argv)
    assert check.returncode == 0 and "result: ok" in check.stdout, check
    assert _counts(check.stdout) == "key 6, player 3", check.stdout
    assert sid not in check.stdout + check.stderr

    srv.start()  # replay: the writers change nothing in the state
    with srv.client() as c:
        top = c.get("/v1/boards/g/top?limit=20", headers=A).json()["entries"]
        got = {e["member"]: e["score"] for e in top}
        assert got == {"alice": 12, "k9": 5, "b1": 2, "k2": 2, "b0": 1, "k1": 1}, got
        assert c.post("/v1/boards/g/scores", json={"member": "k3", "score": 3}, headers=W)
    srv.stop(signal.SIGKILL)
    again = _rankd(["check", "--data-dir", str(srv.data_dir)], rankd_argv)
    assert _counts(again.stdout) == "key 7, player 3", again.stdout


def test_a_server_without_keys_records_open_writes(
    rankd_server: Any, rankd_argv: list[str]
) -> None:
    srv = rankd_server(fsync="always", snapshot_interval=0)
    with srv.client() as c:
        assert c.post("/v1/boards/o/scores", json={"member": "m", "score": 1}).is_success
        batch = [{"member": "n", "score": 2}]
        assert c.post("/v1/boards/o/scores:batch", json=batch).is_success
        r = c.patch("/v1/boards/o/members/m", json={"metadata": {"x": 1}})
        assert r.status_code == 200, r.text
    srv.stop(signal.SIGKILL)
    check = _rankd(["check", "--data-dir", str(srv.data_dir)], rankd_argv)
    assert _counts(check.stdout) == "open 3", check.stdout
    assert all(orjson.loads(p)[-1] == 3 for _, p in _board_records(srv.data_dir))
    with httpx.Client(base_url=srv.start().url, trust_env=False) as c:
        assert c.get("/v1/boards/o/members/m").json()["metadata"] == {"x": 1}
