"""Request parsing and response building shared by the route modules.

Strict and cheap: the body is read straight from the ASGI ``receive`` channel with a hard cap
(a lying or absent Content-Length changes nothing), parsed by one ``orjson.loads`` (which
already refuses NaN, Infinity, lone surrogates and numbers that overflow a double), and checked
against the exact field set of its route -- an unknown field is a 400 naming it, because a
typo such as ``"scroe"`` must not silently become a write without a score.

Query parameters are parsed by hand with fixed grammars (decimal digits for integers, the JSON
number grammar for scores) so ``limit=1e3``, ``limit=+5`` or ``offset=0x10`` are 400s.
"""

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from service.errors import Problem, bad_request
from store.show import show

JSON = "application/json"

_SCORE_GRAMMAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_MAX_QUERY_BYTES = 2048
_ORJSON_NO_MEMORY = "Not enough memory"


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(value), status_code=status, headers=headers, media_type=JSON)


def no_content() -> Response:
    return Response(status_code=204)


async def read_body(request: Request, cap: int) -> bytes:
    """The whole request body, or a 413 as soon as more than ``cap`` bytes arrived."""
    receive = request.receive
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > cap:
            raise _too_large(cap)
        return body
    chunks = [body]
    size = len(body)
    while True:
        if size > cap:
            raise _too_large(cap)
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            break
    if size > cap:
        raise _too_large(cap)
    return b"".join(chunks)


def _too_large(cap: int) -> Problem:
    return Problem(413, "payload-too-large", f"the request body must be at most {cap} bytes")


def parse_json(body: bytes, empty: Any = None) -> Any:
    """Decode a JSON body; ``empty`` stands in for a zero-length body (None: body required)."""
    if not body:
        if empty is None:
            raise Problem(400, "malformed-json", "the request needs a JSON body")
        return empty
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise json_error(exc) from None


def json_error(exc: orjson.JSONDecodeError) -> Exception:
    """The 400 for a body orjson refused -- or a MemoryError (503) when what it ran out of was
    memory: orjson reports an allocation failure as a decode error, and blaming the client's
    JSON for the server's memory would send it to fix a request that was fine.
    """
    if str(exc).startswith(_ORJSON_NO_MEMORY):
        return MemoryError("orjson could not allocate its parse buffer")
    return Problem(400, "malformed-json", f"the body is not valid JSON: {exc}")


def json_object(value: Any, fields: frozenset[str], what: str) -> dict[str, Any]:
    """``value`` as a JSON object holding only ``fields``; else a 400 naming the problem."""
    if type(value) is not dict:
        raise bad_request(f"{what} must be a JSON object, but got {_kind(value)}")
    if not value.keys() <= fields:
        unknown = sorted(value.keys() - fields)
        raise bad_request(
            f"unknown field {show(unknown[0])} in {what}; allowed fields: {sorted(fields)}"
        )
    return value


def _kind(value: Any) -> str:
    return {
        list: "an array",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def query(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters, each at most once and all of them in ``allowed``."""
    raw: bytes = request.scope["query_string"]
    if not raw:
        return {}
    if len(raw) > _MAX_QUERY_BYTES:
        raise bad_request(f"the query string must be at most {_MAX_QUERY_BYTES} bytes")
    params: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name not in allowed:
            allowed_list = sorted(allowed) or "none"
            raise bad_request(f"unknown query parameter {show(name)}; allowed: {allowed_list}")
        if name in params:
            raise bad_request(f"query parameter {show(name)} given more than once")
        params[name] = value
    return params


def int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    # Digits only, and few of them: int() alone would accept " 5", "+5", "5_000" and a
    # 100,000-digit number that takes seconds to convert.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise bad_request(f"{name} must be an integer between {lo} and {hi}, but got {show(raw)}")
    value = int(raw)
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be between {lo} and {hi}, but got {value}")
    return value


def score_param(params: Mapping[str, str], name: str) -> int | float:
    """A score in the JSON number grammar, decoded exactly as a JSON body would be."""
    raw = params.get(name)
    if raw is None:
        raise bad_request(f"query parameter {name!r} is required")
    if len(raw) > 64 or not _SCORE_GRAMMAR.fullmatch(raw):
        raise bad_request(f"{name} must be a JSON number, but got {show(raw)}")
    try:
        value: int | float = orjson.loads(raw)
    except orjson.JSONDecodeError:  # e.g. 1e999: a valid literal that overflows a double
        raise bad_request(f"{name} is out of range: {show(raw)}") from None
    return value


# ``async def name(request, <dependencies>)``: each parameter after ``request`` is one of
# service/runtime.py ``Dependencies`` by name and type, bound once by service/app.py.
Handler = Callable[..., Awaitable[Response]]


class RouteSpec(NamedTuple):
    """One route as a route module declares it; app.py wraps it with auth, readiness,
    error mapping and metrics. ``scope`` None: open to everyone. ``gated``: 503 until ready.
    ``no_store``: every answer says ``Cache-Control: no-store`` (it may carry a credential).
    """

    method: str
    path: str
    handler: Handler
    scope: str | None
    gated: bool = True
    no_store: bool = False
