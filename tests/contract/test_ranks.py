"""Ranks over HTTP and WebSocket, through the real server: ranking kinds, percentile, lookup,
score ranges and metadata patches (DESIGN "Ranks", "HTTP API").

The differential test drives one board per (order, ties, ranking) with random writes over HTTP,
switching ranking while the board is full, and compares every answer that carries a rank with
``RankedModel`` (tests/board_model.py). Fixed seed: a failure replays exactly. The restart
tests kill the server (-9; fsync=always on the embedded backend, the cluster keeps the data
on redis) and check that a ranking and a metadata patch that
were acknowledged are still there. Both backends.
"""

from __future__ import annotations

import itertools
import random
import signal
from typing import Any

import httpx
import pytest

from tests.board_model import RankedModel
from tests.contract.conftest import BACKENDS
from tests.contract.test_ws import http_client, run, ws_client
from tests.servers import RankdServer, ServerFactory
from tests.service.test_readme_tour import _block_after, _run

SEED = 20261203
RANKINGS = ("ordinal", "competition", "dense")
MEMBERS = 30


def _score(rng: random.Random) -> int | float:
    roll = rng.random()
    if roll < 0.2:
        return rng.randint(-2, 2) + 0.5
    return rng.randint(-3, 8)  # few values: ties everywhere


def _check(http: httpx.Client, rng: random.Random, path: str, model: RankedModel) -> None:
    total = len(model.entries)
    for offset in range(0, max(total, 1), 6):
        got = http.get(f"{path}/top", params={"offset": offset, "limit": 6}).json()
        assert got["total"] == total and got["entries"] == model.page(offset, 6), (path, offset)
    for member in model.entries:
        assert http.get(f"{path}/members/{member}").json() == model.member(member), path
        radius = rng.randint(0, 4)
        got = http.get(f"{path}/members/{member}/around", params={"radius": radius}).json()
        assert got["entries"] == model.around(member, radius), (path, member)
    asked = [f"m{i}" for i in rng.sample(range(MEMBERS + 5), 12)]
    entries, missing = model.lookup(asked)
    got = http.post(f"{path}/members:lookup", json={"members": asked}).json()
    assert got == {"board": path.rsplit("/", 1)[1], "total": total, "entries": entries,
                   "missing": missing}  # fmt: skip
    for _ in range(4):
        low, high = sorted([_score(rng), _score(rng)])
        offset, limit = rng.randint(0, 4), rng.randint(1, 10)
        params: dict[str, Any] = {"min": repr(low), "max": repr(high)}
        params.update(offset=offset, limit=limit)
        got = http.get(f"{path}/scores", params=params).json()
        count, page = model.score_range(low, high, offset, limit)
        assert (got["count"], got["entries"], got["total"]) == (count, page, total), (path, low)
        s = _score(rng)
        assert http.get(f"{path}/rank", params={"score": repr(s)}).json()["rank"] == (
            model.rank_for_score(s)
        ), (path, s)


def test_random_writes_match_the_model_under_every_ranking(http: httpx.Client, name: str) -> None:
    rng = random.Random(SEED)
    boards: dict[str, RankedModel] = {}
    for order, ties, ranking in itertools.product(("desc", "asc"), ("first", "member"), RANKINGS):
        path = f"/v1/boards/{name}-{order}-{ties}-{ranking}"
        update = rng.choice(("best", "latest", "sum"))
        options = {"order": order, "update": update, "ties": ties, "ranking": ranking}
        r = http.put(path, json=options)
        assert r.status_code == 201 and r.json()["ranking"] == ranking, r.text
        boards[path] = RankedModel(order, update, ties, ranking)
    for _round in range(3):
        for path, model in boards.items():
            items = [(f"m{rng.randrange(MEMBERS)}", _score(rng)) for _ in range(25)]
            body = [{"member": m, "score": s} for m, s in items]
            got = http.post(f"{path}/scores:batch", json=body).json()
            assert got == [model.write(m, s, None) for m, s in items], path
            for _ in range(8):
                member, score = f"m{rng.randrange(MEMBERS)}", _score(rng)
                got = http.post(f"{path}/scores", json={"member": member, "score": score})
                assert got.json() == model.write(member, score, None), path
            member = rng.choice(sorted(model.entries))
            meta = rng.choice([None, {"round": _round}])
            r = http.patch(f"{path}/members/{member}", json={"metadata": meta})
            assert r.status_code == 200 and r.json() == model.set_metadata(member, meta), r.text
            if rng.random() < 0.3:
                member = rng.choice(sorted(model.entries))
                assert http.delete(f"{path}/members/{member}").status_code == 204
                model.delete(member)
            _check(http, rng, path, model)
            # ranking may change any time, on a full board
            kind = rng.choice(RANKINGS)
            r = http.put(path, json={"ranking": kind})
            assert r.status_code == 200 and r.json()["ranking"] == kind
            model.kind = kind
            _check(http, rng, path, model)


def test_ranking_option_is_validated_and_described(http: httpx.Client, name: str, problem) -> None:
    path = f"/v1/boards/{name}"
    body = problem(http.put(path, json={"ranking": "olympic"}), 400)
    assert "ranking" in body["detail"] and "'olympic'" in body["detail"]
    problem(http.put(path, json={"ranking": None}), 400)
    assert http.get(path).status_code == 404
    assert http.put(path, json={}).json()["ranking"] == "ordinal"
    for member, score in [("a", 3), ("b", 2), ("c", 2), ("d", 1)]:
        http.post(f"{path}/scores", json={"member": member, "score": score})
    assert (
        http.put(path, json={"ranking": "dense"}).json().items()
        >= {
            "board": name,
            "order": "desc",
            "update": "best",
            "ties": "first",
            "ranking": "dense",
            "size": 4,
        }.items()
    )
    assert http.get(path).json()["ranking"] == "dense"
    listed = http.get("/v1/boards", params={"limit": 1000}).json()["boards"]
    assert {"board": name, "ranking": "dense"}.items() <= next(
        b for b in listed if b["board"] == name
    ).items()
    assert [e["rank"] for e in http.get(f"{path}/top").json()["entries"]] == [1, 2, 2, 3]
    assert http.get(f"{path}/members/c").json() == {
        "rank": 2,
        "member": "c",
        "score": 2,
        "percentile": 100.0 / 3,
    }
    http.put(path, json={"ranking": "competition"})
    assert [e["rank"] for e in http.get(f"{path}/top").json()["entries"]] == [1, 2, 2, 4]
    assert http.get(f"{path}/rank", params={"score": "2"}).json()["rank"] == 2
    write = http.post(f"{path}/scores", json={"member": "d", "score": 2}).json()
    assert (write["rank"], write["previous"]) == (2, {"score": 1, "rank": 4})


def test_lookup_answers_and_refusals(http: httpx.Client, name: str, problem) -> None:
    path = f"/v1/boards/{name}"
    problem(http.post(f"{path}/members:lookup", json={"members": ["a"]}), 404)
    for i in range(10):
        http.post(f"{path}/scores", json={"member": f"p{i}", "score": i % 3})
    got = http.post(f"{path}/members:lookup", json={"members": ["p1", "ghost", "p9", "p1"]})
    assert got.json() == {
        "board": name,
        "total": 10,
        "entries": [
            {"rank": 4, "member": "p1", "score": 1},
            {"rank": 10, "member": "p9", "score": 0},
        ],
        "missing": ["ghost"],
    }
    ok = http.post(f"{path}/members:lookup", json={"members": [f"p{i % 10}" for i in range(1000)]})
    assert ok.status_code == 200 and len(ok.json()["entries"]) == 10
    too_many = http.post(f"{path}/members:lookup", json={"members": ["p1"] * 1001})
    assert "1000" in problem(too_many, 400)["detail"]
    problem(http.post(f"{path}/members:lookup", json={"members": "p1"}), 400)
    problem(http.post(f"{path}/members:lookup", json={}), 400)
    problem(http.post(f"{path}/members:lookup", json={"members": ["a/b"]}), 400)
    problem(http.post(f"{path}/members:lookup", json={"members": [1]}), 400)
    problem(http.post(f"{path}/members:lookup", json={"members": [""]}), 400)
    problem(http.post(f"{path}/members:lookup", json={"members": [], "extra": 1}), 400)
    problem(http.post(f"{path}/members:lookup", content=b"[", headers=_JSON), 400)
    problem(http.post(f"{path}/members:lookup", content=b"{}", headers={"content-type": "x"}), 415)


_JSON = {"content-type": "application/json"}


def test_score_ranges(http: httpx.Client, name: str, problem) -> None:
    path = f"/v1/boards/{name}"
    problem(http.get(f"{path}/scores", params={"min": 0, "max": 1}), 404)
    http.put(path, json={"order": "asc"})  # lap times: lower is better
    for i, t in enumerate([61.5, 59.25, 60, 60.0, 75, 58]):
        http.post(f"{path}/scores", json={"member": f"r{i}", "score": t})
    got = http.get(f"{path}/scores", params={"min": "59", "max": "61.5"}).json()
    assert got == {
        "board": name,
        "total": 6,
        "count": 4,
        "entries": [
            {"rank": 2, "member": "r1", "score": 59.25},
            {"rank": 3, "member": "r2", "score": 60},
            {"rank": 4, "member": "r3", "score": 60.0},
            {"rank": 5, "member": "r0", "score": 61.5},
        ],
    }
    page = http.get(f"{path}/scores", params={"min": "59", "max": "61.5", "offset": 1, "limit": 2})
    assert [e["member"] for e in page.json()["entries"]] == ["r2", "r3"]
    assert page.json()["count"] == 4
    everything = http.get(f"{path}/scores", params={"limit": 1000}).json()
    assert everything["count"] == 6 and everything["entries"][0]["member"] == "r5"
    assert http.get(f"{path}/scores", params={"min": "100"}).json()["count"] == 0
    assert "min" in problem(http.get(f"{path}/scores", params={"min": 2, "max": 1}), 400)["detail"]
    problem(http.get(f"{path}/scores", params={"min": "abc"}), 400)
    problem(http.get(f"{path}/scores", params={"max": "1e999"}), 400)
    problem(http.get(f"{path}/scores", params={"max": str(2**63)}), 400)
    problem(http.get(f"{path}/scores", params={"limit": 1001}), 400)
    problem(http.get(f"{path}/scores", params={"limit": 0}), 400)
    problem(http.get(f"{path}/scores", params={"score": 1}), 400)
    problem(http.get(f"{path}/scores?min=1&min=2"), 400)


def test_patch_metadata(http: httpx.Client, name: str, problem) -> None:
    path = f"/v1/boards/{name}"
    problem(http.patch(f"{path}/members/a", json={"metadata": None}), 404)
    http.post(f"{path}/scores", json={"member": "a", "score": 5, "metadata": {"lvl": 1}})
    http.post(f"{path}/scores", json={"member": "b", "score": 5})
    problem(http.patch(f"{path}/members/zed", json={"metadata": None}), 404)
    r = http.patch(f"{path}/members/b", json={"metadata": {"team": "red"}})
    assert r.status_code == 200
    assert r.json() == {"rank": 2, "member": "b", "score": 5, "metadata": {"team": "red"}}
    assert http.get(f"{path}/top").json()["entries"] == [
        {"rank": 1, "member": "a", "score": 5, "metadata": {"lvl": 1}},  # a still first in
        {"rank": 2, "member": "b", "score": 5, "metadata": {"team": "red"}},
    ]
    assert http.patch(f"{path}/members/a", json={"metadata": None}).json() == {
        "rank": 1,
        "member": "a",
        "score": 5,
    }
    assert "metadata" not in http.get(f"{path}/members/a").json()
    problem(http.patch(f"{path}/members/a", json={}), 400)
    problem(http.patch(f"{path}/members/a", json={"metadata": [1]}), 400)
    problem(http.patch(f"{path}/members/a", json={"metadata": {"x": "y" * 2000}}), 400)
    problem(http.patch(f"{path}/members/a", json={"metadata": None, "score": 9}), 400)
    problem(http.patch(f"{path}/members/a", content=b"{", headers=_JSON), 400)
    # The shape of the body is judged before the board is looked up.
    problem(http.patch(f"/v1/boards/{name}-none/members/a", json={"metadata": 1}), 400)


def test_member_ids_with_a_slash_are_refused_on_every_write(
    http: httpx.Client, server: RankdServer, name: str, problem
) -> None:
    path = f"/v1/boards/{name}"
    problem(http.post(f"{path}/scores", json={"member": "a/b", "score": 1}), 400)
    r = http.post(f"{path}/scores:batch", json=[{"member": "ok", "score": 1}, {"member": "/"}])
    problem(r, 400)
    problem(http.post(f"{path}/scores:batch", json=[{"member": "x/", "score": 1}]), 400)
    assert http.get(path).status_code == 404  # nothing half-written, no board left behind

    async def main() -> None:
        async with ws_client(server) as ws:
            await ws.send(op="score", id="w1", board=name, member="a/b", score=1)
            frame = await ws.expect("error", "w1")
            assert frame["status"] == 400

    run(main)
    assert http.get(path).status_code == 404


def test_websocket_frames_show_shared_ranks_and_patches(server: RankdServer, name: str) -> None:
    async def main() -> None:
        async with ws_client(server) as ws, http_client(server) as http:
            path = f"/v1/boards/{name}"
            await http.put(path, json={"ranking": "dense"})
            for member, score in [("a", 9), ("b", 7), ("c", 7), ("d", 5)]:
                await http.post(f"{path}/scores", json={"member": member, "score": score})
            await ws.send(op="subscribe", id="t", board=name, top=4)
            top = await ws.expect("top", "t")
            assert [e["rank"] for e in top["entries"]] == [1, 2, 2, 3]
            await ws.send(op="subscribe", id="r", board=name, member="d")
            assert (await ws.expect("rank", "r"))["rank"] == 3
            # A write far above d, that crosses nobody's position next to d, moves its dense
            # rank: a new distinct score appears above it.
            await http.post(f"{path}/scores", json={"member": "a", "score": 10})
            await http.post(f"{path}/scores", json={"member": "e", "score": 8})
            frames = {f["id"]: f for f in await ws.quiet()}
            assert frames["r"]["rank"] == 4
            assert [e["rank"] for e in frames["t"]["entries"]] == [1, 2, 3, 3]
            # A metadata patch of a visible entry is pushed to top watchers.
            r = await http.patch(f"{path}/members/b", json={"metadata": {"team": "red"}})
            assert r.status_code == 200
            frames = {f["id"]: f for f in await ws.quiet()}
            assert set(frames) == {"t"}, frames  # d's rank did not change
            assert frames["t"]["entries"][2] == {
                "rank": 3,
                "member": "b",
                "score": 7,
                "metadata": {"team": "red"},
            }
            ack_seq = frames["t"]["seq"]
            # A WebSocket write is acked with the shared rank too.
            await ws.send(op="score", id="w", board=name, member="f", score=8)
            ack = await ws.expect("ack", "w")
            assert (ack["rank"], ack["previous"]) == (2, None), ack
            frames = {f["id"]: f for f in await ws.quiet()}
            assert [e["rank"] for e in frames["t"]["entries"]] == [1, 2, 2, 3]
            assert frames["t"]["seq"] > ack_seq
            assert "r" not in frames  # f shares e's score: d's dense rank stays 4

    run(main)


@pytest.mark.parametrize("ties", ["first", "member"])
def test_ranking_and_patches_survive_kill_9(
    rankd_server: ServerFactory, backend: str, ties: str
) -> None:
    srv = rankd_server(**BACKENDS[backend].durable_flags)
    with srv.client() as http:
        path = f"/v1/boards/season-{ties}"  # one board each: redis servers share a cluster
        assert http.put(path, json={"ties": ties, "ranking": "competition"}).status_code == 201
        for i in range(20):
            http.post(
                f"{path}/scores", json={"member": f"m{i}", "score": i % 5, "metadata": {"i": i}}
            )
        http.patch(f"{path}/members/m3", json={"metadata": {"badge": "gold"}})
        http.patch(f"{path}/members/m4", json={"metadata": None})
        http.post(f"{path}/scores", json={"member": "m4", "score": 9})
        before = http.get(f"{path}/top", params={"limit": 100}).json()
        members = {m: http.get(f"{path}/members/m{m}").json() for m in range(20)}
    srv.stop(signal.SIGKILL)
    srv.start()
    with srv.client() as http:
        assert http.get(path).json()["ranking"] == "competition"
        assert http.get(f"{path}/top", params={"limit": 100}).json() == before
        assert {m: http.get(f"{path}/members/m{m}").json() for m in range(20)} == members
        assert members[3]["metadata"] == {"badge": "gold"} and "metadata" not in members[4]
        # a graceful restart goes through a snapshot instead of the journal
        http.put(path, json={"ranking": "dense"})
        dense = http.get(f"{path}/top", params={"limit": 100}).json()
    srv.restart()
    with srv.client() as http:
        assert http.get(path).json()["ranking"] == "dense"
        assert http.get(f"{path}/top", params={"limit": 100}).json() == dense


def test_readme_ranks_block_runs_verbatim(rankd_server: ServerFactory) -> None:
    srv = rankd_server()
    out = _run(srv, _block_after("## Ranks, friends lists and score ranges"))
    with srv.client() as http:
        got = http.get("/v1/boards/cup/scores", params={"min": 75, "max": 85}).json()
        assert [(e["member"], e["rank"]) for e in got["entries"]] == [("bob", 2), ("cy", 2)]
        assert http.get("/v1/boards/cup").json()["ranking"] == "dense"
    assert '"missing":["zed"]' in out and '"percentile":33.33' in out
