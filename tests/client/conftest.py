"""Fixtures for the client's tests: the real rankd process, from tests/servers.py.

The client itself never sees any of it: the tests talk to rankd only through ``rankd_client``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rankd_client import Client

from tests.servers import RankdServer, name, rankd_server, server

__all__ = ["RankdServer", "name", "rankd_server", "server"]

KEYS = {"admin": "admin-key-0123456789abcdef", "read": "read-key-0123456789abcdef"}
KEYS["write"] = "write-key-0123456789abcdef"


@pytest.fixture
def client(server: Any) -> Iterator[Client]:
    """A blocking client on the shared rankd (no keys)."""
    with Client(server.url, trust_env=False) as c:
        yield c


@pytest.fixture
def keyed(rankd_server: Any) -> Any:
    """A rankd of its own with three keys: ``keys["admin"]``, ``["read"]``, ``["write"]``."""
    return rankd_server(api_key=[f"{key}:{scope}" for scope, key in KEYS.items()])


@pytest.fixture(scope="session")
def keys() -> dict[str, str]:
    return dict(KEYS)
