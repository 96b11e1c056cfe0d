"""IndexedRouter against Starlette's own first-match rule, and the edges it hands back to it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Match, Route, WebSocketRoute

from service.app import create_app
from service.router import IndexedRouter
from service.settings import Settings


def _app(tmp_path: Path):  # type: ignore[no-untyped-def]
    app = create_app(dataclasses.replace(Settings(), data_dir=tmp_path))
    app.state.rankd.backend.ready = (
        True  # no lifespan here: the routes, not recovery, are under test
    )
    return app


def _starlette(routes: list[Route], path: str, method: str) -> tuple[Route | None, Match, dict]:
    """What Starlette's Router.app picks: the first FULL match, else the first PARTIAL."""
    scope = {"type": "http", "path": path, "root_path": "", "method": method}
    partial: tuple[Route | None, Match, dict] = (None, Match.NONE, {})
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route, match, child["path_params"]
        if match is Match.PARTIAL and partial[0] is None:
            partial = (route, match, child["path_params"])
    return partial


_SEGMENTS = st.sampled_from(
    ["", "v1", "boards", "members", "around", "top", "rank", "scores", "scores:batch",
     "sessions", "touch", "rotate", "admin", "snapshot", "healthz", "metrics", "openapi.json",
     "b", "player:1", "a b", "x\n", "%2F", "\u00e9", "{member}"]
)  # fmt: skip


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> IndexedRouter:
    router = _app(tmp_path_factory.mktemp("router")).router
    assert isinstance(router, IndexedRouter)
    return router


# Real templates with each segment kept or replaced, so most draws land near a route.
_TEMPLATES = [r.path.split("/")[1:] for r in create_app(Settings()).routes if isinstance(r, Route)]
_NEAR = st.sampled_from(_TEMPLATES).flatmap(
    lambda t: st.tuples(*(st.one_of(st.just(s), _SEGMENTS) for s in t)).map(list)
)


@settings(max_examples=3000, deadline=None)
@given(
    segments=st.one_of(_NEAR, st.lists(_SEGMENTS, max_size=7)),
    method=st.sampled_from(["GET", "POST", "PUT"]),
)
def test_lookup_agrees_with_starlettes_route_order(router, segments, method) -> None:
    routes = [r for r in router.routes if isinstance(r, Route)]
    path = "/" + "/".join(segments)
    expected, match, params = _starlette(routes, path, method)
    hit = router.lookup(path)
    if hit is None:
        assert expected is None, path
    else:
        assert (hit[0], hit[1]) == (expected, params), path
        assert match is (Match.FULL if method in (expected.methods or ()) else Match.PARTIAL)  # type: ignore[union-attr]


def test_overlapping_or_unsupported_templates_are_refused_at_start_up() -> None:
    async def h(request):  # type: ignore[no-untyped-def]
        raise AssertionError

    with pytest.raises(ValueError, match="can match the same path"):
        IndexedRouter([Route("/a/{x}", h), Route("/a/b", h)])
    with pytest.raises(ValueError, match="only"):
        IndexedRouter([Route("/a/{x:int}", h)])
    with pytest.raises(ValueError, match="whole-segment"):
        IndexedRouter([Route("/a/x{y}", h)])
    IndexedRouter([Route("/a/{x}", h), WebSocketRoute("/a/{x}", h)])  # never both on http


def test_edges_keep_starlettes_answers(tmp_path: Path) -> None:
    app = _app(tmp_path)
    rt = app.state.rankd
    rt.backend._keyspace.board_for_write("bc").write("m 1", 5)

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            return [
                await c.put("/v1/boards/bc/members/x"),
                await c.get("/v1/nowhere"),
                await c.head("/v1/boards/bc/top"),
                await c.get("/v1/boards/", follow_redirects=False),
                await c.get("/v1/boards/bc/members/m%2F1"),
                await c.get("/v1/boards/bc/members/m%201/around"),
                await c.get("/v1/boards/bc/members//around"),
            ]

    not_allowed, unknown, head, slash, slash_param, around, empty = asyncio.run(calls())
    assert not_allowed.status_code == 405
    assert not_allowed.headers["content-type"] == "application/problem+json"
    assert set(not_allowed.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert sum(rt.metrics.route("GET", "unmatched").by_status[404].counts) == 4  # the four 404s
    assert head.status_code == 200 and head.content == b""
    # DESIGN: a trailing slash is a 404 problem, not Starlette's 307 to the slash-less path.
    assert slash.status_code == 404 and "location" not in slash.headers
    assert slash.headers["content-type"] == "application/problem+json"
    # A decoded "/" splits the segment, as in Starlette: no route has that many segments.
    assert slash_param.status_code == 404
    assert around.status_code == 200 and around.json()["entries"][0]["member"] == "m 1"
    assert empty.status_code == 404  # a parameter is never empty ([^/]+)


@pytest.mark.parametrize(
    ("path", "root"),
    [
        ("/v1/boards", ""),
        ("/api/v1/boards", "/api"),
        ("/api", "/api"),
        ("/apix", "/api"),
        ("/other", "/api"),
    ],
)
def test_route_path_matches_starlettes_private_helper(path: str, root: str) -> None:
    # router.route_path is a copy of starlette._utils.get_route_path, so Starlette's fallback
    # routing and the index agree on what a path is; this fails if Starlette changes its rule.
    from starlette._utils import get_route_path

    from service.router import route_path

    scope = {"type": "http", "path": path, "root_path": root}
    assert route_path(scope) == get_route_path(scope)
