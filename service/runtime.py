"""The process's live objects, built once per app: settings, the backend, the hub, metrics, auth.

``Runtime`` lives on ``app.state.rankd``. It owns no data: boards and sessions live behind the
backend protocols (service/backend/api.py), which are all a route, the hub or the metrics see.
It holds no request logic.
"""

from collections.abc import Callable

from service.auth import Auth
from service.backend.api import Backend
from service.hub import Hub
from service.metrics import Metrics
from service.players import Players
from service.settings import Settings


def _no_shutdown() -> None:
    pass


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
