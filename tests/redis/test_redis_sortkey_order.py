"""Redis orders equal-score ZSET members by memcmp, which is rankd's order of its sort keys.

The claim the whole redis backend rests on (SCALEOUT.md 1.1): ZADD every key with score 0 and
ZRANGE gives exactly the order of store.skiplist.SkipList / sorted() over the same bytes,
including exact int64 scores near +-2**63, floats, mixed int/float ties and seq tie-breaks.
"""

import random

import pytest
from redis.asyncio import RedisCluster

from service.backend.redis import keys
from store.skiplist import SkipList
from store.sortkey import encode_num, key_score, make_key
from tests.redis.redis_support import board_name

pytestmark = pytest.mark.redis


def random_score(rnd: random.Random) -> int | float:
    kind = rnd.randrange(7)
    if kind == 0:
        return 2**63 - 1 - rnd.randrange(4096) * rnd.choice((1, -1, 0))
    if kind == 1:
        return -(2**63) + 1 + rnd.randrange(4096)
    if kind == 2:
        return rnd.choice((1, -1)) * (2**53 + rnd.randrange(-4, 5))
    if kind == 3:
        return rnd.uniform(-1e18, 1e18)
    if kind == 4:
        return float(rnd.randrange(-20, 20))
    if kind == 5:
        return rnd.randrange(-20, 20)
    return rnd.choice((1, -1)) * rnd.random() * 2.0 ** rnd.randrange(-30, 63)


def test_zrange_of_score_0_keys_is_rankd_order(run) -> None:
    rnd = random.Random(11)
    generated = []
    for i in range(3000):
        s = random_score(rnd)
        if abs(s) >= 2**63:
            continue
        for desc in (False, True):
            stored = -s if desc else s
            seq = rnd.randrange(1, 2**48) if rnd.random() < 0.5 else None
            key = make_key(encode_num(stored), seq, f"m{i}{'d' if desc else 'a'}", s)
            assert key_score(key, desc) == s and type(key_score(key, desc)) is type(s)
            generated.append(key)
    keys_sorted = sorted(generated)
    assert list(SkipList(generated)) == keys_sorted
    zset = keys.board_keys("rk", board_name("order")).z

    async def zrange(client: RedisCluster) -> list[bytes]:
        for i in range(0, len(generated), 500):
            await client.zadd(zset, dict.fromkeys(generated[i : i + 500], 0))
        got: list[bytes] = await client.zrange(zset, 0, -1)  # type: ignore[assignment]
        await client.unlink(zset)
        return got

    assert run(zrange) == keys_sorted
