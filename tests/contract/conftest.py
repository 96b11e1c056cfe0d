"""The contract suite: every test here runs once per backend, through the real HTTP server.

Like Redis's ``zset.tcl`` runs each test per encoding, a backend joins by adding itself to
``BACKENDS``: its name and the extra ``rankd`` flags (and environment) that select it. The
fixtures ``server``, ``http`` and ``rankd_server`` below shadow the ones in tests/conftest.py
so that every server a contract test starts runs the parametrised backend.

    BACKENDS["redis"] = Backend(flags={"backend": "redis", "redis_url": ...})   (next issue)
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import RankdServer, ServerFactory, name, problem, rankd_argv, server_class


@dataclass(frozen=True)
class Backend:
    flags: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


BACKENDS: dict[str, Backend] = {"embedded": Backend()}

__all__ = ["BACKENDS", "Backend", "name", "problem", "rankd_argv", "server_class"]


@pytest.fixture(scope="session", params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RankdServer]:
    chosen = BACKENDS[backend]
    srv = RankdServer(
        tmp_path_factory.mktemp(f"contract-{backend}"), dict(chosen.flags), env=chosen.env
    )
    srv.start()
    yield srv
    status = srv.stop(signal.SIGTERM)
    assert status in (0, -signal.SIGTERM), f"{backend} rankd exited with {status}:\n{srv.logs()}"


@pytest.fixture
def http(server: RankdServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def rankd_server(backend: str, tmp_path: Path) -> Iterator[ServerFactory]:
    chosen = BACKENDS[backend]
    started: list[RankdServer] = []

    def factory(
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        start: bool = True,
        preexec_fn: Callable[[], None] | None = None,
        **flags: Any,
    ) -> RankdServer:
        workdir = tmp_path / f"rankd{len(started)}"
        workdir.mkdir()
        srv = RankdServer(
            workdir,
            {**chosen.flags, **flags},
            env={**chosen.env, **(env or {})},
            data_dir=data_dir,
            preexec_fn=preexec_fn,
        )
        started.append(srv)
        return srv.start() if start else srv

    yield factory
    for srv in started:
        srv.kill()
