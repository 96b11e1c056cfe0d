"""Prometheus metrics: plain counters on the hot path, formatted only when scraped.

Why not ``Histogram.labels(...).observe()`` per request: that is a label-tuple lookup, a lock
and a linear bucket scan on every call. Each route instead owns a ``RouteStats`` whose
``observe`` is a dict increment and one C ``bisect``; a custom collector turns those into
metric families when /metrics is read. Gauges (boards, entries, sessions, persistence state)
are read from the live objects at scrape time, so nothing is updated that nobody reads.

    rankd_http_requests_total{route,method,status}            counter
    rankd_http_request_duration_seconds{route,method,status}  histogram
    rankd_boards, rankd_board_entries, rankd_sessions         gauges
    rankd_session_expirations_total                           counter
    rankd_session_events_total{event}                         counter (created, deleted, ...)
    rankd_ready, rankd_start_time_seconds                     gauges
    rankd_journal_fsync_seconds                               histogram (from persistence)
    rankd_journal_bytes, rankd_persistence_healthy            gauges
    rankd_snapshot_age_seconds, rankd_snapshot_duration_seconds
    rankd_ws_connections, rankd_ws_subscriptions                      gauges
    rankd_ws_frames_offered_total, rankd_ws_frames_conflated_total    counters (conflated: replaced
    rankd_ws_closed_slow_total                                        unsent by a newer state)
    rankd_memory_used_bytes, rankd_memory_limit_bytes (0 = none)      gauges (service/memory.py)
    rankd_memory_refused_writes_total, rankd_memory_errors_total      counters
    rankd_event_loop_lag_seconds                                      histogram (LoopLag)
    rankd_largest_board_entries{board}     gauge: the ten largest boards only
    rankd_ws_frames_sent_total, rankd_ws_sent_bytes_total             counters
    rankd_snapshot_running, rankd_recovery_duration_seconds,
    rankd_recovery_journal_records                                    gauges (persistence)
    rankd_recovery_running, rankd_recovery_bytes_total,
    rankd_recovery_bytes_done            gauges, embedded; live while recovering (the journal
                                         records gauge too), served while /readyz is 503
    rankd_backend_call_duration_seconds{op}  histogram, redis backend only (backend_metrics())
    rankd_score_writes_total{writer}     counter: entries written over HTTP and WebSocket, by
                                         who wrote them (player, key, anonymous): three series

Board labels are bounded on purpose: one series per board would let a client that creates
boards create series without end, so only the ten largest (LARGEST_BOARDS in
service/backend/embedded.py) get a series of their own and ``rankd_board_entries`` keeps the
total.

Routes are labelled by template (``/v1/sessions/{id}``), never by concrete path: paths carry
session ids, and one series per member would blow up the registry.
"""

import asyncio
import contextlib
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from service.backend.api import Lifecycle, Stats
    from service.hub import Hub

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Who wrote a score, as a label: three values whatever the traffic (never a key, a session id
# or a user). "anonymous" is protected mode, where no keys exist.
WRITERS = ("player", "key", "anonymous")
_WRITER_OF: dict[str | None, str] = {
    "player": "player",
    "anonymous": "anonymous",
    None: "anonymous",
}


def writer(auth: str | None) -> str:
    """The ``writer`` label of a request authorised as ``auth`` (service/access.py's AUTH)."""
    return _WRITER_OF.get(auth, "key")


# Seconds. Fine at the low end: a healthy in-memory request takes tens of microseconds.
BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    """Bucket counts (non-cumulative; the last bucket is +Inf) and a running sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus "le").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class RouteStats:
    """Requests and latency of one (method, route template), keyed by status code."""

    __slots__ = ("by_status", "method", "route")

    def __init__(self, method: str, route: str) -> None:
        self.method = method
        self.route = route
        self.by_status: dict[int, Histogram] = {}

    def observe(self, status: int, seconds: float) -> None:
        h = self.by_status.get(status)
        if h is None:
            h = self.by_status[status] = Histogram()
        h.counts[bisect_left(BOUNDS, seconds)] += 1
        h.sum += seconds


# Seconds of event-loop lag: the README's stall goal is 50 ms, so the buckets straddle it.
LAG_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_INTERVAL = 0.25  # seconds between lag samples: 4 timer wake-ups a second cost ~nothing


class LoopLag:
    """Event-loop lag, sampled by a timer that measures its own delay.

    The task sleeps LAG_INTERVAL and records how much later than asked it woke up: that is how
    long a request arriving at that moment would have waited for the loop. A request-time
    measurement would only see the stalls a request happened to hit; this one sees them all,
    at a cost of four wake-ups a second. A stall longer than the interval is observed once, at
    its full length.
    """

    def __init__(self, interval: float = LAG_INTERVAL) -> None:
        self.interval = interval
        self.histogram = Histogram(LAG_BOUNDS)
        self.max = 0.0  # the largest lag seen since start
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="rankd-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        clock = time.monotonic
        interval = self.interval
        while True:
            asked = clock() + interval
            await asyncio.sleep(interval)
            self.observe(max(0.0, clock() - asked))

    def observe(self, lag: float) -> None:
        self.histogram.observe(lag)
        self.max = max(self.max, lag)


class Metrics:
    def __init__(self, backend: "Lifecycle", hub: "Hub | None" = None) -> None:
        self.backend = backend
        self.hub = hub
        self.loop_lag = LoopLag()
        self.routes: dict[tuple[str, str], RouteStats] = {}
        self.score_writes = dict.fromkeys(WRITERS, 0)  # entries written, by writer()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)

    def route(self, method: str, template: str) -> RouteStats:
        key = (method, template)
        stats = self.routes.get(key)
        if stats is None:
            stats = self.routes[key] = RouteStats(method, template)
        return stats

    def render(self) -> bytes:
        body: bytes = generate_latest(self.registry)
        return body


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        stats = self.metrics.backend.stats()  # once per scrape: it walks every board
        yield from self._http()
        yield from self._store(stats)
        yield from self._persistence(stats)
        yield from self._recovery(stats)
        yield from self._ws()
        yield from self._memory(stats)
        yield from self._loop()
        yield from self._backend()

    def _backend(self) -> Iterable[Metric]:
        """What a networked backend reports (service/backend/redis): call latency, errors,
        retries, slot-map refreshes, pub/sub gaps. Nothing for the embedded backend."""
        report = getattr(self.metrics.backend, "backend_metrics", None)
        if report is None:
            return ()
        r = report()
        latency = HistogramMetricFamily(
            "rankd_backend_call_duration_seconds",
            "Round trips to the backend's server (redis), by operation.",
            labels=["op"],
        )
        for kind, (buckets, total) in sorted(r["latency"].items()):
            latency.add_metric([kind], buckets, total)
        errors = CounterMetricFamily(
            "rankd_backend_errors",
            "Backend calls that failed for the cluster's sake (503), by error class.",
            labels=["error"],
        )
        for name, n in sorted(r["errors"].items()):
            errors.add_metric([name], n)
        # Session ends this process caused (the embedded store reports its own in _store);
        # redis expires sessions silently, so "expired" is not counted here.
        events = CounterMetricFamily(
            "rankd_session_events",
            "Session lifecycle events since start, by kind.",
            labels=["event"],
        )
        for name, n in sorted(r.get("session_events", {}).items()):
            events.add_metric([name], n)
        return (
            events,
            latency,
            errors,
            CounterMetricFamily(
                "rankd_backend_retries", "Idempotent reads retried once.", value=r["retries"]
            ),
            CounterMetricFamily(
                "rankd_backend_topology_refreshes",
                "Slot-map refreshes after a failed call (redirections, failovers).",
                value=r["refreshes"],
            ),
            CounterMetricFamily(
                "rankd_pubsub_gaps",
                "Change-feed seq gaps healed by re-reading the board.",
                value=r["gaps"],
            ),
            CounterMetricFamily(
                "rankd_pubsub_resubscribes",
                "Change-feed re-subscriptions after a lost pub/sub connection.",
                value=r["resubscribes"],
            ),
            GaugeMetricFamily(
                "rankd_backend_library_loaded",
                "1 while every primary has the rankd function library.",
                value=1 if r["library_loaded"] else 0,
            ),
        )

    def _loop(self) -> Iterable[Metric]:
        lag = self.metrics.loop_lag
        family = HistogramMetricFamily(
            "rankd_event_loop_lag_seconds",
            "How late a timer woke up: how long a request would have waited for the loop.",
        )
        family.add_metric([], lag.histogram.cumulative(), lag.histogram.sum)
        return (
            family,
            GaugeMetricFamily(
                "rankd_event_loop_lag_max_seconds",
                "The largest event-loop lag seen since start.",
                value=lag.max,
            ),
        )

    def _memory(self, stats: "Stats") -> Iterable[Metric]:
        m = stats["memory"]
        return (
            GaugeMetricFamily(
                "rankd_memory_used_bytes",
                "Resident memory at the last sample (what --max-memory is compared with).",
                value=m["used"],
            ),
            GaugeMetricFamily(
                "rankd_memory_limit_bytes",
                "--max-memory: past it, writes that add data answer 507 (0 = no limit).",
                value=m["limit"],
            ),
            CounterMetricFamily(
                "rankd_memory_refused_writes",
                "Writes answered 507 because memory was over the limit.",
                value=m["refused"],
            ),
            CounterMetricFamily(
                "rankd_memory_errors",
                "Requests that hit an allocation failure (MemoryError), answered 503.",
                value=m["memory_errors"],
            ),
        )

    def _ws(self) -> Iterable[Metric]:
        hub = self.metrics.hub
        if hub is None:
            return ()
        return (
            GaugeMetricFamily(
                "rankd_ws_connections", "Open WebSocket connections.", value=len(hub.peers)
            ),
            GaugeMetricFamily(
                "rankd_ws_subscriptions", "Live WebSocket subscriptions.", value=hub.subscriptions
            ),
            CounterMetricFamily(
                "rankd_ws_frames_offered",
                "State frames handed to connection outboxes.",
                value=hub.frames_offered,
            ),
            CounterMetricFamily(
                "rankd_ws_frames_conflated",
                "State frames replaced, unsent, by a newer state for the same subscription.",
                value=hub.frames_conflated,
            ),
            CounterMetricFamily(
                "rankd_ws_closed_slow",
                "Connections closed because the client stopped reading.",
                value=hub.closed_slow,
            ),
            CounterMetricFamily(
                "rankd_ws_frames_sent",
                "Frames (state pushes and replies) written to WebSocket connections.",
                value=hub.frames_sent,
            ),
            CounterMetricFamily(
                "rankd_ws_sent_bytes",
                "Bytes of the frames written to WebSocket connections, frame headers included.",
                value=hub.sent_bytes,
            ),
        )

    def _http(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "rankd_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels=["route", "method", "status"],
        )
        latency = HistogramMetricFamily(
            "rankd_http_request_duration_seconds",
            "Time from routing to response, by route template, method and status.",
            labels=["route", "method", "status"],
        )
        for stats in list(self.metrics.routes.values()):
            for status, h in list(stats.by_status.items()):
                labels = [stats.route, stats.method, str(status)]
                requests.add_metric(labels, sum(h.counts))
                latency.add_metric(labels, h.cumulative(), h.sum)
        writes = CounterMetricFamily(
            "rankd_score_writes",
            "Entries written (HTTP scores and batches, WebSocket score), by who wrote them.",
            labels=["writer"],
        )
        for kind, n in self.metrics.score_writes.items():
            writes.add_metric([kind], n)
        return (requests, latency, writes)

    def _store(self, stats: "Stats") -> Iterable[Metric]:
        backend = self.metrics.backend
        ready = GaugeMetricFamily(
            "rankd_ready", "1 once recovery finished.", value=1 if backend.ready else 0
        )
        started = GaugeMetricFamily(
            "rankd_start_time_seconds", "Process start, unix time.", value=backend.started_at
        )
        store = stats["store"]
        if store is None:
            return (ready, started)
        counters = store["session_events"]
        events = CounterMetricFamily(
            "rankd_session_events",
            "Session lifecycle events since start, by kind.",
            labels=["event"],
        )
        for name, value in sorted(counters.items()):
            events.add_metric([name], value)
        largest = GaugeMetricFamily(
            "rankd_largest_board_entries",
            "Entries of the ten largest boards (all boards: rankd_board_entries).",
            labels=["board"],
        )
        for board, size in store.get("largest", []):
            largest.add_metric([board], size)
        return (
            largest,
            GaugeMetricFamily("rankd_boards", "Leaderboards in memory.", value=store["boards"]),
            GaugeMetricFamily(
                "rankd_board_entries",
                "Entries over all leaderboards.",
                value=store["entries"],
            ),
            GaugeMetricFamily(
                "rankd_sessions",
                "Sessions held (expired ones not yet purged included).",
                value=store["sessions"],
            ),
            CounterMetricFamily(
                "rankd_session_expirations",
                "Sessions that expired (found on read or purged), since start.",
                value=counters.get("expired", 0),
            ),
            events,
            ready,
            started,
        )

    def _recovery(self, stats: "Stats") -> Iterable[Metric]:
        """Live while the embedded backend recovers: /metrics is served then (only /v1 waits
        for readiness), so a scraper sees a long start-up move instead of a silent 503."""
        progress = stats.get("recovery_progress")
        if progress is None:
            return ()
        out: list[Metric] = [
            GaugeMetricFamily(
                "rankd_recovery_running",
                "1 while the snapshot is loaded and the journal replayed (/readyz is 503).",
                value=1 if progress["running"] else 0,
            ),
            GaugeMetricFamily(
                "rankd_recovery_bytes_total",
                "Bytes of snapshot and journal recovery reads (grows if it falls back).",
                value=progress["bytes_total"],
            ),
            GaugeMetricFamily(
                "rankd_recovery_bytes_done",
                "Bytes of snapshot and journal recovery has read so far.",
                value=progress["bytes_done"],
            ),
        ]
        if stats["persistence"] is None:
            # Until persistence takes over (the same gauge, from the final report, below).
            out.append(_journal_records(progress["journal_records"]))
        return out

    def _persistence(self, stats: "Stats") -> Iterable[Metric]:
        p = stats["persistence"]
        if p is None:
            return ()
        out: list[Metric] = [
            GaugeMetricFamily(
                "rankd_persistence_healthy",
                "1 while writes can be made durable; 0 means writes answer 503.",
                value=1 if p["healthy"] else 0,
            ),
            GaugeMetricFamily(
                "rankd_journal_bytes",
                "Size of the journal since the last snapshot.",
                value=p["journal_bytes"],
            ),
        ]
        age = p["snapshot_age"]
        if age is not None:
            out.append(
                GaugeMetricFamily(
                    "rankd_snapshot_age_seconds",
                    "Seconds since the last completed snapshot.",
                    value=age,
                )
            )
        last_seconds = p["snapshot_seconds"]
        if last_seconds is not None:
            out.append(
                GaugeMetricFamily(
                    "rankd_snapshot_duration_seconds",
                    "How long the last snapshot took.",
                    value=last_seconds,
                )
            )
        out.append(
            GaugeMetricFamily(
                "rankd_snapshot_running",
                "1 while a snapshot is being written.",
                value=1 if p.get("snapshot_running") else 0,
            )
        )
        recovered = p.get("recovery")
        if recovered is not None:
            out += [
                GaugeMetricFamily(
                    "rankd_recovery_duration_seconds",
                    "How long loading the snapshot and replaying the journal took at start.",
                    value=recovered["seconds"],
                ),
                _journal_records(recovered["journal_records"]),
            ]
        family = HistogramMetricFamily(
            "rankd_journal_fsync_seconds", "Latency of journal fsync calls."
        )
        family.add_metric([], p["fsync_buckets"], p["fsync_sum"])
        out.append(family)
        return out


def _journal_records(n: int) -> Metric:
    return GaugeMetricFamily(
        "rankd_recovery_journal_records",
        "Journal records replayed at start, so far while recovering (a long journal is a "
        "slow restart).",
        value=n,
    )
