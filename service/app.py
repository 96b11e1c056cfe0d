"""The Starlette application: routes wrapped once at start-up, and the process lifecycle.

Request path (no middleware of our own: each one would cost every request an extra ASGI hop)::

    uvicorn -> Starlette (ServerError/Exception middleware; CORSMiddleware only when
               --cors-origins lists origins) -> IndexedRouter (one dict lookup)
            -> Route -> _Handle (one Request, the method's wrapper)
            -> endpoint wrapper: browser rules (writes; reads only in protected mode)
                                 -> auth (only if keys exist: a key is judged at once; a
                                    player session or no credential on a public board after
                                    the readiness gate, service/gate.py)
                                 -> readiness gate (/v1 only)
                                 -> handler(request, <deps>) -> problem+json on any exception
                                    (deps: what the handler's signature names, bound once)
                                 -> Cache-Control: no-store (session routes)
                                 -> RouteStats.observe(status, seconds)

Everything a request would otherwise look up (the handler's dependencies, scope, route stats,
the route template for log lines) is bound into the wrapper's closure when the app is built.
A handler names what it uses after ``request`` (``boards: Boards``, ``limits: ServiceLimits``;
the list is service/runtime.py ``Dependencies``); ``handler_dependencies`` checks the names and
annotations once, and ``_bound`` closes over the objects, passed by position.

Lifecycle (lifespan)::

    start-up   yield at once, so /healthz answers while the backend starts in the background
    background hub.start() (it listens to the change feed) -> backend.start(): the embedded
               backend recovers in a worker thread, starts persistence, the session purge and
               the memory sampler, then is ready (from here /readyz is 200 and /v1 routes stop
               answering 503)
    shutdown   (uvicorn drained connections after SIGTERM/SIGINT) hub.stop(), backend.stop()
               -> final snapshot
"""

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import get_type_hints

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from service import routes_admin, routes_boards, routes_members, routes_sessions
from service.access import AUTH
from service.backend import offline
from service.backend.api import Backend
from service.backend.embedded import EmbeddedBackend
from service.browser import (
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    CORS_METHODS,
    BrowserRules,
)
from service.errors import Problem, http_exception, response_for, server_error
from service.gate import Gate
from service.http import Handler, RouteSpec
from service.live import live_page
from service.router import IndexedRouter
from service.runtime import STARTED, Dependencies, Runtime
from service.settings import Settings
from service.ws import ws_endpoint
from store.clock import Clock

log = logging.getLogger("rankd")

Endpoint = Callable[[Request], Awaitable[Response]]
Binder = Callable[[], bool]

SPECS: tuple[RouteSpec, ...] = (
    *routes_boards.ROUTES,
    *routes_members.ROUTES,
    *routes_sessions.ROUTES,
    *routes_admin.ROUTES,
)

_NO_STORE = (b"cache-control", b"no-store")


def handler_dependencies(spec: RouteSpec) -> tuple[str, ...]:
    """The names a route's handler asks for after ``request``, checked against
    runtime.Dependencies once, when the route table is built (a wrong name, type or kind of
    parameter is a TypeError at start-up, never a failed request)."""
    handler = spec.handler
    where = f"{handler.__module__}.{handler.__qualname__}"
    params = list(inspect.signature(handler).parameters.values())
    if not params or params[0].name != "request":
        raise TypeError(f"{where}: the first parameter must be 'request'")
    hints = get_type_hints(handler)
    known = get_type_hints(Dependencies)
    names = []
    for param in params[1:]:
        name = param.name
        if name not in known:
            raise TypeError(f"{where} asks for {name!r}; a handler may ask for {sorted(known)}")
        if param.kind is not param.POSITIONAL_OR_KEYWORD or param.default is not param.empty:
            raise TypeError(f"{where}: {name!r} must be a plain parameter (bound by position)")
        if hints.get(name) != known[name]:
            raise TypeError(f"{where}: {name!r} must be annotated {known[name]!r}")
        if name in STARTED and not spec.gated:
            raise TypeError(f"{where}: an ungated route answers before {name!r} exists")
        names.append(name)
    return tuple(names)


def _wrap(rt: Runtime, spec: RouteSpec, rules: BrowserRules) -> tuple[Endpoint, Binder]:
    """The route's endpoint and the function that binds its handler's dependencies (once:
    build_routes calls it at once, or when the backend has started if it needs the backend's
    parts first). The endpoint calls the bound handler: no lookup, no introspection."""
    auth = rt.auth
    backend = rt.backend
    handler = spec.handler
    names = handler_dependencies(spec)
    call: Endpoint = handler
    stats = rt.metrics.route(spec.method, spec.path)
    # None: no keys (protected mode, open) or an open route; else keys, players, public boards.
    gate = (
        Gate(auth, rt.players, spec, rt.settings.limits.body_bytes)
        if auth is not None and spec.scope is not None
        else None
    )
    gated = spec.gated
    where = f"{spec.method} {spec.path}"
    clock = time.perf_counter
    # Bound once: writes always pass the browser rules; reads only need the Host rule, which
    # exists only in protected mode.
    if spec.method not in ("GET", "HEAD"):
        browser = rules.check_write
    elif rules.protected:
        browser = rules.check_read
    else:
        browser = None
    no_store = spec.no_store
    # Protected mode (no keys): a route that would need one is served with no credential.
    anonymous = auth is None and spec.scope is not None

    def bind() -> bool:
        """Bind the dependencies if they all exist yet; whether they did."""
        nonlocal call
        if not all(rt.has(name) for name in names):
            return False
        call = _bound(handler, tuple(rt.dependency(name) for name in names))
        if gate is not None:
            gate.call = call
        return True

    async def endpoint(request: Request) -> Response:
        start = clock()
        try:
            if browser is not None:
                browser(request.scope)
            if anonymous:
                request.scope[AUTH] = "anonymous"
            pending = gate.check(request) if gate is not None else None
            if gated and not backend.ready:
                # embedded: still recovering; redis: the cluster is unreachable (health())
                reason = backend.health()["reason"] or "recovering data from disk"
                raise Problem(503, "not-ready", f"not ready: {reason}; retry shortly")
            if pending is None:
                response = await call(request)
            else:
                response = await gate.serve(pending, request)  # type: ignore[union-attr]
        except Exception as exc:
            if isinstance(exc, MemoryError):
                backend.on_memory_error()  # frees the reserve this answer is built with
            response = response_for(exc, where)
        if no_store:
            # Errors too: nothing a session route answers belongs in a shared cache.
            response.raw_headers.append(_NO_STORE)
        stats.observe(response.status_code, clock() - start)
        return response

    return endpoint, bind


def _bound(handler: Handler, deps: tuple[object, ...]) -> Endpoint:
    """``handler`` with ``deps`` after the request: a closure per arity, because a call with
    ``*deps`` costs ~150 ns more per request than the positional one (CALL_FUNCTION_EX; the
    closure's own call is what ``handler(rt, request)`` cost before, loadtest/RESULTS.md)."""
    if not deps:
        return handler
    if len(deps) == 1:
        (a,) = deps
        return lambda request: handler(request, a)
    if len(deps) == 2:
        a, b = deps
        return lambda request: handler(request, a, b)
    if len(deps) == 3:
        a, b, c = deps
        return lambda request: handler(request, a, b, c)
    if len(deps) == 4:
        a, b, c, d = deps
        return lambda request: handler(request, a, b, c, d)
    return lambda request: handler(request, *deps)


class _Handle:
    """The ASGI app of one path: one Request, the method's wrapper, the response.

    Starlette's ``request_response`` would add a per-route exception-handling layer; every
    wrapper already turns exceptions into problem+json, and the ExceptionMiddleware around the
    router does the same for send errors, so the layer only cost each request two closures.
    One object per path keeps a single Route per path, so a wrong method gets Starlette's 405
    whose Allow lists every method.
    """

    __slots__ = ("by_method",)

    def __init__(self, by_method: dict[str, Endpoint]) -> None:
        self.by_method = by_method

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.by_method[scope["method"]](Request(scope, receive, send))
        await response(scope, receive, send)


def browser_rules(settings: Settings) -> BrowserRules:
    return BrowserRules(settings.cors_origins, protected=not settings.auth_enabled)


def build_routes(
    rt: Runtime, specs: tuple[RouteSpec, ...] = SPECS, unbound: list[Binder] | None = None
) -> list[BaseRoute]:
    """The route table. Each handler's dependencies are bound here; one that needs a part
    the backend has only once started goes to ``unbound`` (bound by the lifespan right after
    ``backend.start()``, before any gated request can pass the readiness check)."""
    rules = browser_rules(rt.settings)
    by_path: dict[str, dict[str, Endpoint]] = {}
    for spec in specs:
        endpoint, bind = _wrap(rt, spec, rules)
        if not bind():
            if unbound is None:
                raise RuntimeError(f"{spec.method} {spec.path}: the backend has not started")
            unbound.append(bind)
        by_path.setdefault(spec.path, {})[spec.method] = endpoint
    routes: list[BaseRoute] = []
    for path, by_method in by_path.items():
        if "GET" in by_method:
            by_method["HEAD"] = by_method["GET"]
        routes.append(Route(path, _Handle(by_method), methods=list(by_method), name=path))
    return routes


def _backend(settings: Settings, clock: Clock | None) -> Backend:
    if settings.backend == "redis":
        # Imported only when chosen: the embedded service needs no redis client installed.
        from service.backend.redis.backend import RedisBackend

        return RedisBackend(settings, clock)
    return EmbeddedBackend(settings, clock)


def create_app(
    settings: Settings, clock: Clock | None = None, backend: Backend | None = None
) -> Starlette:
    rt = Runtime(settings, backend or _backend(settings, clock))
    unbound: list[Binder] = []
    routes = build_routes(rt, unbound=unbound)
    routes += [WebSocketRoute("/v1/ws", ws_endpoint), Route("/", live_page)]
    middleware = []
    if settings.cors_origins:
        # Only when asked for: it wraps every request (a Headers object, a send wrapper), and
        # without allowed origins there is no preflight to answer.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=sorted(settings.cors_origins),
                allow_methods=CORS_METHODS,
                allow_headers=CORS_ALLOW_HEADERS,
                expose_headers=CORS_EXPOSE_HEADERS,
                # A listed page on a public origin calling a rankd on loopback or a LAN is what
                # the operator asked for; Chrome's Private Network Access preflight says so.
                allow_private_network=True,
            )
        )
    app = Starlette(
        middleware=middleware,
        exception_handlers={HTTPException: _unmatched(rt), Exception: server_error},
    )
    app.router = IndexedRouter(routes, lifespan=_lifespan)
    app.state.rankd = rt
    app.state.unbound = unbound  # bound by _start once the backend has its parts
    app.state.specs = SPECS  # what GET /openapi.json documents (service/openapi.py)
    app.state.browser = browser_rules(settings)  # for the WebSocket handshake
    return app


def _unmatched(rt: Runtime) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        response = await http_exception(request, exc)
        # No template matched, so all such requests share one label (never the raw path).
        rt.metrics.route(request.method, "unmatched").observe(response.status_code, 0.0)
        return response

    return handler


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    rt: Runtime = app.state.rankd
    started: list[str] = []
    starter = asyncio.create_task(_start(rt, started, app.state.unbound))
    try:
        yield
    finally:
        await _stop(rt, starter, started)


async def _start(rt: Runtime, started: list[str], unbound: list[Binder]) -> None:
    backend = rt.backend
    try:
        await rt.hub.start()
        started.append("hub")
        began = time.perf_counter()
        await backend.start()
        # No await between the backend turning ready and this (neither backend's start()
        # awaits after setting ready), so no gated request can reach an unbound handler.
        for bind in unbound:
            if not bind():
                raise RuntimeError("the backend started without its boards and sessions")
        unbound.clear()
        log.info("ready in %.3f s (epoch %s)", time.perf_counter() - began, backend.epoch)
    except Exception as exc:
        if backend.fatal is None:
            backend.fatal = f"{type(exc).__name__}: {exc}"
        # A described failure (damage, an I/O error, a locked directory) needs no traceback.
        trace = None if offline.expected_failure(exc) else exc
        log.error("start-up failed, shutting down: %s", backend.fatal, exc_info=trace)
        rt.request_shutdown()


async def _stop(rt: Runtime, starter: asyncio.Task[None], started: list[str]) -> None:
    backend = rt.backend
    backend.ready = False
    finished = starter.done()
    if not finished:
        # Still recovering: the worker thread cannot be interrupted, and a snapshot of a
        # half-loaded keyspace would destroy data, so nothing below may run for it.
        starter.cancel()
        with suppress(asyncio.CancelledError):
            await starter
    if "hub" in started:
        try:
            await rt.hub.stop()
        except Exception:
            log.exception("hub did not stop cleanly")
    if finished:
        # Stops whatever the backend did start (a start-up that failed half-way included).
        await backend.stop()  # final snapshot: failures must surface, not be swallowed
