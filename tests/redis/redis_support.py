"""Helpers shared by the tests in tests/redis (the fixtures live in conftest.py)."""

import random
from typing import Any


def board_name(prefix: str = "b") -> str:
    """A fresh board name per use: tests share one cluster."""
    return f"{prefix}-{random.getrandbits(48):012x}"


def strict(value: Any) -> Any:
    """Tag every number with its type, so 5 and 5.0 compare unequal (rankd keeps the type)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return (type(value).__name__, value)
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value
