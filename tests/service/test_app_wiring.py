"""service/app.py's wiring of route handlers (STYLE.md rule 15): a handler names what it uses
after ``request``; the names and annotations are checked once, when the route table is built,
and the endpoint hands over the runtime's own objects (in-process, no server)."""

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from service.app import SPECS, Binder, build_routes, handler_dependencies
from service.auth import READ
from service.backend.api import Boards, Sessions
from service.backend.embedded import EmbeddedBackend
from service.backend.redis.backend import RedisBackend
from service.http import RouteSpec
from service.metrics import Metrics
from service.routes_boards import post_score
from service.runtime import STARTED, Runtime
from service.settings import ServiceLimits, Settings


def test_every_route_names_known_dependencies_and_post_score_only_what_it_uses() -> None:
    for spec in SPECS:
        names = handler_dependencies(spec)
        if not spec.gated:
            assert not STARTED & set(names), spec.path
    score = next(s for s in SPECS if s.handler is post_score)
    assert handler_dependencies(score) == ("limits", "auth", "boards", "metrics")


async def _unknown(request: Request, keyspace: Boards) -> Response:
    raise AssertionError


async def _mistyped(request: Request, boards: Sessions) -> Response:
    raise AssertionError


async def _request_last(boards: Boards, request: Request) -> Response:
    raise AssertionError


async def _keyword_only(request: Request, *, boards: Boards) -> Response:
    raise AssertionError


async def _early_boards(request: Request, boards: Boards) -> Response:
    raise AssertionError


@pytest.mark.parametrize(
    ("handler", "gated", "message"),
    [
        (_unknown, True, "asks for 'keyspace'"),
        (_mistyped, True, "'boards' must be annotated"),
        (_request_last, True, "the first parameter must be 'request'"),
        (_keyword_only, True, "must be a plain parameter"),
        (_early_boards, False, "an ungated route answers before 'boards' exists"),
    ],
)
def test_a_wrong_dependency_fails_at_build_time(tmp_path, handler, gated, message) -> None:
    settings = Settings(data_dir=tmp_path)
    rt = Runtime(settings, EmbeddedBackend(settings))
    with pytest.raises(TypeError, match=message):
        build_routes(rt, (RouteSpec("GET", "/v1/x", handler, None, gated=gated),))


def test_the_handler_gets_the_runtimes_own_objects(tmp_path) -> None:
    got: list[object] = []

    async def handler(
        request: Request, boards: Boards, limits: ServiceLimits, metrics: Metrics
    ) -> Response:
        got.extend((boards, limits, metrics))
        return Response(b"", 204)

    settings = Settings(data_dir=tmp_path)
    rt = Runtime(settings, EmbeddedBackend(settings))
    rt.backend.ready = True
    app = Starlette(routes=build_routes(rt, (RouteSpec("GET", "/v1/x", handler, READ),)))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            return await c.get("/v1/x")

    assert asyncio.run(call()).status_code == 204
    assert got[0] is rt.backend.boards
    assert got[1] is settings.limits
    assert got[2] is rt.metrics


def test_boards_and_sessions_of_an_unstarted_backend_are_bound_after_start(tmp_path) -> None:
    # The redis backend has its boards and sessions only once connected (never here).
    settings = Settings(data_dir=tmp_path, backend="redis")
    rt = Runtime(settings, RedisBackend(settings))
    with pytest.raises(RuntimeError, match="has not started"):
        build_routes(rt)
    unbound: list[Binder] = []
    build_routes(rt, unbound=unbound)
    needing = [s for s in SPECS if STARTED & set(handler_dependencies(s))]
    assert len(unbound) == len(needing) > 0
