"""Key layout (service/backend/redis/keys.py) and slot-naming session ids."""

import random
import string

import pytest
from redis.asyncio import RedisCluster
from redis.crc import key_slot as redis_py_slot

from service.backend.redis import keys
from service.backend.redis.session_ids import (
    SESSION_ID_CHARS,
    new_session_id,
    random_bucket,
    session_bucket,
    user_bucket,
)
from store.errors import InvalidArgument

BOARD_CHARS = string.ascii_letters + string.digits + "_.-"


def random_boards(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    names = ["a", "Z", "weekly.top-100", "_", "x" * 64]
    names += ["".join(rnd.choices(BOARD_CHARS, k=rnd.randint(1, 64))) for _ in range(n)]
    return [n for n in names if n not in (".", "..")]


def test_board_keys_layout() -> None:
    assert keys.board_keys("rk", "b1") == (
        "rk:{b1}:z",
        "rk:{b1}:m",
        "rk:{b1}:d",
        "rk:{b1}:cfg",
        "rk:{b1}:ev",
    )
    assert keys.board_keys("app:1", "b").cfg == "app:1:{b}:cfg"
    assert keys.registry("rk") == "rk:boards"
    assert keys.secret("rk") == "rk:secret"


def test_every_key_of_a_board_shares_one_slot_offline() -> None:
    for name in random_boards(500):
        every = [*keys.board_keys("rk", name), *keys.idem_keys("rk", name)]
        slots = {keys.key_slot(k) for k in every}
        assert slots == {keys.key_slot(name)}, name


def test_crc16_matches_redis_py_and_spec_vectors() -> None:
    assert keys.crc16(b"123456789") == 0x31C3  # the cluster spec's check value
    assert keys.key_slot("foo{bar}baz") == keys.key_slot("bar")
    assert keys.key_slot("foo{}bar") == keys.crc16(b"foo{}bar") % 16384  # empty tag: whole key
    assert keys.key_slot("foo{{bar}}") == keys.key_slot("{bar")  # first "{" to first "}"
    rnd = random.Random(3)
    for _ in range(2000):
        key = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 40)))
        assert keys.key_slot(key) == redis_py_slot(key), key


def test_slots_match_cluster_keyslot(run) -> None:
    names = random_boards(60)
    sample = [k for n in names for k in keys.board_keys("rk", n)]
    buckets = [random_bucket() for _ in range(20)]
    sample += [keys.session("rk", new_session_id(b)) for b in buckets]
    sample += [keys.session_index("rk", b) for b in buckets]
    sample += [keys.session_channel("rk", b) for b in buckets]
    sample += [keys.registry("rk"), keys.secret("rk")]

    async def slots(client: RedisCluster) -> list[int]:
        return [await client.cluster_keyslot(k) for k in sample]

    assert run(slots) == [keys.key_slot(k) for k in sample]


def test_prefix_is_checked() -> None:
    assert keys.check_prefix("rk") == "rk"
    assert keys.check_prefix("tenant-7:rk") == "tenant-7:rk"
    for bad in ("", "a{b}", "a b", "x" * 33, "é"):
        with pytest.raises(InvalidArgument, match="key prefix"):
            keys.check_prefix(bad)


def test_session_ids_name_their_bucket() -> None:
    secret = b"s" * 32
    bucket = user_bucket(secret, "alice")
    assert len(bucket) == 4
    assert user_bucket(secret, "alice") == bucket  # stable: every instance finds the user
    sid = new_session_id(bucket)
    assert len(sid) == SESSION_ID_CHARS and sid.startswith(bucket + ".")
    assert session_bucket(sid) == bucket
    key = keys.session("rk", sid)
    assert key == f"rk:s:{{{bucket}}}:{sid}"
    # everything of one user lives in one slot
    assert keys.key_slot(key) == keys.key_slot(keys.session_index("rk", bucket))
    assert keys.key_slot(key) == keys.key_slot(keys.session_channel("rk", bucket))
    assert len({new_session_id(bucket) for _ in range(100)}) == 100


@pytest.mark.parametrize(
    "bad", ["", "abcd", "abc.def", "ab{}." + "x" * 43, "abcd-" + "x" * 43, "abcd." + "x" * 42]
)
def test_foreign_session_ids_have_no_bucket(bad: str) -> None:
    assert session_bucket(bad) is None
    with pytest.raises(InvalidArgument, match="not a session id"):
        keys.session("rk", bad)
