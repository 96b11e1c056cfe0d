"""The process's live objects, built once per app and shared by every route and task.

``Runtime`` lives on ``app.state.rankd``. It owns the store objects (the keyspace and the
session store), the persistence engine and the WebSocket hub once they exist, and the facts
the edge needs: whether recovery has finished (``ready``) and the ``epoch`` that tells a
WebSocket client the process restarted. It holds no request logic.

Persistence and the hub are set by the app's start-up (they need a running loop); they are
imported for typing only, because both modules import this one.
"""

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.memory import MemoryGuard
from service.metrics import Metrics
from service.settings import Settings
from store.clock import Clock, SystemClock
from store.keyspace import Keyspace
from store.sessions import SessionStore

if TYPE_CHECKING:
    from service.hub import Hub
    from service.persistence import Persistence


def _no_shutdown() -> None:
    pass


class Runtime:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        limits = settings.limits
        self.keyspace = Keyspace(limits.store())
        self.sessions = SessionStore(
            self.clock,
            default_ttl=limits.session_ttl,
            max_ttl=limits.session_max_ttl,
            default_max_lifetime=limits.session_lifetime,
            max_lifetime_limit=limits.session_max_lifetime,
            max_data_bytes=limits.session_data_bytes,
            max_sessions_per_user=limits.sessions_per_user,
            max_anonymous_sessions=limits.max_anonymous_sessions,
        )
        self.memory = MemoryGuard(settings.max_memory or 0)
        self.memory.on_corrupt = self._memory_corrupt
        self.persistence: Persistence | None = None
        self.hub: Hub | None = None
        # Changes on every start, so a WebSocket client can tell a restart from a quiet board.
        self.epoch = secrets.token_hex(8)
        self.ready = False
        self.started_at = self.clock.now()
        self.recovery: dict[str, Any] | None = None
        # Set when start-up failed for good (e.g. corrupt data); the CLI exits non-zero.
        self.fatal: str | None = None
        # The CLI points this at uvicorn's graceful exit, so a failed recovery stops the
        # process instead of leaving it alive and never ready.
        self.request_shutdown: Callable[[], None] = _no_shutdown
        self.metrics = Metrics(self)

    def _memory_corrupt(self) -> None:
        # Not ready: /readyz and every gated route answer 503, so an orchestrator restarts us.
        self.ready = False
        self.fatal = "in-memory data failed verification after an allocation failure"
