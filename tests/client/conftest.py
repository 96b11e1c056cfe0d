"""Fixtures for the client's tests: the real rankd process, borrowed from tests/service.

tests/service/conftest.py owns ``RankdServer`` and its fixtures. Its directory has no
``__init__.py`` and ``service`` is also the server's package name, so it cannot be imported by
name; it is loaded from its file under a private name and its fixtures are re-exported here
(pytest collects fixtures a conftest imports). The client itself never sees any of it: the
tests talk to rankd only through ``rankd_client``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rankd_client import Client

_PATH = Path(__file__).resolve().parents[1] / "service" / "conftest.py"
_spec = importlib.util.spec_from_file_location("_rankd_service_fixtures", _PATH)
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _fixtures
_spec.loader.exec_module(_fixtures)

RankdServer = _fixtures.RankdServer
rankd_server = _fixtures.rankd_server
server = _fixtures.server
name = _fixtures.name

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
