"""``rankd`` (and ``python -m service``): parse settings, refuse unsafe setups, run uvicorn.

``rankd check`` and ``rankd repair`` are offline commands (service/backend/offline.py):
they never start the server; ``rankd healthcheck`` asks a running one (service/healthcheck.py,
the container's HEALTHCHECK). ``rankd --version`` prints the installed version.

Start-up, in this order, so every refusal comes before anything slow or visible::

    settings      flags > RANKD_* > RANKD_*_FILE (a file's contents, for Docker/Kubernetes
                  secrets) > defaults; a bad value names the flag and the variable
    refusals      protected mode, the descriptor limit, the data directory's LOCK (another
                  rankd owns it), then the port (bound here, before recovery: a second rankd
                  on a taken port fails in milliseconds, not after loading gigabytes)
    run           uvicorn on the bound socket; "rankd listening on ..." is printed only once
                  the socket accepts connections (recovery then runs behind /healthz)

Exit codes: 0 after a clean stop (SIGTERM included: the stop was asked for and done),
130 after Ctrl-C/SIGINT (the shell convention, 128 + 2), 1 when start-up failed (the data
directory is locked, unusable or holds corrupt data; the message names ``rankd check``,
``rankd repair`` and ``--on-bad-data``), 2 for bad settings or protected mode (no API keys and
a non-loopback bind), 3 when the port cannot be bound. No signal ends in a traceback: uvicorn
catches SIGTERM/SIGINT, drains connections -- at most ``shutdown_grace`` seconds, then the
sweeper cuts every connection still open (service/connections.py) -- the lifespan takes the
final snapshot, and the process exits with the code above instead of re-raising the signal
(which, for SIGINT, is a KeyboardInterrupt traceback). A second Ctrl-C forces the exit.

HTTP runs on ``service.connections.GuardedProtocol`` (httptools with head caps, timeouts and
the connection cap); the soft RLIMIT_NOFILE is raised to the hard limit first and the
connection cap fitted under it (service/descriptors.py).

Logging goes through one formatter (text or JSON lines, service/logs.py) that blanks API keys
and anything shaped like a session id or bearer token: ids appear in paths and exception text,
and a log is the first place a leaked credential gets copied from. The access log is off by
default (``--access-log``: service/access.py) for the same reason and for speed.

With ``RANKD_HUGEPAGES=1`` the server re-executes itself once, first thing, with the heap on
transparent huge pages (the snapshot fork stays short: service/hugepages.py).
"""

import argparse
import contextlib
import errno
import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

from service import hugepages

if os.path.basename(sys.argv[0]) == "rankd":  # the console script, not an import (tests)
    # Before the heavy imports below, which the new process does again (service/hugepages.py)
    hugepages.reexec(sys.argv[1:])

import uvicorn

from service import descriptors, healthcheck, logs, testclock
from service.access import AccessLog
from service.app import create_app
from service.backend import offline, preflight
from service.connections import CoarseClock, Sweeper, protocol_class
from service.logs import LOG_FORMATS, LogSettings
from service.runtime import Runtime
from service.settings import (
    BAD_DATA_POLICIES,
    FSYNC_POLICIES,
    LIMIT_NAMES,
    LOG_LEVELS,
    ServiceLimits,
    Settings,
    SettingsError,
    load,
)

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
EXIT_USAGE = 2
EXIT_BIND = 3
EXIT_INTERRUPTED = 128 + signal.SIGINT
WS_HARD_CAP_FACTOR = 4
# RANKD_<NAME>_FILE: a secret's file (Docker/Kubernetes secrets). Read at most this much.
SECRET_FILE_BYTES = 1 << 20

# What each limit bounds, for --help (the defaults come from ServiceLimits itself).
LIMIT_HELP = {
    "body_bytes": "largest HTTP request body, bytes (413 past it)",
    "batch_items": "items in one scores:batch request (413 past it)",
    "page_items": "entries in one page: ?limit= of top, score ranges and the list of boards",
    "radius": "entries either side of a member in GET .../around (?radius=)",
    "member_bytes": "UTF-8 bytes of a member id",
    "metadata_bytes": "bytes of an entry's metadata, as compact JSON",
    "ws_subscriptions": "subscriptions per WebSocket connection",
    "ws_outbox_frames": "replies queued for one WebSocket before the server stops reading it",
    "ws_connections": "concurrent WebSocket connections",
    "ws_frame_bytes": "bytes of one client WebSocket frame",
    "ws_tick": "seconds between coalesced pushes per subscription",
    "session_data_bytes": "bytes of a session's data, as compact JSON",
    "sessions_per_user": "live sessions one user may hold",
    "sessions_over_limit": "a user past --sessions-per-user: evict-oldest (their oldest session "
    "ends, reason evicted) or refuse (429)",
    "session_ttl": "default idle timeout of a session, seconds",
    "session_max_ttl": "largest idle timeout a client may ask for, seconds",
    "session_lifetime": "default absolute lifetime of a session, seconds",
    "session_max_lifetime": "largest absolute lifetime a client may ask for, seconds",
    "max_connections": "HTTP + WebSocket connections (lowered to fit the descriptor limit)",
    "target_bytes": "bytes of a request target, path + query (414 past it)",
    "header_count": "header lines in one request (431 past it)",
    "header_bytes": "bytes of a whole request head (431 past it)",
    "idle_timeout": "seconds a connection may sit without a request",
    "header_timeout": "seconds from a request's first byte to the end of its head (408)",
    "body_timeout": "seconds from the end of the head to the end of the body (408)",
    "shutdown_grace": "seconds in-flight requests get after SIGTERM before they are cut",
    "max_boards": "leaderboards (0 = no cap; creation answers 507 past it)",
    "max_anonymous_sessions": "sessions without a user (0 = no cap)",
}


def version() -> str:
    try:
        return metadata.version("rankd")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="rankd",
        description="Real-time leaderboards and sessions over HTTP and WebSocket. "
        "Other commands: rankd check, rankd repair (offline), rankd healthcheck "
        "(see rankd check --help).",
        epilog="Every setting also reads RANKD_<NAME> from the environment (flags win), "
        "and RANKD_<NAME>_FILE names a file holding it (e.g. RANKD_API_KEYS_FILE for a "
        "Docker or Kubernetes secret). Prefer RANKD_API_KEYS(_FILE) to --api-key: command "
        "lines are visible to other users.",
    )
    p.add_argument("--version", action="version", version=f"rankd {version()}")
    p.add_argument("--host", help=f"address to bind (default: {d.host}; RANKD_HOST)")
    p.add_argument("--port", type=int, help=f"port to bind; 0 picks a free one (default: {d.port})")
    p.add_argument("--data-dir", help=f"snapshot and journal directory (default: ./{d.data_dir})")
    p.add_argument(
        "--fsync",
        choices=FSYNC_POLICIES,
        help=f"journal fsync policy: always loses no acknowledged write (default: {d.fsync})",
    )
    p.add_argument(
        "--snapshot-interval",
        type=float,
        metavar="SECONDS",
        help=f"seconds between snapshots, 0 = only on demand and at shutdown "
        f"(default: {d.snapshot_interval:g})",
    )
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY:SCOPES",
        help="an API key and its comma-separated scopes (read,write,sessions,metrics,admin); "
        "repeatable (default: none, which allows only a loopback bind)",
    )
    p.add_argument(
        "--cors-origins",
        metavar="ORIGINS",
        help="comma-separated web origins whose pages may call rankd, e.g. "
        "https://game.example (default: none)",
    )
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, help=f"log verbosity (default: {d.log_level})"
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text lines, or one JSON object per line for log shippers (default: text)",
    )
    p.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log every HTTP request and WebSocket session with its X-Request-Id, status, "
        "duration and who was served (auth=key:SCOPES|player|anonymous); never "
        "query strings or headers (default: off)",
    )
    p.add_argument(
        "--on-bad-data",
        choices=BAD_DATA_POLICIES,
        help="corrupt data at start-up: refuse to start, or move the damaged files aside "
        f"(default: {d.on_bad_data})",
    )
    p.add_argument(
        "--backend",
        choices=("embedded", "redis"),
        help="where data lives: embedded (this process, ./data) or redis (a Redis/Valkey "
        "Cluster; see README 'Scaling out') (default: embedded)",
    )
    p.add_argument(
        "--redis-url",
        help="redis backend: seed nodes, comma-separated (redis://h:p,h2:p2 or rediss://...); "
        "password from RANKD_REDIS_PASSWORD or RANKD_REDIS_PASSWORD_FILE "
        "(default: redis://127.0.0.1:6379)",
    )
    p.add_argument("--redis-prefix", help="redis backend: key prefix (default: rk)")
    p.add_argument("--redis-username", help="redis backend: ACL user (default: none)")
    p.add_argument(
        "--redis-wait-replicas",
        metavar="N",
        help="redis backend: after each acknowledged write, WAIT until N replicas have it; "
        "fewer within the wait timeout answer 503 write-unconfirmed (the write "
        f"happened) (default: {d.redis_wait_replicas})",
    )
    p.add_argument(
        "--redis-wait-timeout-ms",
        metavar="MS",
        help="redis backend: how long a write waits for its replicas or AOF fsync "
        f"(default: {d.redis_wait_timeout_ms})",
    )
    p.add_argument(
        "--redis-wait-aof",
        metavar="LOCAL,REPLICAS",
        help="redis backend: after each acknowledged write, WAITAOF until it is fsynced to "
        "the primary's AOF (LOCAL 1) and to REPLICAS replicas' (Redis >= 7.2 / Valkey >= 8.0) "
        "(default: 0,0 = off)",
    )
    p.add_argument(
        "--max-memory",
        metavar="BYTES",
        help="resident memory past which writes that add data answer 507 (k/m/g suffixes; "
        "0 = no limit; default: half the container or machine memory)",
    )
    limits = p.add_argument_group("limits (every input is bounded)")
    defaults = ServiceLimits()
    for name in LIMIT_NAMES:
        what = LIMIT_HELP.get(name, name.replace("_", " "))
        default = getattr(defaults, name)
        number = isinstance(default, int | float)
        limits.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar="N" if number else "POLICY",
            help=f"{what} (default: {default:g})" if number else f"{what} (default: {default})",
        )
    return p


def with_secret_files(env: Mapping[str, str]) -> dict[str, str]:
    """``RANKD_X_FILE=/run/secrets/x`` -> ``RANKD_X`` = that file's contents (one trailing
    newline dropped). Setting both is refused: which one wins would be a guess."""
    out = dict(env)
    for name, path in env.items():
        if not (name.startswith("RANKD_") and name.endswith("_FILE")) or not path:
            continue
        target = name[: -len("_FILE")]
        if env.get(target):
            raise SettingsError(f"{target} and {name} are both set: keep one")
        try:
            with open(path, "rb") as f:
                raw = f.read(SECRET_FILE_BYTES + 1)
        except OSError as exc:
            raise SettingsError(f"{name}: cannot read {path!r}: {exc.strerror}") from None
        if len(raw) > SECRET_FILE_BYTES:
            raise SettingsError(f"{name}: {path!r} is larger than {SECRET_FILE_BYTES} bytes")
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise SettingsError(f"{name}: {path!r} is not UTF-8 text") from None
        out[target] = text.removesuffix("\n").removesuffix("\r")
    return out


def settings_from(argv: Sequence[str] | None, env: Mapping[str, str]) -> Settings:
    return parse(argv, env)[0]


def parse(argv: Sequence[str] | None, env: Mapping[str, str]) -> tuple[Settings, LogSettings]:
    args = build_parser().parse_args(argv)
    flags: dict[str, Any] = vars(args)
    log_flags = {"log_format": flags.pop("log_format"), "access_log": flags.pop("access_log")}
    full_env = with_secret_files(env)
    return load(full_env, flags), logs.load(full_env, log_flags)


def protected_mode_error(settings: Settings) -> str | None:
    if settings.api_keys or settings.loopback_only:
        return None
    return (
        f"rankd: refusing to listen on {settings.host!r} without API keys (protected mode).\n"
        "With no keys configured anyone who can reach the port could read and write all data.\n"
        "Either set keys (RANKD_API_KEYS='key:read,write;adminkey:admin', RANKD_API_KEYS_FILE\n"
        "or --api-key KEY:SCOPES) or bind to loopback only (--host 127.0.0.1)."
    )


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound (not yet listening) before any data is loaded."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn does: a restart may reuse a port whose old connections are in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        hint = (
            "another process (another rankd?) is listening there: stop it, or pick another "
            "port with --port / RANKD_PORT"
        )
    elif exc.errno == errno.EACCES:
        hint = "ports below 1024 need privileges: use --port 8000 or higher"
    elif exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        hint = "no network interface has that address: check --host / RANKD_HOST"
    else:
        hint = "check --host and --port"
    return f"rankd: cannot bind {host}:{port}: {exc.strerror or exc}; {hint}"


class _Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, settings: Settings, clock: CoarseClock, runtime: Runtime
    ) -> None:
        super().__init__(config)
        self.settings = settings
        self.runtime = runtime
        self.sweeper = Sweeper(self.server_state, settings.limits, clock)
        self.stopped_by: int | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, minus the re-raise at the end: the exit code says what happened."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.sweeper.start()
        self.runtime.metrics.loop_lag.start()
        if self.started and self.servers and self.servers[0].sockets:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            s = self.settings
            print(
                f"rankd listening on http://{shown}:{port}/ "
                f"(data in {s.data_dir}, fsync {s.fsync})",
                flush=True,
            )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.sweeper.drain()
        try:
            await super().shutdown(sockets)
        finally:
            await self.runtime.metrics.loop_lag.stop()
            await self.sweeper.stop()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        sys.exit(_main(sys.argv[1:] if argv is None else list(argv)))
    except KeyboardInterrupt:
        # Ctrl-C before uvicorn took over the signal (loading modules, binding).
        sys.exit(EXIT_INTERRUPTED)


def _main(args: list[str]) -> int:
    if args and args[0] in offline.COMMANDS:
        return offline.main(args)
    if args and args[0] == "healthcheck":
        return healthcheck.main(args[1:], settings_from)
    try:
        settings, log_settings = parse(args, os.environ)
    except SettingsError as exc:
        print(f"rankd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    refusal = protected_mode_error(settings)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return EXIT_USAGE
    logs.install(list(settings.api_keys), settings.log_level, log_settings.format)
    fds = descriptors.budget(settings.limits.max_connections)
    lowered = fds.max_connections < settings.limits.max_connections
    if lowered and fds.max_connections < descriptors.MIN_CONNECTIONS:
        print(
            f"rankd: the file descriptor limit ({fds.soft}, hard {fds.hard}) leaves room for "
            f"{fds.max_connections} connections after the {descriptors.RESERVED} rankd keeps "
            f"for itself; raise it (ulimit -n, Docker --ulimit nofile=...) to at least "
            f"{descriptors.RESERVED + descriptors.MIN_CONNECTIONS}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if _embedded(settings):
        problem = preflight.data_dir_problem(Path(settings.data_dir))
        if problem is not None:
            print(f"rankd: {problem}", file=sys.stderr)
            return EXIT_STARTUP_FAILED
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        print(bind_error(settings.host, settings.port, exc), file=sys.stderr)
        return EXIT_BIND

    log = logging.getLogger("rankd")
    log.info(
        "rankd %s; file descriptors: limit %d (hard %d), %d reserved; max connections %d",
        version(),
        fds.soft,
        fds.hard,
        descriptors.RESERVED,
        fds.max_connections,
    )
    if lowered:
        log.warning(
            "max connections lowered from %d to %d to fit the descriptor limit; "
            "raise the hard limit (ulimit -Hn) to allow more",
            settings.limits.max_connections,
            fds.max_connections,
        )

    try:
        test_clock = testclock.from_environment(settings, dict(os.environ))
    except (ValueError, OSError) as exc:
        print(f"rankd: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    app = create_app(settings, test_clock)
    clock = CoarseClock()
    runtime: Runtime = app.state.rankd
    config = uvicorn.Config(
        AccessLog(app) if log_settings.access_log else app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_class(settings.limits, fds.max_connections, clock),
        lifespan="on",
        access_log=False,  # ours (service/access.py) has request ids and never logs queries
        log_config=None,  # keep our handler (and its redaction) for uvicorn's loggers too
        server_header=False,
        # The hard cap on a WebSocket frame sits above the soft limit the app enforces: a frame
        # a little too big gets a 413 error frame and the connection lives on; only one 4x
        # over the limit is cut off by the transport (close 1009) before it is buffered.
        ws_max_size=WS_HARD_CAP_FACTOR * settings.limits.ws_frame_bytes,
        # Off: hub frames are built once and shared by every subscriber (service/ws.py), which
        # a per-connection compression context would forbid; and deflating each frame once
        # per subscriber cost more CPU than the fan-out itself.
        ws_per_message_deflate=False,
        # The sweeper cuts every connection when shutdown_grace ends; this is only the
        # backstop for handler tasks that outlive their connection.
        timeout_graceful_shutdown=math.ceil(settings.limits.shutdown_grace) + 1,
        timeout_keep_alive=math.ceil(settings.limits.idle_timeout),  # unused: sweeper's job
    )
    server = _Server(config, settings, clock, runtime)
    runtime.request_shutdown = lambda: setattr(server, "should_exit", True)
    with sock:
        server.run(sockets=[sock])
    if runtime.backend.fatal is not None:
        print(f"rankd: start-up failed: {runtime.backend.fatal}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    return EXIT_INTERRUPTED if server.stopped_by == signal.SIGINT else EXIT_OK


def _embedded(settings: Settings) -> bool:
    # The redis backend keeps no data directory (its setting arrives with it).
    return str(getattr(settings, "backend", "embedded")) == "embedded"
