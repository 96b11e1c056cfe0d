"""TTLMap: exact lazy expiry, bounded purge, lazy re-deadlining, wake-ups; against a dict model."""

import random

import pytest

from store.ttl import TTLMap

T0 = 1_700_000_000.0


def make() -> tuple[TTLMap[str, int], list[list[tuple[str, int]]]]:
    batches: list[list[tuple[str, int]]] = []
    m: TTLMap[str, int] = TTLMap(on_expire=lambda items: batches.append(list(items)))
    return m, batches


def test_expired_is_invisible_from_the_exact_deadline() -> None:
    m, batches = make()
    m.set("a", 1, T0 + 10)
    assert m.get("a", T0 + 9.999) == 1
    assert m.peek("a", T0 + 10) is None  # deadline <= now: gone, at the instant
    assert len(m) == 1  # peek never mutates
    assert batches == []
    assert m.get("a", T0 + 10) is None  # get removes and reports it
    assert batches == [[("a", 1)]] and len(m) == 0
    m._check()


def test_purge_takes_only_fully_elapsed_buckets_and_returns_next() -> None:
    m, batches = make()
    m.set("a", 1, T0 + 0.7)
    m.set("b", 2, T0 + 1.2)
    m.set("c", 3, T0 + 4.5)
    assert m.next_deadline() == T0 + 1  # end of the first bucket
    assert m.purge(T0 + 0.9, 100) == T0 + 1  # bucket T0 not over yet: nothing to do
    assert batches == []
    assert m.purge(T0 + 1.5, 100) == T0 + 2
    assert batches == [[("a", 1)]]
    assert m.get("b", T0 + 1.5) is None  # b is due already; reads never see the slack
    assert m.purge(T0 + 10, 100) is None
    assert [k for b in batches for k, _ in b] == ["a", "b", "c"]
    m._check()


def test_later_deadline_is_lazy_and_the_purge_moves_the_key() -> None:
    m, batches = make()
    m.set("a", 1, T0 + 1)
    assert m.set_deadline("a", T0 + 50) is False
    m._check()
    assert m.next_deadline() == T0 + 2  # still indexed in its old bucket: an early wake-up
    assert m.purge(T0 + 5, 100) == T0 + 51  # moved, not expired
    assert batches == [] and m.get("a", T0 + 5) == 1
    m._check()


def test_earlier_deadline_rebuckets_at_once() -> None:
    m, batches = make()
    m.set("a", 1, T0 + 100)
    m.set("b", 2, T0 + 100)
    assert m.set_deadline("a", T0 + 3) is True
    m._check()
    m.purge(T0 + 4, 100)
    assert batches == [[("a", 1)]]
    assert m.get("b", T0 + 4) == 2


def test_set_reports_only_a_nearer_deadline() -> None:
    woken: list[float] = []
    m: TTLMap[str, int] = TTLMap(on_earlier=woken.append)
    assert m.set("a", 1, T0 + 10) is True  # first deadline: the sleeper had none
    assert m.set("b", 1, T0 + 20) is False
    assert m.set("c", 1, T0 + 10.5) is False  # same bucket as the current first
    assert m.set("d", 1, T0 + 5) is True
    assert woken == [T0 + 11, T0 + 6]
    assert m.set("a", 2, T0 + 2) is True  # replacing with an earlier deadline counts too
    assert woken[-1] == T0 + 3
    m._check()


def test_pop_removes_silently_and_emptied_buckets_cost_one_unit() -> None:
    m, batches = make()
    for i in range(5):
        m.set(f"k{i}", i, T0 + i)  # five buckets
    for i in range(5):
        assert m.pop(f"k{i}") == i
    assert m.pop("k0") is None
    assert len(m) == 0 and batches == []
    m._check()
    # five empty buckets left for the purge; each costs one unit of work
    assert m.purge(T0 + 100, 2) is not None
    assert m.purge(T0 + 100, 2) is not None
    assert m.purge(T0 + 100, 2) is None
    m._check()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_purge_rejects_a_bad_batch_size(bad: object) -> None:
    m, _ = make()
    with pytest.raises(ValueError, match="max_items"):
        m.purge(T0, bad)  # type: ignore[arg-type]


def test_callbacks_may_read_the_map() -> None:
    seen: list[int] = []

    def on_expire(items: list[tuple[str, int]]) -> None:
        m._check()  # consistent when called
        seen.append(len(m))

    m: TTLMap[str, int] = TTLMap(on_expire=on_expire)
    for i in range(10):
        m.set(str(i), i, T0 + (i % 2) * 100)
    m.purge(T0 + 5, 100)
    assert seen == [5]


@pytest.mark.slow
def test_a_million_entries_due_in_the_same_second_purge_in_bounded_batches() -> None:
    n, batch = 1_000_000, 10_000
    m, batches = make()
    for i in range(n):
        m.set(f"{i:07d}", i, T0 + 0.5 + i / (4 * n))  # all in one one-second bucket
    now = T0 + 2
    calls = 0
    while (due := m.purge(now, batch)) is not None:
        calls += 1
        assert len(batches[-1]) == batch  # per-call work is capped
        assert due <= now  # and the caller is told more is due
    calls += 1
    assert calls == n // batch
    assert all(len(b) <= batch for b in batches)
    assert sum(len(b) for b in batches) == n and len(m) == 0
    m._check()


@pytest.mark.parametrize("shard_bits", [0, 2, 8])
@pytest.mark.parametrize("seed", range(4))
def test_random_ops_against_a_dict_model(seed: int, shard_bits: int) -> None:
    """Seeded stress: every read agrees with a plain dict; purge removes exactly what is due.
    One shard (a plain dict), four (keys and buckets share shards), and the default."""
    rng = random.Random(seed)
    expired: list[tuple[str, int]] = []
    m: TTLMap[str, int] = TTLMap(
        resolution=rng.choice([0.25, 1.0, 7.0]), on_expire=expired.extend, shard_bits=shard_bits
    )
    model: dict[str, tuple[int, float]] = {}
    now = T0
    for step in range(3000):
        key = f"k{rng.randrange(60)}"
        op = rng.random()
        if op < 0.35:
            d = now + rng.uniform(-2, 30)
            m.set(key, step, d)
            model[key] = (step, d)
        elif op < 0.5 and key in model:
            d = now + rng.uniform(-2, 30)
            m.set_deadline(key, d)
            model[key] = (model[key][0], d)
        elif op < 0.6:
            got = m.pop(key)
            assert got == (model.pop(key)[0] if key in model else None)
        elif op < 0.8:
            want = model.get(key)
            live = want is not None and want[1] > now
            assert m.get(key, now) == (want[0] if live else None)  # type: ignore[index]
            if want is not None and not live:
                del model[key]
        elif op < 0.9:
            expired.clear()
            m.purge(now, rng.randint(1, 20))
            for k, v in expired:
                assert model[k][0] == v and model[k][1] <= now  # only what was due
                del model[k]
        else:
            now += rng.uniform(0, 5)
        for k, (v, d) in model.items():
            assert m.deadline(k) == d and m.stored(k) == v
        assert len(m) == len(model)
        m._check()
    # a purge with room for everything leaves nothing whose bucket has elapsed
    expired.clear()
    m.purge(now, 10_000)
    for k, _ in expired:
        model.pop(k)
    assert all(d // m.resolution >= now // m.resolution for _, d in model.values())
    m._check()


@pytest.mark.parametrize("shard_bits", [1, 2, 3])
def test_keys_and_buckets_spread_over_tiny_shard_counts_grow_and_shrink_correctly(
    shard_bits: int,
) -> None:
    """Int keys hash to themselves, so key i lives in shard i & mask and neighbours never share
    one; deadlines one second apart put neighbouring buckets in different shards too. Growing
    every shard through several of its own resizes, then emptying them out of order by pop,
    lazy expiry and purge, must agree with a dict model at each step."""
    rng = random.Random(shard_bits)
    expired: list[tuple[int, int]] = []
    m: TTLMap[int, int] = TTLMap(on_expire=expired.extend, shard_bits=shard_bits)
    shards = 1 << shard_bits
    model: dict[int, float] = {}
    n = 3000  # ~750+ keys per shard: each shard's dict resizes ~7 times
    for i in range(n):
        d = T0 + 1 + i % 50 + rng.random()  # 50 one-second buckets, spread over every shard
        assert m.set(i, i, d) is (i == 0)
        model[i] = d
        if i % 97 == 0:
            m._check()
    m._check()
    assert len(m) == n
    assert sorted(k for k, _ in m.items()) == list(range(n))  # each key once, whatever order
    for s in range(shards):  # the shards are filled evenly: keys s, s + shards, ...
        assert len(m._entries[s]) == len(range(s, n, shards))
    assert sum(len(b) for b in m._buckets) == 50
    # pop from every shard, move some deadlines earlier and later (other bucket shards)
    for i in rng.sample(range(n), n // 3):
        assert m.pop(i) == i
        del model[i]
    for i in rng.sample(sorted(model), len(model) // 3):
        model[i] = T0 + rng.uniform(1, 80)
        m.set_deadline(i, model[i])
    m._check()
    now = T0 + 20.5
    for i in rng.sample(sorted(model), 100):  # lazy expiry across shards
        assert m.get(i, now) == (i if model[i] > now else None)
        if model[i] <= now:
            del model[i]
    expired.clear()
    while (due := m.purge(now, rng.randint(1, 40))) is not None and due <= now:
        m._check()
    for k, v in expired:
        assert k == v and model.pop(k) <= now
    assert all(d > now or d // 1 >= now // 1 for d in model.values())
    assert {k for k, _ in m.items()} == set(model) and len(m) == len(model)
    for k, d in model.items():
        assert m.deadline(k) == d and m.stored(k) == k
    m._check()
    m.purge(T0 + 1000, 10_000)
    assert len(m) == 0 and all(not s for s in m._entries) and all(not b for b in m._buckets)
    m._check()


@pytest.mark.parametrize("bad", [-1, 17, 2.0, True, None])
def test_shard_bits_validation(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"shard_bits must be an int in 0\.\.16, but got {bad!r}"):
        TTLMap(shard_bits=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("shard_bits", [0, 3])
def test_a_bucket_drained_across_calls_sees_every_change_made_in_between(shard_bits: int) -> None:
    """The purge takes a bucket's keys as a list and works through it over several calls.
    Between two calls every kind of change hits keys it has not reached yet; each key must
    end up expired exactly when its current deadline is due, wherever it lives now."""
    expired: list[tuple[str, int]] = []
    wakes: list[float] = []
    m: TTLMap[str, int] = TTLMap(
        on_expire=expired.extend, on_earlier=wakes.append, shard_bits=shard_bits
    )
    model: dict[str, float] = {}
    for i in range(100):  # all due in bucket T0 + 1
        k = f"k{i:03d}"
        model[k] = T0 + 1 + i / 200
        m.set(k, i, model[k])
    now = T0 + 3.5
    assert m.purge(now, 10) == T0 + 2  # work left: the drained bucket's time
    m._check()
    assert len(expired) == 10
    for k, _ in expired:
        del model[k]
    untaken = sorted(model)  # the purge takes from the end: these are k000..k089
    assert untaken == [f"k{i:03d}" for i in range(90)]
    for k in untaken[0:10]:  # deleted
        assert m.pop(k) is not None
        del model[k]
    for n, k in enumerate(untaken[10:20]):  # deleted, set again: in the same slot (a new
        m.pop(k)  # bucket object) or a later one
        model[k] = T0 + 1.9 if n % 2 else T0 + 30
        m.set(k, -1, model[k])
    for k in untaken[20:30]:  # set again in place, a later deadline (a new value)
        m.set(k, -2, T0 + 50)
        model[k] = T0 + 50
    for k in untaken[30:40]:  # touched later (lazy: still in the drained bucket)
        m.set_deadline(k, T0 + 3.2)  # later, but still due at `now`
        model[k] = T0 + 3.2
    for k in untaken[40:50]:
        m.set_deadline(k, T0 + 9)  # not due at `now`: must be moved, not expired
        model[k] = T0 + 9
    for k in untaken[50:55]:
        m.set_deadline(k, T0 + 0.5)  # earlier: re-bucketed at once
        model[k] = T0 + 0.5
    m._check()
    for k in ("new1", "new2"):  # new keys due in the slot being drained, and a later one
        m.set(k, 7, T0 + 1.5 if k == "new1" else T0 + 20)
        model[k] = T0 + 1.5 if k == "new1" else T0 + 20
    m._check()
    expired.clear()
    while (due := m.purge(now, 7)) is not None and due <= now:
        m._check()
    m._check()
    gone = {k for k, _ in expired}
    assert len(gone) == len(expired)  # nobody reported twice
    assert gone == {k for k, d in model.items() if d <= now}
    assert {k for k, _ in m.items()} == {k for k, d in model.items() if d > now}
    for k, d in model.items():
        if d > now:
            assert m.deadline(k) == d
    assert m.next_deadline() == T0 + 10  # the touched-later keys, moved to bucket T0 + 9
