"""The WebSocket subscriber against a real rankd: frames, reconnection after the server is
restarted (gracefully and by kill -9) on the same port, re-subscription, the epoch flag, and
the refusals that end a subscription instead of looping."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from rankd_client import (
    AsyncClient,
    BadRequest,
    Forbidden,
    Retry,
    SessionNotFound,
    SubscriptionClosed,
    TransportError,
    Unauthorized,
    Update,
)
from rankd_client.subscribe import _fatal_close
from rankd_client.types import RankFrame, TopFrame

T = TypeVar("T")
QUICK = Retry(attempts=None, backoff=0.05, max_backoff=0.3)


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), 60)

    asyncio.run(bounded())


async def until(it: Any, done: Callable[[Any], bool]) -> Any:
    """The first update ``done`` accepts (frames between are intermediate states)."""
    while True:
        update = await anext(it)
        if done(update):
            return update


def members(update: Update[TopFrame]) -> list[tuple[str, int | float]]:
    return [(e["member"], e["score"]) for e in update.frame["entries"]]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_top_subscription_survives_a_restart_and_reports_the_new_epoch(
    rankd_server: Any, name: str, sig: int
) -> None:
    srv = rankd_server(fsync="always")

    async def main() -> None:
        async with AsyncClient(srv.url, trust_env=False) as c:
            await c.post_score(name, "ann", 1)
            async with c.subscribe(name, top=3, reconnect=QUICK) as sub:
                first = await anext(sub)
                assert first.frame["type"] == "top" and first.frame["board"] == name
                assert members(first) == [("ann", 1)] and first.frame["total"] == 1
                assert not first.reconnected and not first.epoch_changed
                epoch = first.frame["epoch"]
                assert epoch == (await c.ready())["epoch"]

                await c.post_score(name, "bob", 2)
                moved = await until(sub, lambda u: len(u.frame["entries"]) == 2)
                assert members(moved) == [("bob", 2), ("ann", 1)]
                assert moved.frame["seq"] > first.frame["seq"] and not moved.reconnected

                await asyncio.to_thread(srv.restart, sig)  # same port, same data dir
                back = await anext(sub)  # the full state, re-sent on re-subscription
                assert back.reconnected and back.epoch_changed
                assert back.frame["epoch"] != epoch == moved.frame["epoch"]
                assert back.frame["epoch"] == (await c.ready())["epoch"]
                assert members(back) == [("bob", 2), ("ann", 1)]  # fsync=always kept both
                assert sub.connects == 2

                await c.post_score(name, "cy", 3)
                later = await until(sub, lambda u: len(u.frame["entries"]) == 3)
                assert members(later)[0] == ("cy", 3)
                assert not later.reconnected and not later.epoch_changed

    run(main)


def test_member_subscription_and_a_reconnect_to_the_same_process(
    rankd_server: Any, name: str
) -> None:
    """Closed by the client's side of the network (not a restart): reconnected, same epoch."""
    srv = rankd_server()

    async def main() -> None:
        async with AsyncClient(srv.url, trust_env=False) as c:
            sub = c.subscribe(name, member="ann", reconnect=QUICK)
            first: Update[RankFrame] = await anext(sub)
            assert first.frame["type"] == "rank" and first.frame["member"] == "ann"
            assert first.frame["rank"] is None and first.frame["score"] is None  # not there yet
            await c.post_score(name, "ann", 5)
            await c.post_score(name, "bob", 9)
            ranked = await until(sub, lambda u: u.frame["rank"] == 2)
            assert ranked.frame["score"] == 5

            assert sub._ws is not None
            sub._ws.transport.abort()  # the connection dies under the subscriber
            again = await anext(sub)
            assert again.reconnected and not again.epoch_changed
            assert (again.frame["rank"], again.frame["score"]) == (2, 5)
        # AsyncClient.aclose() ended the subscription with it.
        with pytest.raises(StopAsyncIteration):
            await anext(sub)

    run(main)


def test_the_subscriber_waits_for_a_server_that_is_not_up_yet(rankd_server: Any) -> None:
    srv = rankd_server()
    srv.stop()

    async def main() -> None:
        async with AsyncClient(srv.url, trust_env=False) as c:
            quick_fail = c.subscribe("b", top=1, reconnect=Retry(attempts=3, backoff=0.01))
            with pytest.raises(TransportError, match="after 3 attempts"):
                await anext(quick_fail)
            sub = c.subscribe("b", top=1, reconnect=QUICK)
            starting = asyncio.create_task(asyncio.to_thread(srv.start))
            update = await anext(sub)
            await starting
            assert update.frame["entries"] == [] and not update.reconnected

    run(main)


def test_a_server_that_accepts_and_closes_is_backed_off_from(rankd_server: Any) -> None:
    """rankd at its WebSocket limit accepts, then closes with 1013: that counts as a failed
    attempt (with backoff), never a tight reconnect loop."""
    srv = rankd_server(ws_connections=1)

    async def main() -> None:
        async with AsyncClient(srv.url, trust_env=False) as c:
            holder = c.subscribe("b", top=1)
            await anext(holder)  # the one connection allowed
            policy = Retry(attempts=4, backoff=0.1, max_backoff=0.1)
            refused = c.subscribe("b", top=1, reconnect=policy)
            began = asyncio.get_running_loop().time()
            with pytest.raises(TransportError, match="after 4 attempts"):
                await anext(refused)
            assert asyncio.get_running_loop().time() - began >= 3 * 0.05  # 3 pauses taken

    run(main)


def test_refusals_end_the_subscription(keyed: Any, keys: dict[str, str]) -> None:
    async def main() -> None:
        async with AsyncClient(keyed.url, trust_env=False) as anonymous:
            with pytest.raises(Unauthorized):  # closed 1008 "unauthorized": no reconnect loop
                await anext(anonymous.subscribe("b", top=1, reconnect=QUICK))
        async with AsyncClient(keyed.url, api_key=keys["write"], trust_env=False) as writer:
            with pytest.raises(Forbidden):  # an error frame, status 403: no 'read' scope
                await anext(writer.subscribe("b", top=1, reconnect=QUICK))
        async with AsyncClient(keyed.url, api_key=keys["read"], trust_env=False) as reader:
            with pytest.raises(BadRequest, match="board name"):
                await anext(reader.subscribe("no spaces", top=1))
            with pytest.raises(BadRequest, match="top"):
                await anext(reader.subscribe("b", top=1000))
            with pytest.raises(ValueError, match="exactly one"):
                reader.subscribe("b")  # type: ignore[call-overload]

    run(main)


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (1001, "server shutting down", None),
        (1006, "", None),
        (1011, "internal error", None),
        (1013, "not ready: recovery in progress", None),
        (1008, "client not reading", None),
        (1008, "unauthorized: send a valid key as Bearer or ?token=", Unauthorized),
        (1008, "session expired", SessionNotFound),
        (1008, "the 'sessions' scope is needed to bind ?session=", Forbidden),
        (1008, "binary frames are not supported", SubscriptionClosed),
        (1009, "", SubscriptionClosed),
    ],
)
def test_which_closes_reconnect(code: int, reason: str, expected: type | None) -> None:
    """The close codes and reasons rankd sends (service/ws.py): reconnect, or raise what."""
    fatal = _fatal_close(code, reason)
    assert (None if fatal is None else type(fatal)) is expected
