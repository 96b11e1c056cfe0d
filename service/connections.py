"""The connection layer: uvicorn's httptools protocol with head caps, timeouts and a
connection cap, all enforced while bytes arrive (Redis's query-buffer limit, ``timeout`` and
``maxclients``, for HTTP).

Why a protocol subclass. uvicorn's httptools protocol buffers a request head without bound:
httptools concatenates each header value chunk by chunk (quadratic in its size) and uvicorn
concatenates the target the same way, so 64 MiB of headers cost ~900 MB of RSS and one
125 MiB value stalled the loop for 5 s. h11 has a head limit, but the h11 protocol serves
POST score at ~60% of httptools' rate. Counting bytes here costs one addition per read.

Each connection is in one phase; the sweeper (one task, like Redis's clientsCron) checks every
connection's deadline a few times a second instead of arming a timer per request::

    phase   from                        until                  past its deadline
    IDLE    connect / response sent     first byte of a head   closed (idle_timeout)
    HEAD    first byte of a head        end of the head        408 + close (header_timeout)
    BODY    end of the head             end of the body        408 + close (body_timeout)
    BUSY    end of the body             response sent          none (the app's business)
    any     writes paused (the client   writes resume          aborted after SEND_TIMEOUT,
            stopped reading)                                   even if already closing
    LINGER  a 408/414/431 was sent      the client closes      closed after LINGER_TIME

Head caps: ``header_bytes`` counts every byte received between the end of one request and the
end of the next head (request line + headers); once a read would pass it, only the bytes up to
the cap are parsed and a head still open there is a 431 (a target over ``target_bytes`` a 414,
more than ``header_count`` lines a 431). Bytes of a pipelined head that arrive in the same
read as the previous body are not counted: the cap may be passed by one read (256 KiB).

Connection cap: HTTP and WebSocket connections share uvicorn's ``server_state.connections``.
A connection accepted beyond ``max_connections`` is answered 503 at once and closed (as Redis
answers "max number of clients reached"): its descriptor is back within one loop iteration, so
a flood of idle sockets never takes the descriptors the snapshot's fork/pipe and the journal
need (``service/descriptors.py`` keeps those in reserve below RLIMIT_NOFILE).

Shutdown (SIGTERM): idle connections and unfinished heads are closed at once; requests in
progress (bodies arriving, handlers running) get ``shutdown_grace``; then every connection
still open -- HTTP or WebSocket, whatever its client does -- is aborted, so uvicorn's drain
ends and the final snapshot runs.
"""

import asyncio
import contextlib
import logging
from http import HTTPStatus
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.errors import PROBLEM_JSON, TYPE_PREFIX
from service.settings import ServiceLimits

log = logging.getLogger("rankd.connections")

IDLE, HEAD, BODY, BUSY, LINGER = 0, 1, 2, 3, 4
SEND_TIMEOUT = 5.0  # as the WebSocket hub's: a client that stops reading is cut after this
# After a refusal the server stops sending (FIN) but reads and drops what the client is still
# sending for up to this long: closing with unread input makes the kernel send a reset, and a
# client still writing its 1 MiB header then never reads the 431 (nginx's lingering close).
LINGER_TIME = 2.0
MAX_SWEEP_INTERVAL = 0.5


def refusal(status: int, kind: str, detail: str) -> bytes:
    """A complete problem+json response that closes the connection, built once."""
    title = HTTPStatus(status).phrase
    body = orjson.dumps(
        {"type": TYPE_PREFIX + kind, "title": title, "status": status, "detail": detail}
    )
    head = (
        f"HTTP/1.1 {status} {title}\r\n"
        f"content-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class CoarseClock:
    """Loop time as of the last sweep, as Redis caches ``server.unixtime`` for its clients.

    Phase changes stamp ``now`` (an attribute read) instead of calling ``loop.time()`` three
    times per request; deadlines are only checked once per sweep anyway, so the stamps lose
    nothing but up to one sweep interval of precision, which the sweep already had.
    """

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0


class _HeadRefused(Exception):
    """Raised inside a parser callback; httptools turns it into an HttpParserCallbackError."""


class Refusals:
    """The fixed answers of one server, with the configured numbers in their details."""

    def __init__(self, limits: ServiceLimits) -> None:
        self.target = refusal(
            414, "uri-too-long", f"the request target must be at most {limits.target_bytes} bytes"
        )
        self.header_bytes = refusal(
            431,
            "header-fields-too-large",
            f"the request head must be at most {limits.header_bytes} bytes",
        )
        self.header_count = refusal(
            431,
            "header-fields-too-large",
            f"a request may carry at most {limits.header_count} header fields",
        )
        self.head_timeout = refusal(
            408, "request-timeout", f"the request head took over {limits.header_timeout:g} s"
        )
        self.body_timeout = refusal(
            408, "request-timeout", f"the request body took over {limits.body_timeout:g} s"
        )
        self.busy = refusal(
            503, "too-many-connections", "the server is at its connection limit; retry shortly"
        )
        self.shutting_down = refusal(
            503, "shutting-down", "the server is shutting down; retry on another instance"
        )


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the phase, caps and deadlines described above."""

    # Set on the subclass ``protocol_class`` builds: one server's configuration.
    limits: ServiceLimits
    refusals: Refusals
    max_connections: int
    clock: CoarseClock

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = IDLE
        self.since = self.clock.now
        self.paused_at: float | None = None  # when the transport stopped taking our writes
        self._in_head = True  # between the end of a request and the end of the next head
        self._head_bytes = 0
        self._refusal: bytes | None = None  # what send_400_response sends instead of a 400

    # -- accepting -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            # No lingering: it would hold a descriptor past the cap for a while.
            self.refuse(self.refusals.busy, linger=False)

    def refuse(self, response: bytes, linger: bool = True) -> None:
        """Answer ``response`` (unless an answer already started) and close.

        ``linger``: half-close and drop further input for up to LINGER_TIME (see above)
        instead of closing at once.
        """
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A handler may be waiting for the body: it now sees a disconnect, and whatever it
            # sends is dropped (uvicorn's send returns once ``disconnected`` is set).
            started = cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
            if started:
                self.transport.abort()
                return
        transport = self.transport
        if transport.is_closing() or self.phase == LINGER:
            return
        transport.write(response)
        if linger and transport.can_write_eof():
            transport.write_eof()
            self.phase, self.since = LINGER, self.clock.now
            self.flow.resume_reading()
        else:
            transport.close()

    # -- reading: the head caps ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.phase == LINGER:
            return
        if self._in_head:
            if self.phase == IDLE:
                self.phase, self.since = HEAD, self.clock.now
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.header_bytes:
                self._feed_capped(data)
                return
        super().data_received(data)

    def _feed_capped(self, data: bytes) -> None:
        """Parse only the bytes up to the head cap; a head still open there is a 431."""
        room = len(data) - (self._head_bytes - self.limits.header_bytes)
        super().data_received(data[:room])
        if self.transport.is_closing() or self.phase == LINGER:
            return  # refused (414/431) or malformed (400) within the allowed bytes
        if self._in_head:
            self.refuse(self.refusals.header_bytes)
            return
        super().data_received(data[room:])

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self.refuse(self._refusal)

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.target_bytes:
            self._refusal = self.refusals.target
            raise _HeadRefused
        self.url += url

    def on_headers_complete(self) -> None:
        # Counted here, not per header: the head is already bounded by header_bytes, and an
        # on_header override costs a call per header on every request.
        if len(self.headers) > self.limits.header_count:
            self._refusal = self.refusals.header_count
            raise _HeadRefused
        self._in_head = False
        self.phase, self.since = BODY, self.clock.now
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self.phase = BUSY
        HttpToolsProtocol.on_message_complete(self)

    # -- writing ---------------------------------------------------------------------------------

    def on_response_complete(self) -> None:
        # uvicorn's version, minus its keep-alive timer: the sweeper owns idle deadlines, which
        # saves a call_later and a cancel per request.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._in_head and self.phase == BUSY:
            self.phase, self.since = IDLE, self.clock.now

    def pause_writing(self) -> None:
        self.paused_at = self.loop.time()
        super().pause_writing()

    def resume_writing(self) -> None:
        self.paused_at = None
        super().resume_writing()

    # -- deadlines -------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Called by the sweeper: act on whatever deadline of this connection has passed."""
        if self.paused_at is not None and now - self.paused_at > SEND_TIMEOUT:
            # Also after close(): a close waits for the buffer to drain, and a client that
            # never reads would keep the connection (and its slot) forever.
            self.transport.abort()
            return
        if self.transport.is_closing():
            return
        phase, age, limits = self.phase, now - self.since, self.limits
        if phase == IDLE:
            if age > limits.idle_timeout:
                self.transport.close()
        elif phase == HEAD:
            if age > limits.header_timeout:
                self.refuse(self.refusals.head_timeout)
        elif phase == BODY:
            if age > limits.body_timeout:
                if self.cycle is not None and self.cycle.response_complete:
                    # Answered early (e.g. 413) while the body still trickles in: one answer
                    # per request, so no 408 after it.
                    self.transport.close()
                else:
                    self.refuse(self.refusals.body_timeout)
        elif phase == LINGER and age > LINGER_TIME:
            self.transport.abort()

    def shutdown(self) -> None:
        """uvicorn calls this on SIGTERM: close what holds no request; the rest may finish."""
        if self.phase == IDLE:
            self.transport.close()
        elif self.phase == HEAD:
            self.refuse(self.refusals.shutting_down, linger=False)
        else:
            super().shutdown()

    def cut(self) -> None:
        """The shutdown grace is over: answer 503 if nothing was answered yet, and close.

        A connection already closing had the whole grace to flush: it is aborted (the next
        sweep aborts one this call closes, if its client does not read the 503 either).
        """
        transport = self.transport
        if transport.is_closing():
            transport.abort()
            return
        self.refuse(self.refusals.shutting_down, linger=False)
        if not transport.is_closing():
            transport.abort()


def protocol_class(
    limits: ServiceLimits, max_connections: int, clock: CoarseClock | None = None
) -> type[GuardedProtocol]:
    """A protocol class bound to one server's limits (uvicorn instantiates it per connection).

    ``clock`` is the one its Sweeper advances (a fresh one if not given).
    """
    return type(
        "RankdHttpProtocol",
        (GuardedProtocol,),
        {
            "limits": limits,
            "refusals": Refusals(limits),
            "max_connections": max_connections,
            "clock": clock or CoarseClock(),
        },
    )


class Sweeper:
    """One task that expires connections, and cuts them all when the shutdown grace ends."""

    def __init__(self, state: ServerState, limits: ServiceLimits, clock: CoarseClock) -> None:
        self._state = state
        self._clock = clock
        self._grace = limits.shutdown_grace
        shortest = min(limits.idle_timeout, limits.header_timeout, limits.body_timeout)
        # A deadline is acted on within a quarter of the shortest timeout (at most 0.5 s late).
        self.interval = max(0.02, min(MAX_SWEEP_INTERVAL, shortest / 4))
        self._cut_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._clock.now = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(), name="rankd-connection-sweeper")

    def drain(self) -> None:
        """Shutdown began: from ``shutdown_grace`` on, every connection is cut."""
        self._cut_at = asyncio.get_running_loop().time() + self._grace
        if self._grace == 0:
            self.sweep(self._cut_at)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.sweep(loop.time())
            except Exception:  # one bad connection must not end every later sweep
                log.exception("connection sweep failed")

    def sweep(self, now: float) -> None:
        self._clock.now = now
        cut = self._cut_at is not None and now >= self._cut_at
        cut_count = 0
        for conn in list(self._state.connections):
            if cut:
                cut_count += 1
                if isinstance(conn, GuardedProtocol):
                    conn.cut()
                else:  # a WebSocket: its client may not even read the close frame
                    transport = getattr(conn, "transport", None)
                    if transport is not None:
                        transport.abort()
            elif isinstance(conn, GuardedProtocol):
                conn.expire(now)
        if cut and cut_count:
            log.warning("shutdown grace (%g s) over: cut %d connection(s)", self._grace, cut_count)
