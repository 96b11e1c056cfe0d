"""``rankd`` (and ``python -m service``): parse settings, refuse unsafe setups, run uvicorn.

``rankd check`` and ``rankd repair`` are offline commands (service/backend/offline.py):
they never start the server.

Exit codes: 0 after a clean stop, 1 when start-up failed (e.g. the data directory holds
corrupt data; the message names ``rankd check``, ``rankd repair`` and ``--on-bad-data``),
2 for bad settings or protected mode (no API keys and a non-loopback bind),
3 when the port cannot be bound (uvicorn's). After SIGTERM/SIGINT uvicorn drains connections
-- at most ``shutdown_grace`` seconds, then the sweeper cuts every connection still open
(service/connections.py) -- the lifespan takes the final snapshot, and uvicorn re-raises the
signal, so the process ends the way the signal says (status 143 for SIGTERM in a shell).

HTTP runs on ``service.connections.GuardedProtocol`` (httptools with head caps, timeouts and
the connection cap); the soft RLIMIT_NOFILE is raised to the hard limit first and the
connection cap fitted under it (service/descriptors.py).

Logging goes through one formatter that blanks API keys and anything shaped like a session id
or bearer token: ids appear in paths and exception text, and a log is the first place a leaked
credential gets copied from. The access log is off for the same reason (and for speed).
"""

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from service import descriptors, redact
from service.app import create_app
from service.backend import offline
from service.connections import CoarseClock, Sweeper, protocol_class
from service.runtime import Runtime
from service.settings import (
    BAD_DATA_POLICIES,
    FSYNC_POLICIES,
    LIMIT_NAMES,
    LOG_LEVELS,
    Settings,
    SettingsError,
    load,
)

EXIT_STARTUP_FAILED = 1
EXIT_USAGE = 2
WS_HARD_CAP_FACTOR = 4


def configure_logging(settings: Settings) -> None:
    redact.install(list(settings.api_keys), settings.log_level)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rankd",
        description="Real-time leaderboards and sessions over HTTP and WebSocket.",
        epilog="Every flag also reads RANKD_<NAME> from the environment (flags win). "
        "Prefer RANKD_API_KEYS to --api-key: command lines are visible to other users.",
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 8000; 0 picks a free one)")
    p.add_argument("--data-dir", help="snapshot and journal directory (default ./data)")
    p.add_argument("--fsync", choices=FSYNC_POLICIES, help="journal fsync policy (everysec)")
    p.add_argument(
        "--snapshot-interval", type=float, help="seconds between snapshots (300; 0 = off)"
    )
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY:SCOPES",
        help="an API key and its comma-separated scopes "
        "(read,write,sessions,metrics,admin); repeatable",
    )
    p.add_argument(
        "--cors-origins",
        metavar="ORIGINS",
        help="comma-separated web origins whose pages may call rankd, e.g. https://game.example",
    )
    p.add_argument("--log-level", choices=LOG_LEVELS)
    p.add_argument("--on-bad-data", choices=BAD_DATA_POLICIES, help="corrupt data: refuse start")
    p.add_argument(
        "--max-memory",
        metavar="BYTES",
        help="resident memory past which writes that add data answer 507 (k/m/g suffixes; "
        "0 = no limit; default: half the container or machine memory)",
    )
    limits = p.add_argument_group("limits")
    for name in LIMIT_NAMES:
        limits.add_argument("--" + name.replace("_", "-"), dest=name, metavar="N")
    return p


def settings_from(argv: Sequence[str] | None, env: dict[str, str]) -> Settings:
    args = build_parser().parse_args(argv)
    flags: dict[str, Any] = vars(args)
    return load(env, flags)


def protected_mode_error(settings: Settings) -> str | None:
    if settings.api_keys or settings.loopback_only:
        return None
    return (
        f"rankd: refusing to listen on {settings.host!r} without API keys (protected mode).\n"
        "With no keys configured anyone who can reach the port could read and write all data.\n"
        "Either set keys (RANKD_API_KEYS='key:read,write;adminkey:admin' or --api-key KEY:SCOPES)\n"
        "or bind to loopback only (--host 127.0.0.1)."
    )


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, settings: Settings, clock: CoarseClock) -> None:
        super().__init__(config)
        self.settings = settings
        self.sweeper = Sweeper(self.server_state, settings.limits, clock)

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        self.sweeper.start()
        if self.started and self.servers and self.servers[0].sockets:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            s = self.settings
            print(
                f"rankd listening on http://{shown}:{port}/ "
                f"(data in {s.data_dir}, fsync {s.fsync})",
                flush=True,
            )

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self.sweeper.drain()
        try:
            await super().shutdown(sockets)
        finally:
            await self.sweeper.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in offline.COMMANDS:
        sys.exit(offline.main(args))
    try:
        settings = settings_from(args, dict(os.environ))
    except SettingsError as exc:
        print(f"rankd: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    refusal = protected_mode_error(settings)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        sys.exit(EXIT_USAGE)
    configure_logging(settings)
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
        sys.exit(EXIT_USAGE)
    log = logging.getLogger("rankd")
    log.info(
        "file descriptors: limit %d (hard %d), %d reserved; max connections %d",
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

    app = create_app(settings)
    clock = CoarseClock()
    runtime: Runtime = app.state.rankd
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_class(settings.limits, fds.max_connections, clock),
        lifespan="on",
        access_log=False,
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
    server = _Server(config, settings, clock)
    runtime.request_shutdown = lambda: setattr(server, "should_exit", True)
    server.run()
    if runtime.backend.fatal is not None:
        print(f"rankd: start-up failed: {runtime.backend.fatal}", file=sys.stderr)
        sys.exit(EXIT_STARTUP_FAILED)
