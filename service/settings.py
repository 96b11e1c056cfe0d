"""Process settings: defaults < environment (``RANKD_*``) < command-line flags.

One frozen ``Settings`` object is built at start-up and handed to everything; nothing reads the
environment later. Every value is checked here, so a typo stops the process with a message that
quotes the bad value instead of surfacing as a 500 hours later.

    RANKD_HOST, RANKD_PORT, RANKD_DATA_DIR, RANKD_FSYNC (always|everysec|no),
    RANKD_SNAPSHOT_INTERVAL (seconds, 0 disables), RANKD_API_KEYS ("key1:read,write;key2:admin"),
    RANKD_BACKEND (embedded|redis), RANKD_REDIS_URL (seeds, comma-separated, redis:// or
    rediss://), RANKD_REDIS_PREFIX, RANKD_REDIS_USERNAME, RANKD_REDIS_PASSWORD or
    RANKD_REDIS_PASSWORD_FILE (never a flag: argv is visible to every user of the machine),
    RANKD_LOG_LEVEL, RANKD_ON_BAD_DATA (refuse|move-aside), RANKD_CORS_ORIGINS
    ("https://a.example,http://localhost:3000"), RANKD_MAX_MEMORY (bytes, k/m/g suffixes;
    default: service.memory.default_limit()), and one RANKD_<LIMIT> per field of
    ``ServiceLimits`` (RANKD_BODY_BYTES, RANKD_BATCH_ITEMS, RANKD_WS_TICK, RANKD_MAX_CONNECTIONS,
    RANKD_IDLE_TIMEOUT, ...).

API keys never appear in ``repr(settings)``: a settings object that ends up in a log line must
not carry credentials with it.
"""

import dataclasses
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from service import memory
from store.values import Limits

Fsync = Literal["always", "everysec", "no"]
OnBadData = Literal["refuse", "move-aside"]
BackendKind = Literal["embedded", "redis"]
BACKENDS: tuple[BackendKind, ...] = ("embedded", "redis")
# Settings of the embedded backend's disk; the redis backend's durability is the cluster's.
PERSISTENCE_SETTINGS = ("data_dir", "fsync", "snapshot_interval", "on_bad_data")

SCOPES = frozenset({"read", "write", "sessions", "metrics", "admin"})
FSYNC_POLICIES: tuple[Fsync, ...] = ("always", "everysec", "no")
BAD_DATA_POLICIES: tuple[OnBadData, ...] = ("refuse", "move-aside")
# --sessions-over-limit; SessionStore checks the same names (the engine is not imported here)
OVER_LIMIT_POLICIES = ("evict-oldest", "refuse")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

# Short keys can be guessed over the network; 16 characters of a random token is ~96 bits.
MIN_KEY_LENGTH = 16


class SettingsError(ValueError):
    """A setting the process refuses to start with; the message names the setting."""


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """Every bound on client input, in one place (HTTP, WebSocket and the store)."""

    body_bytes: int = 64 * 1024  # HTTP request body, read with a hard cap
    batch_items: int = 1000  # items in one scores:batch request
    page_items: int = 1000  # entries in one page: top, score range, list of boards (?limit=)
    radius: int = 100  # entries either side of a member in GET .../around
    member_bytes: int = 128  # UTF-8 bytes of a member id
    metadata_bytes: int = 1024  # entry metadata, as compact JSON
    ws_subscriptions: int = 50  # subscriptions per WebSocket connection
    # Replies (acks, errors) queued for one connection; at this bound the server stops reading
    # that client's requests. A client that stops reading is closed by the 5 s send watchdog.
    ws_outbox_frames: int = 256
    ws_connections: int = 10_000  # concurrent WebSocket connections
    ws_frame_bytes: int = 64 * 1024  # one client frame
    ws_tick: float = 0.1  # seconds between coalesced pushes per subscription
    session_data_bytes: int = 16 * 1024  # session data, as compact JSON
    sessions_per_user: int = 1000  # live sessions one user may hold
    # At that limit a new session evicts the user's oldest ("evict-oldest") or is a 429 ("refuse")
    sessions_over_limit: str = "evict-oldest"
    # Ended ids remembered (refused as caller-chosen ids for --session-max-ttl): past this many
    # the oldest are forgotten early; ~200 bytes each (store/ended.py)
    session_ended_ids: int = 1_000_000
    session_ttl: int = 1800  # default idle timeout, seconds
    session_max_ttl: int = 30 * 86400  # largest idle timeout a client may ask for
    session_lifetime: int = 7 * 86400  # default absolute lifetime, seconds
    session_max_lifetime: int = 365 * 86400  # largest absolute lifetime a client may ask for
    # The connection layer (service/connections.py), enforced while bytes arrive.
    max_connections: int = 10_000  # HTTP + WebSocket; lowered at start to fit RLIMIT_NOFILE
    target_bytes: int = 8 * 1024  # request target (path + query): 414 past it
    header_count: int = 100  # header lines in one request head: 431 past it
    header_bytes: int = 32 * 1024  # the whole head (request line + headers): 431 past it
    idle_timeout: float = 5.0  # keep-alive (or fresh) connection with no request: closed
    header_timeout: float = 10.0  # first byte of a head to its end: 408
    body_timeout: float = 20.0  # end of the head to the end of the body: 408
    shutdown_grace: float = 5.0  # SIGTERM: in-flight requests get this long, then cut
    # Count caps (0 = none); past them creation answers 507. An empty board costs ~1.7 KB and
    # every GET /v1/boards sorts all names, so the board cap also bounds that request.
    max_boards: int = 100_000
    max_anonymous_sessions: int = 1_000_000  # sessions without a user (no per-user limit)

    def store(self) -> Limits:
        """The bounds the store enforces itself, boards and sessions (store/values.py)."""
        return Limits(
            member_bytes=self.member_bytes,
            metadata_bytes=self.metadata_bytes,
            batch_items=self.batch_items,
            page_items=self.page_items,
            radius=self.radius,
            boards=self.max_boards,
            session_data_bytes=self.session_data_bytes,
            sessions_per_user=self.sessions_per_user,
            sessions_over_limit=self.sessions_over_limit,
            anonymous_sessions=self.max_anonymous_sessions,
            session_ended_ids=self.session_ended_ids,
            session_ttl=self.session_ttl,
            session_max_ttl=self.session_max_ttl,
            session_lifetime=self.session_lifetime,
            session_max_lifetime=self.session_max_lifetime,
        )


def _limit_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ServiceLimits))


LIMIT_NAMES = _limit_names()


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    fsync: Fsync = "everysec"
    snapshot_interval: float = 300.0  # seconds; 0 disables periodic snapshots
    api_keys: Mapping[str, frozenset[str]] = field(default_factory=dict, repr=False)
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    log_level: str = "info"
    on_bad_data: OnBadData = "refuse"
    # Web origins (scheme://host[:port]) whose pages may call rankd; see service/browser.py.
    cors_origins: frozenset[str] = frozenset()
    # Bytes of resident memory past which growing writes answer 507; 0 = no limit. None (not
    # given) becomes service.memory.default_limit() in load().
    max_memory: int | None = None
    backend: BackendKind = "embedded"
    redis_url: str = "redis://127.0.0.1:6379"
    redis_prefix: str = "rk"
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    # After each acknowledged write: WAIT for this many replicas, WAITAOF for the primary's
    # (0/1) and this many replicas' AOF fsync, each for at most redis_wait_timeout_ms.
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 100
    redis_wait_aof: tuple[int, int] = (0, 0)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname other than localhost may resolve anywhere


def parse_api_keys(spec: str | list[str]) -> dict[str, frozenset[str]]:
    """``"key1:read,write;key2:admin"`` (or a list of ``key:scopes``) -> {key: scopes}."""
    items = spec if isinstance(spec, list) else [p for p in spec.split(";") if p.strip()]
    keys: dict[str, frozenset[str]] = {}
    for n, item in enumerate(items, 1):
        key, sep, scope_list = item.strip().partition(":")
        # Never quote the key itself in an error: the message may end up in a log.
        where = f"API key #{n}"
        if not sep:
            raise SettingsError(f"{where} must look like KEY:SCOPE[,SCOPE...], but has no ':'")
        if len(key) < MIN_KEY_LENGTH:
            raise SettingsError(
                f"{where} must be at least {MIN_KEY_LENGTH} characters, but has {len(key)}"
            )
        if not (key.isascii() and key.isprintable()) or any(c in key for c in " ,;"):
            raise SettingsError(
                f"{where} must be printable ASCII without spaces, ',' or ';' "
                "(it travels in an HTTP header)"
            )
        scopes = frozenset(s.strip() for s in scope_list.split(",") if s.strip())
        if not scopes or not scopes <= SCOPES:
            raise SettingsError(
                f"{where} scopes must be a non-empty subset of {sorted(SCOPES)}, "
                f"but got {sorted(scopes)!r}"
            )
        if key in keys:
            raise SettingsError(f"{where} is configured twice")
        keys[key] = scopes
    return keys


_ORIGIN = re.compile(r"(https?)://([a-z0-9.\-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def parse_cors_origins(spec: str | list[str]) -> frozenset[str]:
    """``"https://a.example,http://localhost:3000"`` -> origins as browsers serialise them."""
    items = spec if isinstance(spec, list) else spec.split(",")
    origins: set[str] = set()
    for item in items:
        raw = item.strip()
        if not raw:
            continue
        origin = raw.lower()
        match = _ORIGIN.fullmatch(origin)
        if match is None:
            # "*" and "null" included: either would let any page (or a sandboxed one) write.
            raise SettingsError(
                "--cors-origins / RANKD_CORS_ORIGINS takes origins such as "
                f"https://game.example or http://localhost:3000 (no path, no '*'), but got {raw!r}"
            )
        scheme, _, port = match.groups()
        if port == _DEFAULT_PORTS[scheme]:
            origin = origin[: -len(port)]  # browsers never send a default port
        origins.add(origin)
    return frozenset(origins)


def _int(name: str, raw: object, lo: int, hi: int) -> int:
    if isinstance(raw, bool):
        raise SettingsError(f"{name} must be an integer, but got {raw!r}")
    try:
        value: int = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be an integer, but got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, but got {value}")
    return value


def _float(name: str, raw: object, lo: float, hi: float) -> float:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, but got {raw!r}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise SettingsError(f"{name} must be between {lo} and {hi}, but got {raw!r}")
    return value


def _size(name: str, raw: object) -> int:
    try:
        return memory.parse_size(str(raw))
    except ValueError:
        raise SettingsError(
            f"{name} must be bytes with an optional k, m or g suffix (0 = no limit), "
            f"but got {str(raw)[:40]!r}"
        ) from None


def _choice(name: str, raw: object, choices: tuple[str, ...]) -> str:
    value = str(raw).lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, but got {raw!r}")
    return value


# (lowest, highest) accepted for each limit; the ceilings keep a typo from disabling a bound.
_LIMIT_RANGES: dict[str, tuple[float, float]] = {
    # A scores:batch is one journal record (store/disk/journal.py, bbatch), and a record must stay
    # under the 64 MiB frame cap the loader enforces (store/disk/frames.py): a batch's record is at
    # most ~1.5x its body (compact JSON plus a seq per item), so bodies stop at 32 MiB.
    "body_bytes": (1024, 32 * 1024 * 1024),
    "batch_items": (1, 100_000),
    "page_items": (1, 100_000),
    "radius": (0, 10_000),
    "member_bytes": (1, 1024),
    "metadata_bytes": (0, 1024 * 1024),
    "ws_subscriptions": (1, 10_000),
    "ws_outbox_frames": (1, 1_000_000),
    "ws_connections": (1, 1_000_000),
    "ws_frame_bytes": (256, 64 * 1024 * 1024),
    "ws_tick": (0.001, 60.0),
    "session_data_bytes": (2, 16 * 1024 * 1024),
    "sessions_per_user": (1, 1_000_000),
    "session_ended_ids": (0, 1_000_000_000),
    "session_ttl": (1, 10 * 365 * 86400),
    "session_max_ttl": (1, 10 * 365 * 86400),
    "session_lifetime": (1, 10 * 365 * 86400),
    "session_max_lifetime": (1, 10 * 365 * 86400),
    "max_connections": (1, 1_000_000),
    "target_bytes": (256, 1024 * 1024),
    "header_count": (8, 10_000),
    "header_bytes": (1024, 16 * 1024 * 1024),
    "idle_timeout": (0.1, 3600.0),
    "header_timeout": (0.1, 3600.0),
    "body_timeout": (0.1, 3600.0),
    "shutdown_grace": (0.0, 600.0),
    "max_boards": (0, 1_000_000_000),
    "max_anonymous_sessions": (0, 1_000_000_000),
}


def load(env: Mapping[str, str], flags: Mapping[str, Any] | None = None) -> Settings:
    """Build settings from an environment mapping and parsed flags (None = flag not given)."""
    given: dict[str, Any] = {}
    for name in (
        "host",
        "port",
        "data_dir",
        "fsync",
        "snapshot_interval",
        "api_keys",
        "log_level",
        "on_bad_data",
        "cors_origins",
        "max_memory",
        "backend",
        "redis_url",
        "redis_prefix",
        "redis_username",
        "redis_wait_replicas",
        "redis_wait_timeout_ms",
        "redis_wait_aof",
        *LIMIT_NAMES,
    ):
        raw = env.get(f"RANKD_{name.upper()}")
        if raw is not None and raw != "":
            given[name] = raw
    given.update({name: value for name, value in (flags or {}).items() if value is not None})

    defaults = Settings()
    limit_values: dict[str, Any] = {}
    for name in LIMIT_NAMES:
        if name in given:
            label = f"--{name.replace('_', '-')} / RANKD_{name.upper()}"
            if name == "sessions_over_limit":
                limit_values[name] = _choice(label, given[name], OVER_LIMIT_POLICIES)
                continue
            lo, hi = _LIMIT_RANGES[name]
            if isinstance(getattr(defaults.limits, name), float):
                limit_values[name] = _float(label, given[name], lo, hi)
            else:
                limit_values[name] = _int(label, given[name], int(lo), int(hi))

    limits = dataclasses.replace(defaults.limits, **limit_values)
    if limits.session_ttl > limits.session_max_ttl:
        raise SettingsError(
            f"session_ttl ({limits.session_ttl}) must not exceed "
            f"session_max_ttl ({limits.session_max_ttl})"
        )
    if limits.session_lifetime > limits.session_max_lifetime:
        raise SettingsError(
            f"session_lifetime ({limits.session_lifetime}) must not exceed "
            f"session_max_lifetime ({limits.session_max_lifetime})"
        )

    if limits.target_bytes > limits.header_bytes:
        raise SettingsError(
            f"target_bytes ({limits.target_bytes}) must not exceed "
            f"header_bytes ({limits.header_bytes}): the target is part of the head"
        )

    if "max_memory" in given:
        max_memory = _size("--max-memory / RANKD_MAX_MEMORY", given["max_memory"])
    else:
        max_memory = memory.default_limit()

    backend = _choice("--backend / RANKD_BACKEND", given.get("backend", "embedded"), BACKENDS)
    redis_password: str | None = None
    if backend == "redis":
        refused = [n for n in PERSISTENCE_SETTINGS if n in given]
        if refused:
            names = ", ".join(f"--{n.replace('_', '-')} / RANKD_{n.upper()}" for n in refused)
            raise SettingsError(
                f"{names}: the redis backend keeps no local data (its durability is the "
                "cluster's: replicas, AOF, WAIT; see README, Scaling out); drop the setting"
            )
        redis_password = _redis_password(env)
    prefix = str(given.get("redis_prefix", defaults.redis_prefix))
    if not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,32}", prefix):
        raise SettingsError(
            "--redis-prefix / RANKD_REDIS_PREFIX must be 1-32 characters of A-Z a-z 0-9 _ . : -, "
            f"but got {prefix[:40]!r}"
        )
    redis_url = str(given.get("redis_url", defaults.redis_url))
    if not all(
        re.fullmatch(r"(rediss?://)?([^\s,/]+)(/\d*)?", item.strip())
        for item in redis_url.split(",")
        if item.strip()
    ) or not redis_url.strip(","):
        raise SettingsError(
            "--redis-url / RANKD_REDIS_URL takes seed nodes such as redis://10.0.0.5:6379 or "
            "rediss://a:6379,b:6379 (passwords from RANKD_REDIS_PASSWORD[_FILE])"
        )

    wait_replicas = _int(
        "--redis-wait-replicas / RANKD_REDIS_WAIT_REPLICAS",
        given.get("redis_wait_replicas", defaults.redis_wait_replicas),
        0,
        15,
    )
    # 0 would be WAIT's "block forever": a write must always get an answer
    wait_timeout = _int(
        "--redis-wait-timeout-ms / RANKD_REDIS_WAIT_TIMEOUT_MS",
        given.get("redis_wait_timeout_ms", defaults.redis_wait_timeout_ms),
        1,
        60_000,
    )
    wait_aof = _wait_aof(given.get("redis_wait_aof", "0,0"))

    host = str(given.get("host", defaults.host)).strip()
    if not host:
        raise SettingsError("--host / RANKD_HOST must not be empty")
    return Settings(
        host=host,
        port=_int("--port / RANKD_PORT", given.get("port", defaults.port), 0, 65535),
        data_dir=Path(given.get("data_dir", defaults.data_dir)),
        fsync=_choice(  # type: ignore[arg-type]
            "--fsync / RANKD_FSYNC", given.get("fsync", defaults.fsync), FSYNC_POLICIES
        ),
        snapshot_interval=_float(
            "--snapshot-interval / RANKD_SNAPSHOT_INTERVAL",
            given.get("snapshot_interval", defaults.snapshot_interval),
            0.0,
            7 * 24 * 3600.0,
        ),
        api_keys=parse_api_keys(given.get("api_keys", [])),
        limits=limits,
        log_level=_choice(
            "--log-level / RANKD_LOG_LEVEL", given.get("log_level", defaults.log_level), LOG_LEVELS
        ),
        on_bad_data=_choice(  # type: ignore[arg-type]
            "--on-bad-data / RANKD_ON_BAD_DATA",
            given.get("on_bad_data", defaults.on_bad_data),
            BAD_DATA_POLICIES,
        ),
        cors_origins=parse_cors_origins(given.get("cors_origins", [])),
        max_memory=max_memory,
        backend=backend,  # type: ignore[arg-type]
        redis_url=redis_url,
        redis_prefix=prefix,
        redis_username=given.get("redis_username") or None,
        redis_password=redis_password,
        redis_wait_replicas=wait_replicas,
        redis_wait_timeout_ms=wait_timeout,
        redis_wait_aof=wait_aof,
    )


def _wait_aof(raw: object) -> tuple[int, int]:
    """``LOCAL,REPLICAS`` for WAITAOF: LOCAL 0/1 (the primary's own AOF), REPLICAS 0-15."""
    label = "--redis-wait-aof / RANKD_REDIS_WAIT_AOF"
    m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", str(raw))
    if m is None or int(m[1]) > 1 or int(m[2]) > 15:
        raise SettingsError(
            f"{label} takes LOCAL,REPLICAS (LOCAL 0 or 1, REPLICAS 0-15, e.g. 1,1), "
            f"but got {str(raw)[:40]!r}"
        )
    return int(m[1]), int(m[2])


def _redis_password(env: Mapping[str, str]) -> str | None:
    """RANKD_REDIS_PASSWORD, or the first line of the file named by RANKD_REDIS_PASSWORD_FILE."""
    path = env.get("RANKD_REDIS_PASSWORD_FILE")
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SettingsError(
                f"RANKD_REDIS_PASSWORD_FILE cannot be read: {exc.strerror}"
            ) from None
        return lines[0] if lines else None
    return env.get("RANKD_REDIS_PASSWORD") or None
