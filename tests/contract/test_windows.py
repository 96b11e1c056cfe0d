"""Windows and periods through the real server: a simulated month, kill -9 and restarts.

The server reads "now" from a file the test moves (service/testclock.py, RANKD_TEST_CLOCK_FILE),
so a month passes in seconds. A board with windows ["all", "week", "day"] is written through 31
days -- single writes, writes carrying ``at`` within grace, batches, deletes, ``keep`` changes
-- and killed with SIGKILL and restarted many times (fsync=always: every acknowledged write
must survive), sometimes after several days passed while it was down. At checkpoints every kept
period of every window is read over HTTP and compared with tests/board_model.py: the periods
list, every page, members, around pages, rank-for-score, and current/previous.

Both backends: on redis, each rankd process computes periods from its own (test) clock and the
cluster keeps the data across the rankd process's kill -9.
"""

import random
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.board_model import ModelBoard
from tests.contract.conftest import BACKENDS
from tests.contract.test_ws import http_client, run, ws_client
from tests.servers import ServerFactory

T0 = datetime(2026, 11, 27, 21, 30, tzinfo=UTC).timestamp()
HOUR = 3600
DAY = 86400
MEMBERS = 20
OPTIONS: dict[str, Any] = {
    "windows": ["all", "week", "day"],
    "keep": 3,
    "grace": 2 * HOUR,
    "reset_offset": 14400,
}


class Clock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.t = T0
        self.set(T0)

    def set(self, t: float) -> None:
        self.t = t
        self.path.write_text(repr(t))

    def now(self) -> float:
        return self.t


def _body(member: str, score: int, meta: dict | None, at: float | None = None) -> dict:
    body: dict[str, Any] = {"member": member, "score": score}
    if meta is not None:
        body["metadata"] = meta
    if at is not None:
        body["at"] = at
    return body


def _check(http: httpx.Client, path: str, model: ModelBoard, rng: random.Random) -> int:
    reads = 0
    info = http.get(path).json()
    assert info["sizes"] == {w.name: len(model.table(w.name)) for w in model.windows}
    for w in model.windows:
        periods = http.get(f"{path}/periods", params={"window": w.name}).json()
        assert periods == {"board": path.rsplit("/", 1)[1], "window": w.name,
                           "periods": model.periods(w.name)}  # fmt: skip
        for p in model.periods(w.name):
            q = {"window": w.name, "period": p["id"]}
            top = http.get(f"{path}/top", params={**q, "limit": 1000}).json()
            assert top["window"] == w.name and top["period"] == p["id"]
            assert top["total"] == p["size"]
            assert top["entries"] == model.page(0, 1000, w.name, p["id"]), (w.name, p["id"])
            reads += 2
            for member in rng.sample(model.ranking(w.name, p["id"]), min(3, p["size"])):
                got = http.get(f"{path}/members/{member}", params=q).json()
                want = model.entry(member, None, w.name, p["id"])
                # ordinal percentile: the share of the period's other entries ranked below
                n = p["size"]
                want["percentile"] = 100.0 if n == 1 else 100.0 * (n - want["rank"]) / (n - 1)
                assert got == want
                radius = rng.randint(0, 3)
                got = http.get(f"{path}/members/{member}/around", params={**q, "radius": radius})
                assert got.json()["entries"] == model.around(member, radius, w.name, p["id"])
                reads += 2
            score = rng.randint(-5, 40)
            got = http.get(f"{path}/rank", params={**q, "score": score}).json()
            assert got["rank"] == model.rank_for_score(score, w.name, p["id"])
        for which in ("current", "previous"):
            r = http.get(f"{path}/top", params={"window": w.name, "period": which, "limit": 1000})
            period = model.period(w.name, which)
            if period is None:
                assert r.status_code == 404
                assert r.json()["type"] == "urn:rankd:problem:period-not-found"
            else:
                assert r.json()["period"] == period.id
                assert r.json()["entries"] == model.page(0, 1000, w.name, which)
    return reads


def test_a_month_over_http_across_kill_9(
    rankd_server: ServerFactory, backend: str, tmp_path: Path
) -> None:
    clock = Clock(tmp_path / "now")
    flags = BACKENDS[backend].durable_flags
    srv = rankd_server(env={"RANKD_TEST_CLOCK_FILE": str(clock.path)}, **flags)
    rng = random.Random(20261127)
    path = "/v1/boards/month"
    model = ModelBoard("desc", "best", "first", OPTIONS["windows"], reset_offset=14400,
                       keep=3, grace=2 * HOUR, now=clock.now)  # fmt: skip
    http = srv.client()
    try:
        assert http.put(path, json=OPTIONS).status_code == 201
        kills = writes = checks = 0
        while clock.now() < T0 + 31 * DAY:
            clock.set(clock.now() + rng.choice([600, 1800, 3600, 4 * 3600, 9 * 3600]) + 0.25)
            for _ in range(rng.randint(1, 5)):
                roll = rng.random()
                member = f"m{rng.randrange(MEMBERS)}"
                meta = {"v": rng.randint(0, 9)} if rng.random() < 0.2 else None
                score = rng.randint(-5, 40)
                if roll < 0.08 and model.entries:
                    target = rng.choice(sorted(model.entries))
                    assert model.delete(target)
                    assert http.delete(f"{path}/members/{target}").status_code == 204
                elif roll < 0.25:
                    at = clock.now() - rng.uniform(0, 2 * HOUR)
                    got = http.post(f"{path}/scores", json=_body(member, score, meta, at))
                    assert got.json() == model.write(member, score, meta, at)
                elif roll < 0.35:
                    items = [(f"m{rng.randrange(MEMBERS)}", rng.randint(0, 9), None)
                             for _ in range(4)]  # fmt: skip
                    got = http.post(f"{path}/scores:batch", json=[_body(*i) for i in items])
                    assert got.json() == [model.write(*i) for i in items]
                else:
                    got = http.post(f"{path}/scores", json=_body(member, score, meta))
                    assert got.json() == model.write(member, score, meta)
                writes += 1
            if rng.random() < 0.03:
                model.set_keep(rng.randint(0, 4))
                assert http.put(path, json={"keep": model.keep}).status_code == 200
            if rng.random() < 0.08:
                _check(http, path, model, rng)
                checks += 1
            if rng.random() < 0.04:
                http.close()
                assert srv.stop(signal.SIGKILL) == -signal.SIGKILL
                if rng.random() < 0.4:
                    clock.set(clock.now() + rng.uniform(1, 5) * DAY)  # days pass while down
                srv.restart()
                http = srv.client()
                kills += 1
                _check(http, path, model, rng)
        # A refused `at` changes nothing.
        r = http.post(f"{path}/scores", json=_body("late", 1, None, clock.now() - 3 * HOUR))
        assert r.status_code == 400 and "grace" in r.json()["detail"]
        _check(http, path, model, rng)
        assert kills >= 5 and writes >= 600 and checks >= 10, (kills, writes, checks)
    finally:
        http.close()


def test_websocket_window_subscription_sees_the_rollover(
    rankd_server: ServerFactory, tmp_path: Path
) -> None:
    """A watched window's period ends while nobody writes: a ``period`` frame, then the new
    (empty) state -- for top, member and around subscriptions; the "all" window does not
    roll."""
    clock = Clock(tmp_path / "now")
    srv = rankd_server(env={"RANKD_TEST_CLOCK_FILE": str(clock.path)})
    path = "/v1/boards/live"

    async def main() -> None:
        async with ws_client(srv) as ws, http_client(srv) as http:
            r = await http.put(path, json={"windows": ["all", "day"]})
            assert r.status_code == 201
            await http.post(f"{path}/scores", json={"member": "ann", "score": 5})
            await ws.send(op="subscribe", id="d", board="live", top=3, window="day")
            day = await ws.expect("top", "d")
            assert (day["window"], day["period"]) == ("day", "2026-11-27")
            assert day["entries"] == [{"rank": 1, "member": "ann", "score": 5}]
            await ws.send(op="subscribe", id="a", board="live", top=3)
            assert (await ws.expect("top", "a"))["window"] == "all"
            await ws.send(op="subscribe", id="m", board="live", member="ann", window="day")
            assert (await ws.expect("rank", "m"))["rank"] == 1
            await ws.send(
                op="subscribe", id="n", board="live", member="ann", radius=2, window="day"
            )
            near = await ws.expect("around", "n")
            assert (near["window"], near["period"]) == ("day", "2026-11-27")
            assert near["entries"] == [{"rank": 1, "member": "ann", "score": 5}]
            clock.set(T0 + 3 * HOUR)  # past midnight, no write: the server's tick rolls it
            frames = await ws.quiet(2.5)
            kinds = [(f["type"], f["id"]) for f in frames]
            for sid in "dmn":
                assert kinds.count(("period", sid)) == 1, (sid, kinds)
            assert ("period", "a") not in kinds and ("top", "a") not in kinds
            period = next(f for f in frames if f["type"] == "period" and f["id"] == "d")
            assert period == {"type": "period", "id": "d", "board": "live", "window": "day",
                              "closed": "2026-11-27", "current": "2026-11-28"}  # fmt: skip
            top = [f for f in frames if f["type"] == "top" and f["id"] == "d"]
            assert top and top[-1]["entries"] == [] and top[-1]["period"] == "2026-11-28"
            assert kinds.index(("period", "d")) < kinds.index(("top", "d"))
            rank = [f for f in frames if f["type"] == "rank" and f["id"] == "m"]
            assert rank and rank[-1]["rank"] is None
            near_frames = [f for f in frames if f["type"] == "around" and f["id"] == "n"]
            assert near_frames and near_frames[-1]["entries"] == []
            assert near_frames[-1]["period"] == "2026-11-28"
            assert kinds.index(("period", "n")) < kinds.index(("around", "n"))
            # Writes now land in the new day only.
            await http.post(f"{path}/scores", json={"member": "bob", "score": 7})
            frames = await ws.quiet(1.0)
            top = [f for f in frames if f["type"] == "top" and f["id"] == "d"]
            assert top[-1]["entries"] == [{"rank": 1, "member": "bob", "score": 7}]
            await ws.send(op="subscribe", id="x", board="live", top=3, window=5)
            assert (await ws.expect("error", "x"))["status"] == 400

    run(main)
