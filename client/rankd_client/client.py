"""``Client`` (blocking) and ``AsyncClient`` (asyncio): two thin transports over httpx.

Each sends a ``calls.Call`` with the retry policy and turns the answer into its typed result or
an ``errors`` exception; everything route-specific lives in ``calls``. The route methods are
those call builders bound to a transport by each class's ``_bind``, so one definition serves
both clients with the same signature, docstring and result type::

    client.top("laps", limit=3)        ==  client.send(calls.top("laps", limit=3))
    await aclient.top("laps", limit=3) ==  await aclient.send(calls.top("laps", limit=3))

``send`` is public: it sends any ``Call``, including ones built by hand for routes this version
does not wrap.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar, overload

import httpx

from rankd_client import calls
from rankd_client.calls import NO_BODY, Call
from rankd_client.errors import (
    NotFound,
    RankdError,
    TransportError,
    from_response,
    from_transport,
)
from rankd_client.retry import Retry
from rankd_client.subscribe import Subscription
from rankd_client.types import RankFrame, TopFrame

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "rankd-client/0.1"


def authorization(api_key: str | None, session: str | None) -> str | None:
    """The Authorization header: ``Bearer <key>`` (a server) or ``Session <id>`` (a player's
    game client, holding the session its game backend created for it)."""
    if api_key is not None and session is not None:
        raise ValueError("give api_key (a server) or session (a player), not both")
    if api_key is not None:
        return f"Bearer {api_key}"
    return None if session is None else f"Session {session}"


def _headers(auth: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    return headers


def _failure(call: Call[Any], response: httpx.Response, lost: bool) -> RankdError | None:
    """The error an answer means, or None when it is the call's success."""
    if response.is_success:
        return None
    error = from_response(response)
    if lost and call.gone_is_done and isinstance(error, NotFound) and type(error) is not NotFound:
        return None  # our lost first try deleted it (a bare NotFound is a wrong route: raise)
    return error


def _lost(error: RankdError) -> bool:
    return isinstance(error, TransportError) and error.maybe_applied


def _request_args(call: Call[Any]) -> dict[str, Any]:
    args: dict[str, Any] = {"params": call.params or None, "headers": call.headers or None}
    if call.body is not NO_BODY:
        args["json"] = call.body  # httpx sets Content-Type: application/json (415 otherwise)
    return args


class Client:
    """Blocking client. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        session: str | None = None,
        timeout: float = 10.0,
        retry: Retry | None = None,
        trust_env: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self.authorization = authorization(api_key, session)
        self._http = httpx.Client(
            base_url=base_url,
            headers=_headers(self.authorization),
            timeout=timeout,
            trust_env=trust_env,
            transport=transport,
        )

    def send(self, call: Call[T]) -> T:
        attempt, lost = 0, False
        while True:
            error: RankdError | None
            try:
                response = self._http.request(call.method, call.path, **_request_args(call))
            except httpx.TransportError as exc:
                error = from_transport(exc)
            else:
                error = _failure(call, response, lost)
                if error is None:
                    return call.decode(response)
            lost = lost or _lost(error)
            delay = self.retry.delay(call.idempotent, attempt, error)
            if delay is None:
                raise error
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _bind(fn: Callable[P, Call[T]]) -> Callable[Concatenate[Client, P], T]:
        @functools.wraps(fn)
        def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return self.send(fn(*args, **kwargs))

        return method

    put_board = _bind(calls.put_board)
    get_board = _bind(calls.get_board)
    list_boards = _bind(calls.list_boards)
    drop_board = _bind(calls.drop_board)
    post_score = _bind(calls.post_score)
    post_batch = _bind(calls.post_batch)
    top = _bind(calls.top)
    member = _bind(calls.member)
    around = _bind(calls.around)
    rank_for_score = _bind(calls.rank_for_score)
    delete_member = _bind(calls.delete_member)
    create_session = _bind(calls.create_session)
    create_session_with_id = _bind(calls.create_session_with_id)
    get_session = _bind(calls.get_session)
    patch_session = _bind(calls.patch_session)
    replace_session = _bind(calls.replace_session)
    touch_session = _bind(calls.touch_session)
    rotate_session = _bind(calls.rotate_session)
    delete_session = _bind(calls.delete_session)
    user_sessions = _bind(calls.user_sessions)
    revoke_user_sessions = _bind(calls.revoke_user_sessions)
    snapshot = _bind(calls.snapshot)
    health = _bind(calls.health)
    ready = _bind(calls.ready)


class AsyncClient:
    """asyncio client: every route method is a coroutine; ``subscribe`` streams live frames.

    Use as an async context manager, or call ``aclose()`` (which also ends open subscriptions).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        session: str | None = None,
        timeout: float = 10.0,
        retry: Retry | None = None,
        trust_env: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self.base_url = base_url
        self.api_key = api_key
        self.authorization = authorization(api_key, session)
        self.trust_env = trust_env
        self._subscriptions: set[Subscription[Any]] = set()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_headers(self.authorization),
            timeout=timeout,
            trust_env=trust_env,
            transport=transport,
        )

    async def send(self, call: Call[T]) -> T:
        attempt, lost = 0, False
        while True:
            error: RankdError | None
            try:
                response = await self._http.request(call.method, call.path, **_request_args(call))
            except httpx.TransportError as exc:
                error = from_transport(exc)
            else:
                error = _failure(call, response, lost)
                if error is None:
                    return call.decode(response)
            lost = lost or _lost(error)
            delay = self.retry.delay(call.idempotent, attempt, error)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    @overload
    def subscribe(
        self, board: str, *, top: int, reconnect: Retry | None = None
    ) -> Subscription[TopFrame]: ...

    @overload
    def subscribe(
        self, board: str, *, member: str, reconnect: Retry | None = None
    ) -> Subscription[RankFrame]: ...

    def subscribe(
        self,
        board: str,
        *,
        top: int | None = None,
        member: str | None = None,
        reconnect: Retry | None = None,
    ) -> Subscription[Any]:
        """Live frames of a board's top N, or of one member's rank and score.

        ``reconnect`` (default: forever, backoff 0.1 s doubling to 10 s) paces reconnection
        after the connection is lost; see ``rankd_client.subscribe``.
        """
        if (top is None) == (member is None):
            raise ValueError("subscribe needs exactly one of top= or member=")
        request: dict[str, Any] = {"op": "subscribe", "id": "s", "board": board}
        request.update({"top": top} if top is not None else {"member": member})
        sub: Subscription[Any] = Subscription(
            self.base_url,
            request,
            authorization=self.authorization,
            reconnect=reconnect or Retry(attempts=None, backoff=0.1, max_backoff=10.0),
            trust_env=self.trust_env,
            on_close=self._subscriptions.discard,
        )
        self._subscriptions.add(sub)
        return sub

    async def aclose(self) -> None:
        for sub in list(self._subscriptions):
            await sub.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @staticmethod
    def _bind(
        fn: Callable[P, Call[T]],
    ) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return await self.send(fn(*args, **kwargs))

        return method

    put_board = _bind(calls.put_board)
    get_board = _bind(calls.get_board)
    list_boards = _bind(calls.list_boards)
    drop_board = _bind(calls.drop_board)
    post_score = _bind(calls.post_score)
    post_batch = _bind(calls.post_batch)
    top = _bind(calls.top)
    member = _bind(calls.member)
    around = _bind(calls.around)
    rank_for_score = _bind(calls.rank_for_score)
    delete_member = _bind(calls.delete_member)
    create_session = _bind(calls.create_session)
    create_session_with_id = _bind(calls.create_session_with_id)
    get_session = _bind(calls.get_session)
    patch_session = _bind(calls.patch_session)
    replace_session = _bind(calls.replace_session)
    touch_session = _bind(calls.touch_session)
    rotate_session = _bind(calls.rotate_session)
    delete_session = _bind(calls.delete_session)
    user_sessions = _bind(calls.user_sessions)
    revoke_user_sessions = _bind(calls.revoke_user_sessions)
    snapshot = _bind(calls.snapshot)
    health = _bind(calls.health)
    ready = _bind(calls.ready)
