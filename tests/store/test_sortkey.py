"""The byte keys must sort exactly as (score, seq, member) would, for every int and float."""

from hypothesis import given, settings
from hypothesis import strategies as st

from store.sortkey import decode_num, encode_num, key_member, key_score, key_seq

LIMIT = 2**63
scores = st.one_of(
    st.integers(min_value=-(LIMIT - 1), max_value=LIMIT - 1),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-(2.0**62), max_value=2.0**62),
    st.integers(min_value=2**53 - 4, max_value=2**53 + 4),
    st.sampled_from([0, 0.0, -0.0, 2**63 - 1, -(2**63 - 1), 2.0**62, 0.5, -0.5, 5, 5.0]),
)
members = st.text(
    alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)),  # type: ignore[arg-type]
    min_size=1,
    max_size=12,
)


@settings(max_examples=1500, derandomize=True)
@given(scores, scores)
def test_num_order_is_numeric_order(a: float, b: float) -> None:
    ea, eb = encode_num(a), encode_num(b)
    assert (ea < eb) == (a < b)
    assert (ea == eb) == (a == b)


@settings(max_examples=2000, derandomize=True)
@given(scores)
def test_num_round_trips_value_and_type(v: float) -> None:
    back = decode_num(encode_num(v), type(v) is float)
    assert back == v and type(back) is type(v)


@settings(max_examples=500, derandomize=True)
@given(
    st.lists(st.tuples(scores, members), min_size=2, max_size=30, unique_by=lambda t: t[1]),
    st.booleans(),
    st.booleans(),
)
def test_board_keys_sort_like_tuples(
    entries: list[tuple[float, str]], desc: bool, first: bool
) -> None:
    from store.boards import Board, BoardConfig
    from store.values import Limits

    board = Board(
        "b",
        BoardConfig(order="desc" if desc else "asc", ties="first" if first else "member"),
        Limits(),
    )
    keys = [board._key(score, seq, member) for seq, (score, member) in enumerate(entries, 1)]
    expected = sorted(
        range(len(entries)),
        key=lambda i: (-entries[i][0] if desc else entries[i][0], i if first else entries[i][1]),
    )
    assert sorted(range(len(keys)), key=keys.__getitem__) == expected
    for seq, (key, (score, member)) in enumerate(zip(keys, entries, strict=True), 1):
        assert key_member(key, first) == member
        got = key_score(key, desc)
        assert got == score and type(got) is type(score)
        if first:
            assert key_seq(key) == seq
