"""Idempotent writes on the redis backend (rankd.lua "Idempotency", README "Scaling out").

Through a real rankd on the session's cluster: an Idempotency-Key repeated on a sum board
applies once and answers the first reply; the same key with another body is 409; keys are
scoped per board and member(s); a malformed header is 400. On the function itself: a repeated
rankd-drawn id (what rankd's own retry after a connection error sends) applies once, on sum and
latest boards; the records are bounded in time and dropped with the board. The kill -9 runs
are in test_redis_durability.py.
"""

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import RedisCluster

from service.backend.redis import keys
from service.backend.redis.boards import RedisBoards, write_id
from service.backend.redis.windows import RedisWindows
from store.clock import ManualClock
from store.errors import Conflict
from tests.redis.redis_support import board_name
from tests.servers import RankdServer

pytestmark = pytest.mark.redis

T0 = datetime(2026, 11, 27, 21, 30, tzinfo=UTC).timestamp()
DAY = 86400


@pytest.fixture(scope="module")
def rankd(redis_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RankdServer]:
    srv = RankdServer(
        tmp_path_factory.mktemp("idem"),
        {
            "backend": "redis",
            "redis_url": redis_cluster,
            "redis_prefix": "id" + uuid.uuid4().hex[:6],
        },
    )
    srv.start()
    yield srv
    srv.stop()


def test_a_repeated_idempotency_key_applies_once(rankd: RankdServer) -> None:
    board = board_name("idem")
    with rankd.client() as c:
        assert c.put(f"/v1/boards/{board}", json={"update": "sum"}).status_code == 201
        url = f"/v1/boards/{board}/scores"
        first = c.post(url, json={"member": "m", "score": 5}, headers={"Idempotency-Key": "k1"})
        assert first.status_code == 200, first.text
        again = c.post(url, json={"member": "m", "score": 5}, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 200 and again.json() == first.json()
        assert c.get(f"{url[:-7]}/members/m").json()["score"] == 5
        # a new key applies again; no key always applies
        assert c.post(url, json={"member": "m", "score": 2}, headers={"Idempotency-Key": "k2"})
        assert c.post(url, json={"member": "m", "score": 1}).status_code == 200
        assert c.get(f"/v1/boards/{board}/members/m").json()["score"] == 8
        # the same key on another member is another write (scoped per board + member)
        other = c.post(url, json={"member": "n", "score": 3}, headers={"Idempotency-Key": "k1"})
        assert other.status_code == 200 and other.json()["score"] == 3
        # the same key and member with another body: refused, nothing applied
        r = c.post(url, json={"member": "m", "score": 6}, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 409, r.text
        assert r.json()["type"] == "urn:rankd:problem:conflict"
        assert c.get(f"/v1/boards/{board}/members/m").json()["score"] == 8
        # a batch: the key covers the whole request
        items = [{"member": "m", "score": 1}, {"member": "p", "score": 1}]
        b1 = c.post(f"{url}:batch", json=items, headers={"Idempotency-Key": "b"})
        b2 = c.post(f"{url}:batch", json=items, headers={"Idempotency-Key": "b"})
        assert b1.status_code == b2.status_code == 200 and b1.json() == b2.json()
        assert c.get(f"/v1/boards/{board}/members/m").json()["score"] == 9
        assert c.get(f"/v1/boards/{board}/members/p").json()["score"] == 1


def test_malformed_idempotency_keys_are_refused(rankd: RankdServer) -> None:
    board = board_name("idem")
    with rankd.client() as c:
        url = f"/v1/boards/{board}/scores"
        for bad in ("x" * 129, "with space", ""):
            r = c.post(url, json={"member": "m", "score": 1}, headers={"Idempotency-Key": bad})
            assert r.status_code == 400, (bad, r.text)
            assert "Idempotency-Key must be 1-128 visible ASCII" in r.json()["detail"]
            assert bad not in r.json()["detail"] or not bad
        assert c.get(f"/v1/boards/{board}").status_code == 404  # nothing was written


def test_a_repeated_rankd_id_applies_once_on_sum_and_latest(run) -> None:
    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        for update in ("sum", "latest", "best"):
            name = board_name(update)
            await rb.configure(name, {"update": update})
            idem = write_id(["m"], None)
            first = await rb.write(name, "m", 10, None, idem)
            again = await rb.write(name, "m", 10, None, idem)
            if update == "best":
                assert again == {**first, "changed": False, "previous": again["previous"]}
            else:
                assert again == first  # the first reply, changed=True included
            assert (await rb.entry(name, "m"))["score"] == 10
            iz, ih = keys.idem_keys(rb.prefix, name)
            recorded = await client.hlen(ih)
            # best boards keep no record of rankd's own ids: re-applying a best is a no-op
            assert recorded == (0 if update == "best" else 1), update
            if recorded:
                ttl = await client.pttl(iz)
                assert 0 < ttl <= 300_000
            # a concurrent pair with one id: exactly one applies
            idem = write_id(["m"], None)
            await asyncio.gather(*(rb.write(name, "m", 1, None, idem) for _ in range(2)))
            expected = {"sum": 11, "latest": 1, "best": 10}[update]
            assert (await rb.entry(name, "m"))["score"] == expected, update
            await rb.drop(name)
            assert not await client.exists(iz, ih)  # dropped with the board

    run(body)


def test_write_ids() -> None:
    drawn = {write_id(["m"], None) for _ in range(100)}
    assert len(drawn) == 100 and all(len(i) == 33 and i[0] == "r" for i in drawn)
    a = write_id(["m"], "key")
    assert a == write_id(["m"], "key") and a[0] == "c" and len(a) == 33
    assert a != write_id(["n"], "key") and a != write_id(["m"], "key2")
    assert write_id(["a", "b"], "k") != write_id(["ab"], "k")


def _day_and_all(c: httpx.Client, board: str, member: str) -> tuple[Any, Any]:
    got = []
    for window in ("all", "day"):
        r = c.get(f"/v1/boards/{board}/members/{member}", params={"window": window})
        got.append(r.json()["score"] if r.status_code == 200 else None)
    return got[0], got[1]


def test_a_repeated_key_applies_once_in_every_window(rankd: RankdServer) -> None:
    """rankd_xwrite (a board with windows) records the id as rankd_write does: a repeat is
    answered from the record in every window; another body under the key is 409."""
    board = board_name("xidem")
    with rankd.client() as c:
        r = c.put(f"/v1/boards/{board}", json={"update": "sum", "windows": ["all", "day"]})
        assert r.status_code == 201, r.text
        url = f"/v1/boards/{board}/scores"
        key = {"Idempotency-Key": "w1"}
        first = c.post(url, json={"member": "m", "score": 5}, headers=key)
        assert first.status_code == 200, first.text
        assert set(first.json()["windows"]) == {"all", "day"}
        again = c.post(url, json={"member": "m", "score": 5}, headers=key)
        assert again.status_code == 200 and again.json() == first.json()
        assert _day_and_all(c, board, "m") == (5, 5)
        # another body under the key: 409, nothing applied in any window
        r = c.post(url, json={"member": "m", "score": 6}, headers=key)
        assert r.status_code == 409, r.text
        assert r.json()["type"] == "urn:rankd:problem:conflict"
        r = c.post(url, json={"member": "m", "score": 5, "metadata": {"x": 1}}, headers=key)
        assert r.status_code == 409, r.text
        assert _day_and_all(c, board, "m") == (5, 5)
        # no key: applies every time; a new key applies once
        assert c.post(url, json={"member": "m", "score": 1}).status_code == 200
        assert c.post(url, json={"member": "m", "score": 1}).status_code == 200
        for _ in range(2):
            r = c.post(url, json={"member": "m", "score": 2}, headers={"Idempotency-Key": "w2"})
            assert r.status_code == 200, r.text
        assert _day_and_all(c, board, "m") == (9, 9)
        # a batch: the key covers the whole request, every item in every window
        items = [{"member": "m", "score": 1}, {"member": "p", "score": 3}]
        b1 = c.post(f"{url}:batch", json=items, headers={"Idempotency-Key": "wb"})
        b2 = c.post(f"{url}:batch", json=items, headers={"Idempotency-Key": "wb"})
        assert b1.status_code == b2.status_code == 200, b1.text
        assert b1.json() == b2.json()
        assert _day_and_all(c, board, "m") == (10, 10)
        assert _day_and_all(c, board, "p") == (3, 3)


def test_a_dated_write_with_a_key_applies_once(rankd: RankdServer) -> None:
    """``at`` (which needs a ``grace``) takes the rankd_xwrite path; the key works there, and
    ``at`` is part of the body: another ``at`` under the key is 409."""
    both: list[dict[str, Any]] = [
        {"update": "sum", "grace": 60},
        {"update": "sum", "windows": ["all", "day"], "grace": 60},
    ]
    for options in both:
        board = board_name("xdated")
        with rankd.client() as c:
            assert c.put(f"/v1/boards/{board}", json=options).status_code == 201
            url = f"/v1/boards/{board}/scores"
            at = round(time.time() - 5, 3)
            key = {"Idempotency-Key": "d1"}
            first = c.post(url, json={"member": "m", "score": 4, "at": at}, headers=key)
            assert first.status_code == 200, (options, first.text)
            again = c.post(url, json={"member": "m", "score": 4, "at": at}, headers=key)
            assert again.status_code == 200 and again.json() == first.json()
            r = c.post(url, json={"member": "m", "score": 4, "at": at - 1}, headers=key)
            assert r.status_code == 409, r.text
            r = c.post(url, json={"member": "m", "score": 4}, headers=key)  # no `at`: another
            assert r.status_code == 409, r.text
            assert c.get(f"/v1/boards/{board}/members/m").json()["score"] == 4
            if "windows" in options:
                assert _day_and_all(c, board, "m") == (4, 4)


def test_a_repeated_rankd_id_applies_once_on_windowed_boards(run) -> None:
    """What rankd's own retry sends to rankd_xwrite: the id of the first attempt. On sum and
    latest boards the repeat is answered from the record in every window, even from a retry
    whose clock moved into the next day (the write stays where it first applied); the records
    go with the board."""

    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        for update in ("sum", "latest", "best"):
            clock = ManualClock(T0)
            rw = RedisWindows(rb, clock)
            name = board_name("x" + update)
            await rw.configure(name, {"update": update, "windows": ["all", "day"], "keep": 1})
            idem = write_id(["m"], None)
            first = await rw.write_many(name, [("m", 10, None)], "1", idem)
            again = await rw.write_many(name, [("m", 10, None)], "1", idem)
            iz, ih = keys.idem_keys(rb.prefix, name)
            recorded = await client.hlen(ih)
            assert recorded == (0 if update == "best" else 1), update
            if update == "best":
                assert again[0]["changed"] is False and again[0]["score"] == 10
            else:
                assert again == first
            # the retry after a rollover, with the first attempt's `now`: the same periods
            clock.advance(DAY)
            late = await rw.write_many(name, [("m", 10, None)], "1", idem, T0)
            assert late[0]["windows"]["day"]["period"] == first[0]["windows"]["day"]["period"]
            day0 = (await rw.member(name, "m", "day", "previous"))["score"]
            assert day0 == 10 and (await rw.member(name, "m", None, None))["score"] == 10
            # a concurrent pair with one id: exactly one applies, in every window
            idem = write_id(["m"], None)
            await asyncio.gather(*(rw.write_many(name, [("m", 1, None)], "1", idem) for _ in "ab"))
            expected = {"sum": 11, "latest": 1, "best": 10}[update]
            assert (await rw.member(name, "m", None, None))["score"] == expected, update
            assert (await rw.member(name, "m", "day", None))["score"] == 1, update
            if update != "best":  # the same id with another body: Conflict, nothing written
                with pytest.raises(Conflict):
                    await rw.write_many(name, [("m", 2, None)], "1", idem)
                assert (await rw.member(name, "m", "day", None))["score"] == 1
            await rw.drop(name)
            assert not await client.exists(iz, ih)  # dropped with the board

    run(body)
