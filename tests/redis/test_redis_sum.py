"""The Lua int64 sum (hi/lo halves in doubles) against Python's exact arithmetic.

Thousands of (old, delta) pairs from the nasty places -- near +-2**63, around 2**53 where
float(v) rounds, mixed with floats -- written as one batch per chunk on a sum board of each
order; every resulting score must equal Python's ``old + delta`` with the same type.
"""

import random

import pytest
from redis.asyncio import RedisCluster

from service.backend.redis.boards import RedisBoards
from store.errors import InvalidArgument
from tests.redis.redis_support import board_name, strict

pytestmark = pytest.mark.redis

BIG = 2**63


def nasty(rnd: random.Random) -> int | float:
    kind = rnd.randrange(6)
    sign = rnd.choice((1, -1))
    if kind == 0:
        return sign * (BIG - 1 - rnd.randrange(2**12))
    if kind == 1:
        return sign * (2**53 + rnd.randrange(-(2**10), 2**10))
    if kind == 2:
        return sign * rnd.randrange(2**62)
    if kind == 3:
        return sign * (2 ** rnd.randrange(0, 63) + rnd.randrange(-3, 4))
    if kind == 4:
        return sign * rnd.random() * 2.0 ** rnd.randrange(-20, 63)
    return sign * rnd.randrange(1000)


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_sum_is_exact(run, order: str) -> None:
    rnd = random.Random(99 if order == "desc" else 98)
    pairs = []
    while len(pairs) < 3000:
        old, delta = nasty(rnd), nasty(rnd)
        if abs(old + delta) < BIG:
            pairs.append((old, delta))

    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        name = board_name(f"sum-{order}")
        await rb.configure(name, {"order": order, "update": "sum", "ties": "member"})
        for chunk in range(0, len(pairs), 250):
            items: list[tuple[object, object, object]] = []
            for i, (old, delta) in enumerate(pairs[chunk : chunk + 250], chunk):
                items += [(f"m{i}", old, None), (f"m{i}", delta, None)]
            got = await rb.write_many(name, items)
            for j, (old, delta) in enumerate(pairs[chunk : chunk + 250]):
                expected = old + delta
                result = got[2 * j + 1]
                if expected == old:  # e.g. a float delta lost in rounding: nothing changes
                    assert strict(result["score"]) == strict(old) and not result["changed"]
                else:
                    assert strict(result["score"]) == strict(expected), (old, delta)
        # the boundary itself: 2**63 - 1 is allowed, one more is refused, both signs
        for sign in (1, -1):
            await rb.write(name, "edge", sign * (BIG - 1))
            with pytest.raises(InvalidArgument):
                await rb.write(name, "edge", sign)
            r = await rb.write(name, "edge", -sign * (BIG - 1))
            assert strict(r["score"]) == strict(0)
        await rb.drop(name)

    run(body)
