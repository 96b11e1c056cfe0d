"""README "Use it from your app": the client and game examples run as written on a real rankd.

(The FastAPI and Django blocks are the apps of test_starsessions.py and test_django.py.)
The game example needs player sessions (``Authorization: Session``, board option
``player_writes``: DESIGN "Security").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from rankd_client import Client, Forbidden

from tests.client.apps import run_block
from tests.servers import RankdServer

ADMIN = "readme-use-admin-0123456789"


class _Seen(Exception):
    """Ends the endless subscriber example after its first frame."""


@pytest.fixture(scope="module")
def rankd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RankdServer]:
    srv = RankdServer(tmp_path_factory.mktemp("readme-use"), {"api_key": [f"{ADMIN}:admin"]})
    srv.start()
    yield srv
    srv.stop()


def test_client_leaderboard_and_live_examples(rankd: RankdServer) -> None:
    printed: list[tuple[object, ...]] = []

    def fake_print(*args: object) -> None:
        printed.append(args)
        if args and args[0] == "bob":
            raise _Seen

    ns = run_block(0, rankd.url, ADMIN, print=fake_print)
    assert printed == [([(1, "ann"), (2, "bob")],)]
    with contextlib.suppress(_Seen):
        asyncio.run(asyncio.wait_for(ns["live"](), 10))
    assert printed[1] == ("bob", 2, 900)


def test_game_backend_hands_a_session_to_the_game_client(rankd: RankdServer) -> None:
    printed: list[Any] = []
    ns = run_block(3, rankd.url, ADMIN, print=printed.append)
    assert printed == [1]
    session_id = ns["session_id"]
    game = Client(rankd.url, session=session_id, trust_env=False)
    with game, pytest.raises(Forbidden):  # another member's entry
        game.post_score("arena", "p-0001", 999)
    with Client(rankd.url, api_key=ADMIN, trust_env=False) as admin:
        assert admin.get_session(session_id, touch=False)["user"] == "p-1842"
        assert [e["member"] for e in admin.top("arena")["entries"]] == ["p-1842"]
