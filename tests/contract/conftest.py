"""The contract suite: every test here runs once per backend, through the real HTTP server.

Like Redis's ``zset.tcl`` runs each test per encoding, a backend joins by adding itself to
``BACKENDS``: its name and the extra ``rankd`` flags (and environment) that select it. A test
of a feature not every backend has yet is marked ``@pytest.mark.backends("embedded")`` and is
generated for those only (no test carries it today: every feature runs on both). The
fixtures ``server``, ``http``, ``peer`` and ``rankd_server`` below shadow the ones in
tests/servers.py so that every server a contract test starts runs the parametrised backend.

The redis backend runs on the session's real cluster (``redis_cluster``, tests/conftest.py),
with a key prefix of its own, as **two** rankd processes: ``server`` and ``peer``. ``http``
alternates between them request by request, so every read after a write in the suite crosses
processes; ``peer`` is what test_two_processes.py writes through while it watches ``server``
over WebSocket. For the embedded backend ``peer`` is ``server`` itself (one process is the
whole deployment).
"""

from __future__ import annotations

import itertools
import signal
import uuid
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
    cluster: bool = False  # needs the session's redis cluster (flags get --redis-url)
    # The flags that make an acknowledged write durable on this backend's own disk, and whether
    # it takes snapshots (POST /v1/admin/snapshot); the redis backend has neither: its
    # durability is the cluster's (README "Scaling out") and it refuses these flags.
    durable_flags: dict[str, Any] = field(default_factory=dict)
    snapshots: bool = False


BACKENDS: dict[str, Backend] = {
    "embedded": Backend(durable_flags={"fsync": "always", "snapshot_interval": 0}, snapshots=True),
    "redis": Backend(flags={"backend": "redis"}, cluster=True),
}

__all__ = ["BACKENDS", "Backend", "name", "problem", "rankd_argv", "server_class"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses ``backend`` runs once per backend in ``BACKENDS``, or only for
    those named by ``@pytest.mark.backends(...)`` (a feature one backend lacks yet): it is not
    generated for the others rather than skipped there. An unknown name is an error."""
    if "backend" not in metafunc.fixturenames:
        return
    names = sorted(BACKENDS)
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None:
        unknown = set(marker.args) - set(BACKENDS)
        assert marker.args and not unknown, f"unknown backends {sorted(unknown)} in {marker}"
        names = [b for b in names if b in marker.args]
    metafunc.parametrize("backend", names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def backend_flags(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The flags that select ``backend`` (a redis prefix of this session's own)."""
    chosen = BACKENDS[backend]
    flags = dict(chosen.flags)
    if chosen.cluster:
        flags["redis_url"] = request.getfixturevalue("redis_cluster")
        flags["redis_prefix"] = "c" + uuid.uuid4().hex[:8]
    return flags


def _stop(srv: RankdServer, backend: str) -> None:
    status = srv.stop(signal.SIGTERM)
    assert status in (0, -signal.SIGTERM), f"{backend} rankd exited with {status}:\n{srv.logs()}"


@pytest.fixture(scope="session")
def servers(
    backend: str, backend_flags: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[RankdServer]]:
    chosen = BACKENDS[backend]
    count = 2 if chosen.cluster else 1
    started = []
    for i in range(count):
        srv = RankdServer(
            tmp_path_factory.mktemp(f"contract-{backend}-{i}"), dict(backend_flags), env=chosen.env
        )
        started.append(srv.start())
    yield started
    for srv in started:
        _stop(srv, backend)


@pytest.fixture(scope="session")
def server(servers: list[RankdServer]) -> RankdServer:
    return servers[0]


@pytest.fixture(scope="session")
def peer(servers: list[RankdServer]) -> RankdServer:
    """Another process on the same data (the same one where a backend has only one)."""
    return servers[-1]


class _Alternate(httpx.BaseTransport):
    """Sends each request to the next server in turn (same host, another port)."""

    def __init__(self, ports: list[int]) -> None:
        self._next = itertools.cycle(ports)
        self._transport = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        port = next(self._next)
        request.url = request.url.copy_with(port=port)
        request.headers["host"] = f"{request.url.host}:{port}"
        return self._transport.handle_request(request)

    def close(self) -> None:
        self._transport.close()


@pytest.fixture
def http(servers: list[RankdServer]) -> Iterator[httpx.Client]:
    if len(servers) == 1:
        with servers[0].client() as c:
            yield c
        return
    transport = _Alternate([s.port for s in servers])
    with servers[0].client(transport=transport) as c:
        yield c


@pytest.fixture
def rankd_server(
    backend: str, backend_flags: dict[str, Any], tmp_path: Path
) -> Iterator[ServerFactory]:
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
            {**backend_flags, **flags},
            env={**chosen.env, **(env or {})},
            data_dir=data_dir,
            preexec_fn=preexec_fn,
        )
        started.append(srv)
        return srv.start() if start else srv

    yield factory
    for srv in started:
        srv.kill()
