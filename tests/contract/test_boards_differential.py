"""Differential test: random writes and deletes over HTTP against a plain-Python model.

One board per option combination (order x update x ties = 12). The model of a board is a
dict ``member -> (score, seq, metadata)`` and ``sorted()``; ``seq`` is the model's own write
counter, bumped exactly when a write changes a score, which is what "ties=first" means. Every
write result is compared as it comes back; at checkpoints every rank, every top page and an
around-me page for every member are compared too. Fixed seed: a failure replays exactly.
"""

import itertools
import random
from typing import Any

import httpx

from tests.board_model import RankedModel

ORDERS = ("desc", "asc")
UPDATES = ("best", "latest", "sum")
TIES = ("first", "member")
SEED = 20240611
MEMBERS = 40


def _score(rng: random.Random) -> int | float:
    # Few distinct values, so ties are common; some floats and negatives for "sum".
    roll = rng.random()
    if roll < 0.15:
        return rng.randint(-3, 3) + 0.5
    if roll < 0.25:
        return 0
    return rng.randint(-5, 30)


def _item(rng: random.Random) -> tuple[str, int | float, dict | None]:
    meta = {"v": rng.randint(0, 9)} if rng.random() < 0.2 else None
    return f"m{rng.randrange(MEMBERS)}", _score(rng), meta


def _body(member: str, score: int | float, meta: dict | None) -> dict[str, Any]:
    body: dict[str, Any] = {"member": member, "score": score}
    if meta is not None:
        body["metadata"] = meta
    return body


def _check_board(http: httpx.Client, rng: random.Random, path: str, model: RankedModel) -> None:
    ranking = model.ranking()
    total = len(ranking)
    for offset in range(0, max(total, 1), 7):
        got = http.get(f"{path}/top", params={"offset": offset, "limit": 7}).json()
        assert got["total"] == total
        assert got["entries"] == model.page(offset, 7), (path, offset)
    assert http.get(f"{path}/top", params={"limit": 1000}).json()["entries"] == model.page(0, 1000)
    for rank, member in enumerate(ranking, 1):
        assert http.get(f"{path}/members/{member}").json() == model.member(member), rank
        radius = rng.randint(0, 6)
        got = http.get(f"{path}/members/{member}/around", params={"radius": radius}).json()
        assert got["entries"] == model.around(member, radius), (path, member, radius)
    for _ in range(5):
        s = _score(rng)
        got = http.get(f"{path}/rank", params={"score": repr(s)}).json()
        assert got["rank"] == model.rank_for_score(s), (path, s)
    assert http.get(path).json()["size"] == total


def test_random_writes_match_the_model(http: httpx.Client, name: str) -> None:
    rng = random.Random(SEED)
    boards: dict[str, RankedModel] = {}
    for order, update, ties in itertools.product(ORDERS, UPDATES, TIES):
        path = f"/v1/boards/{name}-{order}-{update}-{ties}"
        r = http.put(path, json={"order": order, "update": update, "ties": ties})
        assert r.status_code == 201
        boards[path] = RankedModel(order, update, ties)

    writes = deletes = 0
    for _round in range(3):
        for path, model in boards.items():
            # Batches: many writes, cheaply, each result checked in order.
            for _ in range(3):
                items = [_item(rng) for _ in range(rng.randint(20, 60))]
                got = http.post(f"{path}/scores:batch", json=[_body(*i) for i in items]).json()
                assert got == [model.write(*i) for i in items], path
                writes += len(items)
            # Single POSTs and deletes interleaved.
            for _ in range(30):
                if model.entries and rng.random() < 0.2:
                    member = rng.choice(sorted(model.entries))
                    assert http.delete(f"{path}/members/{member}").status_code == 204
                    model.delete(member)
                    deletes += 1
                else:
                    item = _item(rng)
                    got = http.post(f"{path}/scores", json=_body(*item)).json()
                    assert got == model.write(*item), (path, item)
                    writes += 1
            # A batch that fails validation changes nothing.
            bad = [_body(*_item(rng)), {"member": "x", "score": "NaN"}]
            assert http.post(f"{path}/scores:batch", json=bad).status_code == 400
        for path, model in boards.items():
            _check_board(http, rng, path, model)
    assert writes + deletes >= 5000, (writes, deletes)
