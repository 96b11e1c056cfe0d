"""Idempotent writes on the redis backend (rankd.lua "Idempotency", README "Scaling out").

Through a real rankd on the session's cluster: an Idempotency-Key repeated on a sum board
applies once and answers the first reply; the same key with another body is 409; keys are
scoped per board and member(s); a malformed header is 400. On the function itself: a repeated
rankd-drawn id (what rankd's own retry after a connection error sends) applies once, on sum and
latest boards; the records are bounded in time and dropped with the board. The kill -9 runs
are in test_redis_durability.py.
"""

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from redis.asyncio import RedisCluster

from service.backend.redis import keys
from service.backend.redis.boards import RedisBoards, write_id
from tests.redis.redis_support import board_name
from tests.servers import RankdServer

pytestmark = pytest.mark.redis


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
