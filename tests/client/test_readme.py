"""The Python examples in client/README.md run as written against a real rankd with keys."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "client" / "README.md"
DEFAULT_URL = "http://127.0.0.1:8000"


class _Seen(Exception):
    """Ends the subscriber example (an endless ``async for``) after its first printed view."""


def examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 2, "README examples changed: update this test"
    return blocks


def test_the_readme_examples_run(keyed: Any, keys: dict[str, str]) -> None:
    printed: list[object] = []

    def fake_print(*args: object) -> None:
        printed.extend(args)
        if any(isinstance(a, list) for a in args):
            raise _Seen

    for block in examples():
        assert DEFAULT_URL in block
        code = block.replace(DEFAULT_URL, keyed.url)
        namespace: dict[str, Any] = {"KEY": keys["admin"], "print": fake_print}
        with contextlib.suppress(_Seen):
            exec(compile(code, str(README), "exec"), namespace)
    # The leaderboard example filled "laps"; the subscriber printed its live top 10.
    assert printed == [[(1, "bob", 79.5), (2, "ann", 81.25), (3, "cy", 90)]]


def _drawn(text: str) -> set[str]:
    return set(re.findall(r"[├└]── (\w+)", text)) | {"RankdError"}


def test_both_drawn_trees_are_the_module_tree() -> None:
    """The tree in errors.py's docstring and in the README name exactly the classes it has."""
    import rankd_client.errors as errors

    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.RankdError)
    }
    assert _drawn(errors.__doc__ or "") == defined
    assert _drawn(README.read_text()) == defined
