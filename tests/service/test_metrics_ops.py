"""The operations metrics on a real rankd under load: present, moving, bounded.

/metrics is parsed with prometheus_client's own parser (what a Prometheus server would read),
and every family the dashboard and the alert rules use (deploy/) is checked here to move the
way its README entry says.
"""

import json
import signal
import threading
import time

from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from service.backend.embedded import LARGEST_BOARDS
from tests.servers import RankdServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(srv) -> Samples:
    with srv.client() as c:
        r = c.get("/metrics")
    assert r.status_code == 200, r.text
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_metrics_move_under_load(rankd_server) -> None:
    # fsync=always: every acknowledged write is in the journal when kill -9 comes (below).
    srv = rankd_server(max_memory="4g", snapshot_interval=0, fsync="always")
    before = scrape(srv)
    assert value(before, "rankd_memory_limit_bytes") == 4 << 30
    assert 0 < value(before, "rankd_memory_used_bytes") < 4 << 30
    lag_before = value(before, "rankd_event_loop_lag_seconds_count")

    frames: list[str] = []
    ws_url = srv.url.replace("http", "ws") + "/v1/ws"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"op": "subscribe", "id": "s", "board": "b00", "top": 10}))
        frames.append(str(ws.recv(timeout=10)))

        def read() -> None:
            try:
                while True:
                    frames.append(str(ws.recv(timeout=2)))
            except Exception:
                return

        reader = threading.Thread(target=read)
        reader.start()
        # 15 boards of 1..15 * 20 entries: more boards than get a series of their own.
        with srv.client() as c:
            for b in range(15):
                batch = [{"member": f"m{i}", "score": i} for i in range((b + 1) * 20)]
                r = c.post(f"/v1/boards/b{b:02d}/scores:batch", json=batch)
                assert r.status_code == 200, r.text
            for i in range(200):
                c.post("/v1/boards/b00/scores", json={"member": f"w{i}", "score": 10_000 + i})
            assert c.post("/v1/admin/snapshot").status_code == 200
        reader.join()
    time.sleep(0.6)  # at least two lag samples
    after = scrape(srv)

    largest = series(after, "rankd_largest_board_entries")
    assert len(largest) == LARGEST_BOARDS == 10
    # b00 holds 20 + 200 entries, more than b05 (120): the ten are b00 and b06..b14.
    assert {dict(k)["board"] for k in largest} == {"b00", *(f"b{b:02d}" for b in range(6, 15))}
    assert largest[(("board", "b14"),)] == 300
    assert value(after, "rankd_board_entries") == sum((b + 1) * 20 for b in range(15)) + 200
    assert value(after, "rankd_boards") == 15

    assert value(after, "rankd_event_loop_lag_seconds_count") >= lag_before + 2
    assert value(after, "rankd_event_loop_lag_seconds_sum") > 0
    assert value(after, "rankd_event_loop_lag_max_seconds") > 0

    sent = value(after, "rankd_ws_frames_sent_total") - value(before, "rankd_ws_frames_sent_total")
    assert sent >= len(frames) >= 2
    sent_bytes = value(after, "rankd_ws_sent_bytes_total")
    assert sent_bytes >= sum(len(f) for f in frames)
    assert value(after, "rankd_ws_closed_slow_total") == 0

    assert value(after, "rankd_snapshot_running") == 0
    assert value(after, "rankd_snapshot_age_seconds") < 60
    assert value(after, "rankd_persistence_healthy") == 1
    assert value(after, "rankd_recovery_journal_records") == 0  # a fresh data dir
    ok = value(after, "rankd_http_requests_total", route="/v1/boards/{board}/scores", method="POST",
               status="200")  # fmt: skip
    assert ok == 200

    # A restart replays the journal written since the snapshot: recovery's cost is exported.
    with srv.client() as c:
        for i in range(30):
            c.post("/v1/boards/b01/scores", json={"member": f"late{i}", "score": i})
    srv.kill()  # no final snapshot: the 30 writes are replayed from the journal
    srv.start()
    restarted = scrape(srv)
    assert value(restarted, "rankd_recovery_journal_records") >= 30
    assert value(restarted, "rankd_recovery_duration_seconds") >= 0
    assert srv.stop(signal.SIGTERM) == 0


def test_backend_call_latency_is_exported_by_the_redis_backend(redis_cluster, tmp_path) -> None:
    """Round trips to the cluster, by operation, on a real rankd over the real cluster."""
    flags = {"backend": "redis", "redis_url": redis_cluster, "redis_prefix": "mops"}
    srv = RankdServer(tmp_path, flags)
    srv.start()
    try:
        with srv.client() as c:
            for i in range(5):
                assert c.post(
                    "/v1/boards/lat/scores", json={"member": f"m{i}", "score": i}
                ).is_success
            assert c.get("/v1/boards/lat/top").status_code == 200
        samples = scrape(srv)
    finally:
        srv.stop(signal.SIGTERM)
    counts = {
        dict(labels)["op"]: v
        for labels, v in series(samples, "rankd_backend_call_duration_seconds_count").items()
    }
    assert counts.get("write", 0) >= 5 and counts.get("read", 0) >= 1, counts
    assert value(samples, "rankd_backend_library_loaded") == 1
