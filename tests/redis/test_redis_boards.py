"""The rankd function library on the real cluster, against the leaderboard oracle.

A seeded random workload runs through RedisBoards (one function call per write) and, side by
side, through tests/board_model.py (what a leaderboard means) and store.boards.Board (whose
sort keys must come out byte-identical to the ZSET's members). Results are compared type-strict
(5 != 5.0) after every operation, and the whole board after every step batch.
"""

import copy
import itertools
import random
from typing import Any

import pytest
from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from service.backend.redis import keys
from service.backend.redis.boards import RedisBoards, check_board
from service.backend.redis.functions import fcall, library_loaded, load_library
from store.boards import Board, BoardConfig
from store.errors import BatchTooLarge, Conflict, InvalidArgument, MemberNotFound
from store.sortkey import encode_num
from store.values import Limits
from tests.board_model import ModelBoard
from tests.redis.redis_support import board_name, strict

pytestmark = pytest.mark.redis

CONFIGS = list(itertools.product(("desc", "asc"), ("best", "latest", "sum"), ("first", "member")))
MEMBERS = ["a", "ab", "b", "p001", "p01", "p1", "é", "ñandú", "日本", "z" * 40]
MEMBERS += [f"m{i}" for i in range(30)]
BIG = 2**63


def random_score(rnd: random.Random, update: str) -> int | float:
    kind = rnd.randrange(10)
    if kind < 3:
        return rnd.randrange(-5, 15)  # many ties
    if kind == 3:
        return float(rnd.randrange(-5, 15))  # n and n.0
    if kind == 4:
        return rnd.choice((1, -1)) * (2**53 + rnd.randrange(-4, 5))
    if kind == 5:
        return rnd.choice((1, -1)) * (BIG - 1 - rnd.randrange(4096))  # sum overflows
    if kind == 6:
        return rnd.choice((1, -1)) * 2 ** rnd.randrange(40, 63)
    if kind == 7:
        return rnd.choice((1e-9, 1e18, 2.0**60, -(2.0**60), 0.5, -0.25))
    if kind == 8 and update == "sum":
        return 0
    return rnd.uniform(-1e6, 1e6)


def sum_overflows(model: ModelBoard, items: list[tuple[str, Any, Any]]) -> bool:
    if model.update != "sum":
        return False
    shadow = copy.deepcopy(model)
    return any(abs(shadow.write(m, s, meta)["score"]) >= BIG for m, s, meta in items)


async def full_check(rb: RedisBoards, name: str, model: ModelBoard, board: Board) -> None:
    n = len(model.entries)
    page = await rb.page(name, 0, n + 5)
    assert strict(page.entries) == strict(model.page(0, n + 5))
    assert page.total == n
    assert page.seq == model.seq == board.seq
    z = keys.board_keys(rb.prefix, name).z
    assert await rb.client.zrange(z, 0, -1) == list(board.dump_keys())
    await check_board(rb.client, rb.prefix, name)


async def differential(
    client: RedisCluster, order: str, update: str, ties: str, seed: int, steps: int = 300
) -> int:
    rnd = random.Random(seed)
    rb = RedisBoards(client, limits=Limits(batch_items=10))
    name = board_name(f"{order}-{update}-{ties}")
    await rb.configure(name, {"order": order, "update": update, "ties": ties})
    model = ModelBoard(order, update, ties)
    board = Board(name, BoardConfig(order, update, ties), Limits())  # type: ignore[arg-type]
    expected_errors = 0
    for step in range(steps):
        op = rnd.random()
        member = rnd.choice(MEMBERS)
        if op < 0.55:
            score = random_score(rnd, update)
            meta = {"step": step} if rnd.random() < 0.2 else None
            if sum_overflows(model, [(member, score, meta)]):
                with pytest.raises(InvalidArgument, match="2\\*\\*63"):
                    await rb.write(name, member, score, meta)
                with pytest.raises(InvalidArgument):
                    board.write(member, score, meta)
                expected_errors += 1
            else:
                got = await rb.write(name, member, score, meta)
                assert strict(got) == strict(model.write(member, score, meta)), (step, got)
                assert strict(board.write(member, score, meta)) == strict(got)
        elif op < 0.63:
            items = [
                (rnd.choice(MEMBERS[:8]), random_score(rnd, update), None)
                for _ in range(rnd.randint(1, 5))
            ]
            if sum_overflows(model, items):
                with pytest.raises(InvalidArgument):
                    await rb.write_many(name, items)  # type: ignore[arg-type]
                with pytest.raises(InvalidArgument):
                    board.write_many(items)  # type: ignore[arg-type]
                expected_errors += 1
            else:
                got_many = await rb.write_many(name, items)  # type: ignore[arg-type]
                assert strict(got_many) == strict([model.write(*it) for it in items])
                board.write_many(items)  # type: ignore[arg-type]
        elif op < 0.68:
            if member in model.entries:
                seq, prev = await rb.remove(name, member)
                assert prev == model.rank(member)
                model.delete(member)
                board.remove(member)
                assert seq == model.seq
            else:
                with pytest.raises(MemberNotFound):
                    await rb.remove(name, member)
                expected_errors += 1
        elif op < 0.78:
            offset, limit = rnd.randrange(0, 45), rnd.randrange(0, 12)
            assert strict(await rb.top(name, offset, limit)) == strict(model.page(offset, limit))
        elif op < 0.83:
            if member in model.entries:
                got_entry = await rb.entry(name, member)
                assert strict(got_entry) == strict(model.entry(member, model.rank(member)))
            else:
                with pytest.raises(MemberNotFound):
                    await rb.entry(name, member)
        elif op < 0.89:
            if member in model.entries:
                radius = rnd.randrange(0, 6)
                got_around = await rb.around(name, member, radius)
                assert strict(got_around) == strict(model.around(member, radius))
        else:
            score = random_score(rnd, "best")
            assert await rb.rank_for_score(name, score) == model.rank_for_score(score), score
        if step % 25 == 24:
            await full_check(rb, name, model, board)
    await full_check(rb, name, model, board)
    await rb.drop(name)
    return expected_errors


@pytest.mark.parametrize(("order", "update", "ties"), CONFIGS)
def test_differential_against_model(run, order: str, update: str, ties: str) -> None:
    seed = CONFIGS.index((order, update, ties)) + 1000
    run(lambda client: differential(client, order, update, ties, seed))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_differential_long_runs(run, seed: int) -> None:
    for order, update, ties in CONFIGS:
        run(lambda client: differential(client, order, update, ties, seed * 7919, 1500))  # noqa: B023


def test_largest_batch_in_one_call(run) -> None:
    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        name = board_name("big-batch")
        items: list[tuple[object, object, object]] = [
            (f"p{i % 600}", i % 37, {"i": i} if i % 5 == 0 else None) for i in range(1000)
        ]
        model = ModelBoard("desc", "best", "first")
        got = await rb.write_many(name, items)
        assert strict(got) == strict([model.write(*it) for it in items])  # type: ignore[arg-type]
        assert strict(await rb.top(name, 0, 1000)) == strict(model.page(0, 1000))
        await check_board(client, rb.prefix, name)
        # the one batch cap of every backend (store/values.py): 413, as the embedded store
        with pytest.raises(BatchTooLarge, match="at most 1000 items, but got 1001"):
            await rb.write_many(name, [*items, ("x", 1, None)])
        with pytest.raises(InvalidArgument, match="at least 1 item"):
            await rb.write_many(name, [])
        await rb.drop(name)

    run(body)


def test_int64_extremes(run) -> None:
    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        name = board_name("ext")
        await rb.configure(name, {"update": "sum"})
        top = BIG - 1
        r = await rb.write(name, "max", top)
        assert strict(r["score"]) == strict(top)
        await rb.write(name, "min", -top)
        await rb.write(name, "near", 2**53 + 1)
        await rb.write(name, "near-f", float(2**53))
        page = await rb.top(name, 0, 10)
        assert strict([(e["member"], e["score"]) for e in page]) == strict(
            [("max", top), ("near", 2**53 + 1), ("near-f", float(2**53)), ("min", -top)]
        )
        with pytest.raises(InvalidArgument, match="2\\*\\*63"):
            await rb.write(name, "max", 1)
        with pytest.raises(InvalidArgument, match="2\\*\\*63"):
            await rb.write(name, "min", -1)
        # exact int arithmetic across the 2**53 boundary and back
        r = await rb.write(name, "max", -(2**62) - 1)
        assert strict(r["score"]) == strict(top - 2**62 - 1)
        r = await rb.write(name, "near", 3)
        assert strict(r["score"]) == strict(2**53 + 4)
        # int + float is float(int) + float, as Python computes it: 2**53 + 4.5 rounds back to
        # 2**53 + 4, numerically equal, so nothing changes and the score stays an int
        r = await rb.write(name, "near", 0.5)
        assert strict(r["score"]) == strict(2**53 + 4) and not r["changed"]
        r = await rb.write(name, "near", 1.5)
        assert strict(r["score"]) == strict(float(2**53 + 6)) and r["changed"]
        for bad in (BIG, -BIG, float("inf"), float("nan"), 2.0**63):
            with pytest.raises(InvalidArgument):
                await rb.write(name, "x", bad)
        await rb.drop(name)

    run(body)


def test_batch_is_all_or_nothing(run) -> None:
    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        name = board_name("batch")
        await rb.configure(name, {"update": "sum"})
        await rb.write_many(name, [("a", 1, None), ("b", BIG - 10, None)])
        before = await rb.page(name, 0, 100)
        invalid_items: list[list[tuple[object, object, object]]] = [
            [("a", 5, None), ("c", 1, None), ("b", 9, None), ("b", 1, None)],  # sum overflow
            [("a", 5, None), ("", 1, None)],  # bad member
            [("a", 5, None), ("c", "7", None)],  # bad score
            [("a", 5, None), ("c", 1, ["not", "an", "object"])],  # bad metadata
        ]
        for items in invalid_items:
            with pytest.raises(InvalidArgument):
                await rb.write_many(name, items)
            assert await rb.page(name, 0, 100) == before  # nothing changed, not even seq
        got = await rb.write_many(name, [("a", 5, None), ("b", 9, None), ("a", -6, None)])
        assert [g["score"] for g in got] == [6, BIG - 1, 0]
        await rb.drop(name)

    run(body)


def test_config_cache_is_corrected_by_staleconfig(run) -> None:
    async def body(client: RedisCluster) -> None:
        name = board_name("stale")
        writer, other = RedisBoards(client), RedisBoards(client)
        await other.configure(name, {"order": "asc", "ties": "member"})
        # writer has never seen the board: it assumes desc/first and must be corrected
        r = await writer.write(name, "a", 5)
        assert r["rank"] == 1
        await writer.write(name, "b", 3)
        assert [e["member"] for e in await writer.top(name)] == ["b", "a"]  # asc
        assert await writer.rank_for_score(name, 4) == 2
        with pytest.raises(Conflict):
            await other.configure(name, {"order": "desc"})
        await other.configure(name, {"update": "latest"})  # allowed on a non-empty board
        await other.configure(name, {"player_rate": 7, "public_read": True})
        await other.configure(name, {})  # options not named keep their values
        assert (await other.describe(name))["config"] == {  # type: ignore[index]
            "order": "asc",
            "update": "latest",
            "ties": "member",
            "player_writes": False,
            "player_rate": 7,
            "public_read": True,
        }
        with pytest.raises(InvalidArgument, match="player_rate"):
            await other.configure(name, {"player_rate": 0})
        with pytest.raises(InvalidArgument, match="player_writes"):
            await other.configure(name, {"player_writes": 1})
        for bad in ((-1, 10), (0, -1)):
            with pytest.raises(InvalidArgument, match="non-negative"):
                await writer.top(name, *bad)
        await writer.drop(name)

    run(body)


def test_registry_lists_boards(run) -> None:
    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client, prefix="regtest")
        names = sorted(board_name("reg") for _ in range(5))
        for n in names[:3]:
            await rb.configure(n, {})
        for n in names[3:]:
            await rb.write(n, "a", 1)  # a write creates the board and registers it
        assert await rb.list_boards() == names
        assert await rb.list_boards(after=names[1], limit=2) == names[2:4]
        await rb.drop(names[0])
        assert await rb.list_boards() == names[1:]
        for n in names[1:]:
            await rb.drop(n)

    run(body)


def test_functions_reload_after_flush(run) -> None:
    async def body(client: RedisCluster) -> None:

        assert await load_library(client) == 3
        assert await load_library(client) == 3  # idempotent
        assert await library_loaded(client)
        rb = RedisBoards(client)
        name = board_name("flush")
        await rb.write(name, "a", 1)
        node = client.get_node_from_key(rb.keys(name).z)
        await client.execute_command("FUNCTION", "FLUSH", "SYNC", target_nodes=node)
        assert not await library_loaded(client)
        r = await rb.write(name, "a", 2)  # "Function not found": reloaded, then run once
        assert r["score"] == 2 and r["changed"]
        assert await library_loaded(client)
        await rb.drop(name)

    run(body)


def test_calls_are_routed_without_command_getkeys(run) -> None:
    """redis-py's cluster client would resolve FCALL keys with COMMAND GETKEYS, one extra round
    trip per call (SCALEOUT.md 1.5); fcall routes by the key's slot itself."""

    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        name = board_name("route")
        await rb.write(name, "warm", 1)
        primaries = client.get_primaries()

        async def getkeys() -> int:
            stats = await client.execute_command("INFO", "commandstats", target_nodes=primaries)
            return sum(
                int(s.get("cmdstat_command|getkeys", {}).get("calls", 0)) for s in stats.values()
            )

        before = await getkeys()
        for i in range(50):
            await rb.write(name, f"p{i}", i)
            await rb.entry(name, f"p{i}")
        await rb.top(name)
        assert await getkeys() == before
        await rb.drop(name)

    run(body)


def test_check_board_catches_corruption(run) -> None:
    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        name = board_name("corrupt")
        await rb.write_many(name, [("a", 1, {"x": 1}), ("b", 2, None)])
        await check_board(client, rb.prefix, name)
        k = rb.keys(name)
        good = await client.hget(k.m, "a")
        assert isinstance(good, bytes)
        corruptions = [
            lambda: client.zadd(k.z, {b"\x00" * 10 + b"stray\x00": 0}),  # ZSET-only key
            lambda: client.hset(k.d, "ghost", b"{}"),  # metadata without an entry
            lambda: client.hset(k.cfg, "seq", 1),  # a SEQ above the counter
            lambda: client.zadd(k.z, {good: 5}),  # a nonzero score breaks byte order
        ]
        for corrupt in corruptions:
            snapshot = {key: await client.dump(key) for key in (k.z, k.m, k.d, k.cfg)}
            await corrupt()
            with pytest.raises(AssertionError):
                await check_board(client, rb.prefix, name)
            for key, value in snapshot.items():
                assert value is not None
                await client.restore(key, 0, value, replace=True)
            await check_board(client, rb.prefix, name)
        await rb.drop(name)

    run(body)


def test_refused_write_creates_no_board(run) -> None:
    async def body(client: RedisCluster) -> None:
        rb = RedisBoards(client)
        name = board_name("refused")
        k = rb.keys(name)
        # drive the function directly with a batch whose pass 1 fails after the board check
        # (RedisBoards validates items before calling, so it could not send this one)
        args: list[object] = ["desc", "first", "1", "tok", "1", "", "0" * 32]
        args += ["a", encode_num(-1), "0", ""]
        args += ["b", b"short", "0", ""]  # malformed: pass 1 raises
        every = [*k, *keys.idem_keys(rb.prefix, name)]
        with pytest.raises(ResponseError, match="malformed item 1"):
            await fcall(client, "rankd_write", every, args)  # type: ignore[arg-type]
        assert await rb.describe(name) is None
        assert not await client.exists(k.z, k.m, k.d, k.cfg)

    run(body)
