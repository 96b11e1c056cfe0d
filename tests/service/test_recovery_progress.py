"""A long recovery, watched from outside as an operator would: /metrics (with a ``metrics``
key) moves, /readyz is 503 and /healthz 200 until the data is in, data routes never answer
early, and the progress log lines say how far it is without naming any session.

The data directory is made with the store's own API (a Recorder, as the journal tests do): one
block of journal records written once in memory and repeated. Records carry resulting state,
so replaying a block again reaches the same state; the repeats only make the replay long.
"""

import re
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from store.clock import ManualClock
from store.disk import datadir
from tests.servers import ServerFactory
from tests.store.test_journal import Recorder, write_segment
from tests.store.test_snapshot import T0, fresh

SCRAPER = "recovery-metrics-0123456789"  # what a Prometheus scraper holds: the metrics scope
READER = "recovery-read-0123456789"
MEMBERS = 50_000
REPEATS = 16  # 800k records: several seconds of replay on the 2-core test box
SESSIONS = 50


def _big_journal(directory: Path) -> tuple[int, list[str]]:
    """Segment 1 of ``REPEATS`` blocks plus a few sessions; its record count and their ids."""
    directory.mkdir(mode=0o700)
    ks, ss = fresh(ManualClock(T0))
    rec = Recorder(ks, ss)
    for i in range(MEMBERS):
        ks.write("big", f"m{i}", i)
    block = rec.take()
    block_records = MEMBERS + 1  # the writes and the creation of the board
    sids = [ss.create(user=f"u{i}", ttl=10**6).id for i in range(SESSIONS)]
    tail = rec.take()  # once only: a session is created once
    write_segment(directory, 1, block * REPEATS + tail)
    return block_records * REPEATS + SESSIONS, sids


def _gauges(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("rankd_recovery_") and not s.labels:
                out[s.name] = s.value
    return out


def test_recovery_progress_is_visible_while_it_runs(
    rankd_server: ServerFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    records, sids = _big_journal(data)
    size = datadir.segment_path(data, 1).stat().st_size
    srv = rankd_server(
        data_dir=data,
        start=False,
        snapshot_interval=0,
        api_key=[f"{SCRAPER}:metrics", f"{READER}:read"],
    )
    srv.start(wait_ready=False)  # returns once "listening" is printed: before recovery ends

    during: list[dict[str, float]] = []
    ready_after: dict[str, float] | None = None
    deadline = time.monotonic() + 120
    scraper = {"authorization": f"Bearer {SCRAPER}"}
    reader = {"authorization": f"Bearer {READER}"}
    with srv.client(timeout=30.0) as c:
        while time.monotonic() < deadline:
            ready = c.get("/readyz")
            # A key is judged without the data (service/gate.py): the scraper is served now.
            metrics = c.get("/metrics", headers=scraper)
            assert metrics.status_code == 200, metrics.text
            gauges = _gauges(metrics.text)
            if ready.status_code == 200:
                ready_after = gauges
                break
            assert ready.status_code == 503, ready.text
            assert c.get("/healthz").status_code == 200
            # Never data before recovery ends (the scrape above may race the end: re-check).
            top = c.get("/v1/boards/big/top", headers=reader)
            if top.status_code == 200:
                assert c.get("/readyz").status_code == 200
                continue
            assert top.status_code == 503, top.text
            during.append(gauges)
            time.sleep(0.1)
    assert ready_after is not None, srv.logs()

    moving = [
        g
        for g in during
        if g.get("rankd_recovery_running") == 1 and 0 < g["rankd_recovery_bytes_done"] < size
    ]
    # The gauge moved while /readyz said 503: at least two different partial readings.
    assert len({g["rankd_recovery_bytes_done"] for g in moving}) >= 2, during
    assert all(g["rankd_recovery_bytes_total"] == size for g in moving)
    done = [g["rankd_recovery_bytes_done"] for g in during if "rankd_recovery_bytes_done" in g]
    assert done == sorted(done)
    assert any(0 < g["rankd_recovery_journal_records"] < records for g in moving)

    assert ready_after["rankd_recovery_running"] == 0
    assert ready_after["rankd_recovery_bytes_done"] == ready_after["rankd_recovery_bytes_total"]
    assert ready_after["rankd_recovery_bytes_total"] == size
    assert ready_after["rankd_recovery_journal_records"] == records
    took = ready_after["rankd_recovery_duration_seconds"]
    with httpx.Client(base_url=srv.url, trust_env=False, headers=reader) as c:
        assert c.get("/v1/boards/big/top", params={"limit": 1}).json()["total"] == MEMBERS

    logs = srv.logs()
    lines = re.findall(
        r"replaying journal-0+1\.rkj: \d+ records; recovery (\d+)% of ([\d.]+) MiB", logs
    )
    if took > 2.5:  # a line at most every 2 s: a replay this long must have logged one
        assert lines, logs
    for percent, total in lines:
        assert 0 < int(percent) < 100 and float(total) == round(size / 2**20, 1)
    assert not any(sid in logs for sid in sids)
