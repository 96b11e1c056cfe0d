"""Process lifecycle: readiness gate, graceful shutdown, failed start-up, the session purge,
metrics and the admin snapshot.

Real processes where the behaviour is the process's (signals, exit codes, what is on disk
after a stop); the app in-process (Starlette's TestClient runs its lifespan) where the test
must control time or the moment recovery finishes, which no outside client can.
"""

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from websockets.sync.client import connect

from service.app import create_app
from service.backend import embedded as embedded_module
from service.settings import Settings
from store.clock import ManualClock


def test_sigterm_takes_a_final_snapshot_that_the_next_start_loads(rankd_server) -> None:
    srv = rankd_server(snapshot_interval=0, fsync="no")
    with srv.client() as c:
        c.put("/v1/boards/life", json={"order": "asc"})
        c.post(
            "/v1/boards/life/scores:batch",
            json=[{"member": f"m{i}", "score": i % 17} for i in range(500)],
        )
        sid = c.post("/v1/sessions", json={"user": "ann", "data": {"k": 1}}).json()["id"]
        top = c.get("/v1/boards/life/top", params={"limit": 1000}).json()
        epoch = c.get("/readyz").json()["epoch"]
    status = srv.stop(signal.SIGTERM)
    assert status in (0, -signal.SIGTERM), srv.logs()
    assert (srv.data_dir / "snapshot.rkd").stat().st_size > 0
    assert "final snapshot" in srv.logs()

    srv.start()
    with srv.client() as c:
        assert c.get("/v1/boards/life/top", params={"limit": 1000}).json() == top
        assert c.get("/v1/boards/life").json()["order"] == "asc"
        assert c.get(f"/v1/sessions/{sid}").json()["data"] == {"k": 1}
        assert c.get("/readyz").json()["epoch"] != epoch  # a restart is visible to clients


def test_sigint_is_graceful_too(rankd_server) -> None:
    srv = rankd_server(snapshot_interval=0)
    with srv.client() as c:
        c.post("/v1/boards/int/scores", json={"member": "a", "score": 1})
    assert srv.stop(signal.SIGINT) == 130  # 128 + SIGINT, no KeyboardInterrupt traceback
    srv.start()
    with srv.client() as c:
        assert c.get("/v1/boards/int/members/a").json()["score"] == 1


def test_corrupt_data_refuses_to_start_with_exit_1(rankd_server) -> None:
    srv = rankd_server(snapshot_interval=0)
    with srv.client() as c:
        c.post(
            "/v1/boards/c/scores:batch", json=[{"member": f"m{i}", "score": i} for i in range(50)]
        )
    srv.stop()
    snap = srv.data_dir / "snapshot.rkd"
    raw = bytearray(snap.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    snap.write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match="exited with 1"):
        srv.start()
    assert "start-up failed" in srv.logs()
    assert "snapshot.rkd" in srv.logs()


def test_default_data_dir_is_created_in_the_working_directory(tmp_path, rankd_argv) -> None:
    with subprocess.Popen(
        [*rankd_argv, "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin"},
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            assert line.startswith("rankd listening on http://127.0.0.1:")
            assert "(data in data, fsync everysec)" in line
            port = int(line.split(":")[2].split("/")[0])
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as c:
                deadline = time.monotonic() + 20
                while c.get("/readyz").status_code != 200:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            assert (tmp_path / "data").is_dir()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


# -- in-process: the moments an outside client cannot control --------------------------------


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", snapshot_interval=0)


@asynccontextmanager
async def _serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that calls it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_v1_routes_answer_503_until_recovery_is_done(tmp_path, monkeypatch, problem) -> None:
    release = threading.Event()
    real = embedded_module.Persistence  # type: ignore[attr-defined]

    class SlowRecovery(real):  # type: ignore[misc, valid-type]
        def recover(self, progress=None):  # type: ignore[no-untyped-def]
            release.wait(30)
            return super().recover(progress)

    monkeypatch.setattr(embedded_module, "Persistence", SlowRecovery)

    async def scenario() -> None:
        async with _serving(create_app(_settings(tmp_path))) as c:
            assert (await c.get("/healthz")).status_code == 200
            problem(await c.get("/readyz"), 503, "not-ready")
            problem(await c.get("/v1/boards"), 503, "not-ready")
            problem(await c.post("/v1/boards/b/scores", json={"member": "a", "score": 1}), 503)
            problem(await c.post("/v1/sessions"), 503)
            assert (await c.get("/metrics")).status_code == 200  # observable while recovering
            release.set()

            async def ready() -> bool:
                return (await c.get("/readyz")).status_code == 200

            await _eventually(ready)
            r = await c.post("/v1/boards/b/scores", json={"member": "a", "score": 1})
            assert r.status_code == 200

    asyncio.run(scenario())


def test_expired_sessions_vanish_at_once_and_are_purged_in_the_background(
    tmp_path, problem
) -> None:
    clock = ManualClock()
    app = create_app(_settings(tmp_path), clock=clock)
    rt = app.state.rankd

    async def scenario() -> None:
        async with _serving(app) as c:
            await _eventually(lambda: _true(rt.backend.ready))
            ids = [(await c.post("/v1/sessions", json={"ttl": 5})).json()["id"] for _ in range(30)]
            keep = (await c.post("/v1/sessions", json={"ttl": 3600})).json()["id"]
            clock.advance(4)
            assert (await c.get(f"/v1/sessions/{ids[0]}")).status_code == 200  # touched: +5 s
            clock.advance(3)
            problem(await c.get(f"/v1/sessions/{ids[1]}"), 404)  # lazily expired on read
            peek = await c.get(f"/v1/sessions/{ids[0]}", params={"touch": "false"})
            assert peek.status_code == 200
            clock.advance(10)
            # The purge task reclaims the rest without any read; it sleeps <= 1 s per round.
            await _eventually(lambda: _true(len(rt.backend._sessions) == 1))
            assert rt.backend._sessions.counters["expired"] == 30
            assert (await c.get(f"/v1/sessions/{keep}")).status_code == 200
            metrics = (await c.get("/metrics")).text
            assert "rankd_session_expirations_total 30.0" in metrics

    asyncio.run(scenario())


async def _true(value: bool) -> bool:
    return value


def test_metrics_describe_requests_store_and_persistence(rankd_server) -> None:
    srv = rankd_server(fsync="always", snapshot_interval=0)
    with srv.client() as c:
        for i in range(5):
            c.post("/v1/boards/mx/scores", json={"member": f"m{i}", "score": i})
        c.get("/v1/boards/mx/top")
        c.get("/v1/boards/nope/top")
        sid = c.post("/v1/sessions").json()["id"]
        c.get(f"/v1/sessions/{sid}")
        report = c.post("/v1/admin/snapshot").json()
        assert report["entries"] == 5 and report["sessions"] == 1
        with connect(srv.url.replace("http", "ws", 1) + "/v1/ws") as ws:
            ws.send(json.dumps({"op": "subscribe", "id": "s", "board": "mx", "top": 3}))
            assert json.loads(ws.recv(timeout=10))["type"] == "top"
            r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert sid not in r.text  # route templates, never concrete paths
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    samples = [sample for family in families.values() for sample in family.samples]

    def value(name: str, **labels: str) -> float:
        for sample in samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        raise AssertionError(f"no {name} {labels}")

    route = "/v1/boards/{board}/scores"
    assert value("rankd_http_requests_total", route=route, method="POST", status="200") == 5
    assert value("rankd_http_requests_total", route="/v1/boards/{board}/top", status="404") == 1
    assert value("rankd_http_request_duration_seconds_count", route=route, status="200") == 5
    assert value("rankd_http_requests_total", route="/v1/sessions/{id}", method="GET") == 1
    assert value("rankd_boards") == 1
    assert value("rankd_board_entries") == 5
    assert value("rankd_sessions") == 1
    assert value("rankd_ready") == 1
    assert value("rankd_persistence_healthy") == 1
    assert value("rankd_journal_fsync_seconds_count") >= 5  # fsync=always: one per commit batch
    assert 0 <= value("rankd_snapshot_age_seconds") < 60
    assert value("rankd_snapshot_duration_seconds") > 0
    assert value("rankd_ws_connections") == 1
    assert value("rankd_ws_subscriptions") == 1
    assert value("rankd_ws_frames_offered_total") >= 1
    assert value("rankd_ws_closed_slow_total") == 0
    assert "process_cpu_seconds_total" in families or "process_cpu_seconds" in families
