"""The process's live objects, built once per app: settings, the backend, the hub, metrics, auth.

``Runtime`` lives on ``app.state.rankd``. It owns no data: boards and sessions live behind the
backend protocols (service/backend/api.py), which are all a route, the hub or the metrics see.
It holds no request logic.

Route handlers never see it (STYLE.md rule 15): a handler names what it uses as parameters
after ``request`` -- ``post_score(request, limits, auth, boards, metrics)`` -- each name one of
``Dependencies`` below with exactly that annotation, and service/app.py binds them once per
route when the route table is built (``boards`` and ``sessions`` once the backend has them:
the redis backend creates them when it connects). Nothing is looked up per request.
"""

from collections.abc import Callable
from typing import TypedDict

from service.auth import Auth
from service.backend.api import Backend, Boards, Sessions
from service.hub import Hub
from service.metrics import Metrics
from service.players import Players
from service.settings import ServiceLimits, Settings


def _no_shutdown() -> None:
    pass


class Dependencies(TypedDict):
    """What a route handler may ask for, by parameter name and type (checked at build time)."""

    settings: Settings
    limits: ServiceLimits  # settings.limits: the request body cap, page and radius caps
    auth: Auth | None  # None: no keys configured (protected mode)
    backend: Backend  # lifecycle: ready, health, epoch, snapshot
    metrics: Metrics
    players: Players
    boards: Boards  # backend.boards
    sessions: Sessions  # backend.sessions


# The parts of the backend that exist only once it has started (RedisBackend connects first);
# a route that answers before readiness (``gated=False``) may not ask for them.
STARTED = frozenset({"boards", "sessions"})


class Runtime:
    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        # None: no keys configured (protected mode, loopback only) -- requests need none.
        self.auth: Auth | None = Auth(settings.api_keys) if settings.api_keys else None
        self.hub = Hub(backend, settings.limits)
        self.metrics = Metrics(backend, self.hub)
        # Player sessions and public boards; its rate limiter is shared by HTTP and /v1/ws.
        self.players = Players(backend)
        # The CLI points this at uvicorn's graceful exit, so a failed start-up stops the
        # process instead of leaving it alive and never ready.
        self.request_shutdown: Callable[[], None] = _no_shutdown

    def has(self, name: str) -> bool:
        """Whether ``name`` can be handed out now (the backend's parts: once it has them)."""
        if name in STARTED:
            try:
                getattr(self.backend, name)
            except AttributeError:
                return False
        return True

    def dependency(self, name: str) -> object:
        """The object a handler's parameter ``name`` is bound to (a ``Dependencies`` key)."""
        if name == "settings":
            return self.settings
        if name == "limits":
            return self.settings.limits
        if name == "auth":
            return self.auth
        if name == "backend":
            return self.backend
        if name == "metrics":
            return self.metrics
        if name == "players":
            return self.players
        if name == "boards":
            return self.backend.boards
        if name == "sessions":
            return self.backend.sessions
        raise KeyError(name)
