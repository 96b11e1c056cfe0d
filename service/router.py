"""A Starlette Router that finds an HTTP route with one dict lookup instead of a regex per route.

Starlette's Router tries its routes in order, one regex match each (about 1.2 µs per route
passed over), so the last of rankd's ~20 templates paid ~25 µs before any work was done. This
router indexes every ``Route`` once, at start-up, by the path split on ``/``::

    "/v1/boards/{board}/members/{member}"  ->  6 segments, parameters at positions 3 and 5
    table[(6, (3, 5))][("", "v1", "boards", "members")] = route

A request path is split the same way; for each parameter layout known for its segment count
(rankd has at most two), the literal segments form the key. A hit fills ``path_params``,
``endpoint`` and ``route`` in the scope exactly as ``Route.matches`` would: a ``{name}``
parameter is the (already percent-decoded) segment as is, and never empty -- Starlette's
``[^/]+``.

Anything the index does not answer -- no hit, a method the route does not allow (405 with its
Allow header), WebSocket and lifespan scopes -- goes to Starlette's own ``Router.app``, so the
slow path behaves exactly as before, except that a trailing slash is a 404 like any other
unknown path (DESIGN: one URL per resource). Starlette would answer 307 to the slash-less
path, which hides the client's bug behind a second round trip and makes it send its body twice.
Templates that could both match one path are refused at start-up: the index has no order, so
it could not reproduce Starlette's first-match rule.
"""

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from starlette.routing import BaseRoute, Route, Router, WebSocketRoute
from starlette.types import Lifespan, Receive, Scope, Send

# Positions of the parameters in a template; the remaining positions are literal.
Layout = tuple[int, ...]


def route_path(scope: Scope) -> str:
    """The path the routes see: ``path`` less a mounted ``root_path`` prefix.

    What Starlette's Router matches on (``starlette._utils.get_route_path``, 0.37-1.x), written
    out here because a private function may change in any release; tests/service/test_router.py
    checks the two agree while Starlette still has it.
    """
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def _parse(path: str) -> tuple[list[str], Layout, list[str]]:
    """The segments, parameter positions and parameter names of a route template."""
    segments = path.split("/")
    positions: list[int] = []
    names: list[str] = []
    for i, segment in enumerate(segments):
        if segment.startswith("{") and segment.endswith("}"):
            name, _, convertor = segment[1:-1].partition(":")
            if convertor not in ("", "str") or not name.isidentifier():
                raise ValueError(
                    f"the indexed router takes only {{name}} segments, but got {path!r}"
                )
            positions.append(i)
            names.append(name)
        elif "{" in segment or "}" in segment:
            raise ValueError(
                f"the indexed router takes only whole-segment parameters, but got {path!r}"
            )
    return segments, tuple(positions), names


def _overlap(a: list[str], a_params: Layout, b: list[str], b_params: Layout) -> bool:
    if len(a) != len(b):
        return False
    params = set(a_params) | set(b_params)
    return all(i in params or a[i] == b[i] for i in range(len(a)))


class _Group:
    """The templates of one segment count and one parameter layout."""

    __slots__ = ("key", "names", "params", "table")

    def __init__(self, size: int, params: Layout, names: list[str]) -> None:
        # itemgetter returns a bare string for one position; the keys are built with the same
        # getter, so they agree either way.
        self.key = itemgetter(*(i for i in range(size) if i not in params))
        self.params = params
        self.names = names
        self.table: dict[Any, Route] = {}


class IndexedRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], lifespan: Lifespan[Any] | None = None) -> None:
        super().__init__(routes, redirect_slashes=False, lifespan=lifespan)
        self._index: dict[int, list[_Group]] = {}
        seen: list[tuple[list[str], Layout, str]] = []
        for route in self.routes:
            if isinstance(route, WebSocketRoute):
                continue  # never matches an HTTP scope
            if not isinstance(route, Route):
                raise ValueError(
                    f"the indexed router takes Route and WebSocketRoute, but got {route!r}"
                )
            segments, layout, names = _parse(route.path)
            for other, other_layout, other_path in seen:
                if _overlap(segments, layout, other, other_layout):
                    raise ValueError(f"{route.path!r} and {other_path!r} can match the same path")
            seen.append((segments, layout, route.path))
            groups = self._index.setdefault(len(segments), [])
            group = next((g for g in groups if g.params == layout and g.names == names), None)
            if group is None:
                group = _Group(len(segments), layout, names)
                groups.append(group)
            group.table[group.key(segments)] = route

    def lookup(self, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route whose template matches ``path`` and its parameters, or None."""
        segments = path.split("/")
        for group in self._index.get(len(segments), ()):
            route = group.table.get(group.key(segments))
            if route is not None:
                values = [segments[i] for i in group.params]
                if all(values):
                    return route, dict(zip(group.names, values, strict=True))
        return None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hit = self.lookup(route_path(scope))
            if hit is not None:
                route, params = hit
                if route.methods is None or scope["method"] in route.methods:
                    if "router" not in scope:
                        scope["router"] = self
                    scope["route"] = route
                    scope["endpoint"] = route.endpoint
                    outer = scope.get("path_params")
                    scope["path_params"] = {**outer, **params} if outer else params
                    await route.app(scope, receive, send)
                    return
        await super().app(scope, receive, send)
