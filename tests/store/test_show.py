"""store.show: bounded, non-recursive, credential-free renderings of bad values."""

import secrets

from hypothesis import given
from hypothesis import strategies as st

from store.show import QUOTE_CHARS, show

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=50,
)


def test_quotes_small_flat_values() -> None:
    assert show("alice ") == "'alice '"
    assert show(42) == "42"
    assert show(None) == "None"
    assert show([1, "a"]) == "[1, 'a']"
    assert show({"k": 1.5}) == "{'k': 1.5}"


def test_describes_what_it_will_not_quote() -> None:
    deep: list[object] = []
    for _ in range(100_000):  # far past the recursion limit
        deep = [deep]
    assert show(deep) == "an array of 1 item"
    assert show("x" * 10_000) == "a string of 10000 characters"
    assert show(10**5000) == "an integer too long to show"
    assert show(list(range(100))) == "an array of 100 items"
    assert show(object()) == "a value of type object"


def test_never_echoes_a_credential() -> None:
    token = secrets.token_urlsafe(32)
    for value in (token, f"x{token}", [token], {"a": token}, {token: 1}):
        assert token[:8] not in show(value)


@given(json_values)
def test_bounded_for_any_json_value(value: object) -> None:
    # A quoted scalar is at most QUOTE_CHARS characters plus quotes and escapes (x4).
    assert len(show(value)) <= 4 * (4 * QUOTE_CHARS + 8) + 16
