"""Helpers shared by the tests in tests/redis (the fixtures live in conftest.py)."""

import random
import socket
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "redis-cluster"


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


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base() -> int:
    # 12000-21999: the bus ports (+10000) stay below the ephemeral range (SCALEOUT.md 5).
    for _ in range(200):
        base = random.randrange(12000, 21990, 10)
        if all(_port_free(p) and _port_free(p + 10000) for p in range(base, base + 6)):
            return base
    pytest.fail("no free block of 6 ports (+ bus ports) in 12000-21999")
